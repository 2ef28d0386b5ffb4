"""EPIC-KITCHENS readers: EPIC-Diff (NeuralDiff's layout, with annotations) and EPIC Fields
(COLMAP poses in one JSON per video). Axis conventions against hand-written files and the demo's
exact cameras, splits, annotations, bad files, and streaming: loading 1,200 frames reads no pixels."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from n3f.errors import SceneError
from n3f.scene.catalog import load_scene
from n3f.scene.formats.common import qvec_from_rotation, rotation_from_qvec
from n3f.scene.formats.detect import detect_format, read_scene_folder
from n3f.scene.formats.epic_diff import FOREGROUND, epic_diff_split
from n3f.scene.formats.epic_fields import write_epic_fields
from n3f.scene.images import load_frame_mask
from n3f.scene.normalise import downscale_scene

RUB_TO_RDF = np.diag([1.0, -1.0, -1.0])  # right-up-back camera axes to OpenCV's right-down-forward


def _png(path, width=8, height=6, value=90):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)
    return path


def _rot_y(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


# ---------------------------------------------------------------- EPIC-Diff


def _neuraldiff_meta(folder, poses, ids, K, width=8, height=6):
    """A meta.json as NeuralDiff's colmap_converter writes it (extra keys included)."""
    names = {i: f"IMG_{i:010d}.bmp" for i in ids}
    for name in names.values():
        _png(folder / "frames" / name, width, height)
    train, val, test = epic_diff_split(ids)
    doc = {
        "ids_all": ids,
        "ids_train": train,
        "ids_val": val,
        "ids_test": test,
        "images": {str(i): names[i] for i in ids},
        "poses": {str(i): p[:3].tolist() for i, p in zip(ids, poses)},
        "nears": {str(i): 0.5 for i in ids},
        "fars": {str(i): 10.0 for i in ids},
        "intrinsics": K.tolist(),
        "camera": {"model": "SIMPLE_RADIAL", "width": width, "height": height, "params": [K[0, 0], K[0, 2], K[1, 2], 0.0]},
        "image_w": width,
        "image_h": height,
    }
    (folder / "meta.json").write_text(json.dumps(doc))
    return names


def test_epic_diff_right_up_back_poses_become_opencv(tmp_path):
    """Hand-written NeuralDiff poses (no writer involved): a camera whose pose is the identity in
    right-up-back axes looks down world -z with world +y up in the image."""
    K = np.array([[10.0, 0, 4.0], [0, 10.0, 3.0], [0, 0, 1]])
    ids = [200 + 50 * k for k in range(17)]  # NeuralDiff's ids are frame numbers, not indices
    poses = []
    for k in range(len(ids)):
        pose = np.eye(4)
        pose[:3, :3] = _rot_y(5.0 * k)
        pose[:3, 3] = [0.1 * k, 0.0, 0.0]
        poses.append(pose)
    _neuraldiff_meta(tmp_path, poses, ids, K)
    scene = read_scene_folder(tmp_path)
    assert scene.format == "epic_diff" and [f.frame_id for f in scene.frames] == ids
    for f, pose in zip(scene.frames, poses):
        c2w = scene.original_c2w(f)
        np.testing.assert_allclose(c2w[:3, :3], pose[:3, :3] @ RUB_TO_RDF, atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 3], pose[:3, 3], atol=1e-12)
    f0 = scene.frames[0]
    # world point 5 in front (-z) and 1 up (+y) of camera 0: centred horizontally, above the centre
    px, depth = f0.project(scene.to_normalised(np.array([[0.0, 1.0, -5.0]])))
    np.testing.assert_allclose(px[0], [4.0, 3.0 - 10.0 * 1.0 / 5.0], atol=1e-9)
    assert depth[0] > 0
    # NeuralDiff's split rule over the ids: of ids[::8], alternate ones are test and val
    assert [f.frame_id for f in scene.frames if f.split == "test"] == [200, 1000]
    assert [f.frame_id for f in scene.frames if f.split == "val"] == [600]
    assert not scene.objects and all(f.mask_path is None for f in scene.frames)


def test_epic_diff_fixture_matches_the_demo(epic_diff_dir, demo_scene):
    """The demo in NeuralDiff's exact layout: the writer's right-up-back poses, the reader's exact
    cameras, NeuralDiff's splits and the annotations of the test frames."""
    truth = downscale_scene(demo_scene, 8)
    meta = json.loads((epic_diff_dir / "meta.json").read_text())
    ids = meta["ids_all"]
    assert ids == list(range(96))
    assert (meta["ids_train"], meta["ids_val"], meta["ids_test"]) == epic_diff_split(ids)
    assert meta["ids_test"] == [0, 16, 32, 48, 64, 80] and meta["ids_val"] == [8, 24, 40, 56, 72, 88]
    np.testing.assert_allclose(meta["intrinsics"], truth.frames[0].K, atol=1e-12)
    for i in (0, 17, 95):  # the file holds right-up-back camera-to-world poses of the original world
        c2w = truth.original_c2w(truth.frames[i])
        pose = np.asarray(meta["poses"][str(i)])
        np.testing.assert_allclose(pose[:, :3], c2w[:3, :3] @ RUB_TO_RDF, atol=1e-12)
        np.testing.assert_allclose(pose[:, 3], c2w[:3, 3], atol=1e-12)
    annotated = sorted(p.name for p in (epic_diff_dir / "annotations").iterdir())
    assert annotated == [meta["images"][str(i)] for i in meta["ids_test"]]

    scene = load_scene(str(epic_diff_dir))
    assert detect_format(epic_diff_dir) == "epic_diff" and len(scene) == 96
    assert [(f.width, f.height) for f in scene.frames] == [(32, 24)] * 96
    for f, t in zip(scene.frames, truth.frames):  # the demo's exact cameras, in its original world
        np.testing.assert_allclose(scene.original_c2w(f), truth.original_c2w(t), atol=1e-12)
        np.testing.assert_allclose(f.K, t.K, atol=1e-12)
    centres = np.array([np.mean(o["box"], axis=0) for o in demo_scene.objects])
    for f, t in zip(scene.frames, truth.frames):
        np.testing.assert_allclose(f.project(scene.to_normalised(centres))[0], t.project(truth.to_normalised(centres))[0], atol=1e-6)
    assert scene.split_indices("test") == meta["ids_test"] and scene.split_indices("val") == meta["ids_val"]
    # annotations: test frames only, one "foreground" object, read as 0/1
    assert scene.objects == [FOREGROUND] and scene.metadata["mask_kind"] == "foreground"
    assert [i for i, f in enumerate(scene.frames) if f.mask_path is not None] == meta["ids_test"]
    for i in meta["ids_test"][:-1]:
        mask = load_frame_mask(scene.frames[i], foreground=True)
        np.testing.assert_array_equal(mask, (load_frame_mask(truth.frames[i]) > 0).astype(np.int32))
    assert not load_frame_mask(scene.frames[80], foreground=True).any()  # the empty annotation


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "1"])
def test_foreground_masks_read_as_neuraldiff_reads_them(tmp_path, mode):
    """0/1 greyscale, palette, colour (0/255) and 1-bit annotations all give the same 0/1 mask."""
    from PIL import Image

    from n3f.scene.types import Frame

    truth = np.zeros((6, 8), np.uint8)
    truth[2:4, 3:7] = 1
    if mode == "L":
        im = Image.fromarray(truth)
    elif mode == "P":
        im = Image.fromarray(truth).convert("P")
        im.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    elif mode == "RGB":
        im = Image.fromarray(np.stack([truth * 255, 0 * truth, 0 * truth], -1))
    else:
        im = Image.fromarray(truth * 255).convert("1")
    im.save(tmp_path / "m.png")
    frame = Frame(tmp_path / "x.png", np.eye(3), np.eye(4), 8, 6, mask_path=tmp_path / "m.png")
    np.testing.assert_array_equal(load_frame_mask(frame, foreground=True), truth)


def test_unreadable_annotation_names_the_file(epic_diff_dir, tmp_path):
    import shutil

    from n3f.errors import ImageReadError

    folder = tmp_path / "P00_00"
    shutil.copytree(epic_diff_dir, folder)
    (folder / "annotations" / "IMG_0000000016.png").write_bytes(b"\x89PNG truncated")
    scene = read_scene_folder(folder)  # loading reads no pixels, so it succeeds
    with pytest.raises(ImageReadError, match="IMG_0000000016.png"):
        load_frame_mask(scene.frames[16], foreground=True)


# ---------------------------------------------------------------- EPIC Fields


def _fields_folder(tmp_path, images, camera=None, name="P01_01", frames=True, points=None):
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "camera": camera or {"id": 1, "model": "OPENCV", "width": 8, "height": 6, "params": [10.0, 11.0, 4.0, 3.0, 0.0, 0.0, 0.0, 0.0]},
        "images": images,
        "points": points if points is not None else [[0.0, 0.0, 0.0, 255, 0, 0], [1.0, 1.0, 1.0, 0, 255, 0]],
    }
    (folder / f"{name}.json").write_text(json.dumps(doc))
    if frames:
        names = images.keys() if isinstance(images, dict) else [row[7] for row in images]
        for n in names:
            _png(folder / "frames" / n)
    return folder


def _poses(n=10):
    """World-to-camera quaternions and translations of ``n`` cameras: yaw k*7 deg, shifted in x."""
    rows = {}
    for k in range(n):
        R = _rot_y(7.0 * k)
        t = np.array([0.2 * k, -0.1, 4.0])
        rows[f"frame_{100 + 5 * k:010d}.jpg"] = [*qvec_from_rotation(R), *t]
    return rows


def test_epic_fields_poses_are_colmap_world_to_camera(tmp_path):
    """Hand-written file: x_cam = R(q) X + t (COLMAP's convention, as the release documents), then
    pinhole projection with fx, fy, cx, cy."""
    poses = _poses()
    scene = read_scene_folder(_fields_folder(tmp_path, poses))
    assert scene.format == "epic_fields" and len(scene) == 10
    assert [f.name for f in scene.frames] == sorted(poses)
    assert [f.split for f in scene.frames] == ["test"] + ["train"] * 7 + ["test", "train"]
    assert scene.contraction == "sphere" and scene.points is not None and len(scene.points) == 2
    X = np.array([[0.3, -0.2, 1.0], [-0.5, 0.4, 0.5]])
    for f in scene.frames:
        q, t = np.asarray(poses[f.name][:4]), np.asarray(poses[f.name][4:])
        cam = X @ rotation_from_qvec(q, "q", "test").T + t
        expected = np.stack([10.0 * cam[:, 0] / cam[:, 2] + 4.0, 11.0 * cam[:, 1] / cam[:, 2] + 3.0], 1)
        px, depth = f.project(scene.to_normalised(X))
        np.testing.assert_allclose(px, expected, atol=1e-9)
        np.testing.assert_allclose(depth / scene.scale, cam[:, 2], rtol=1e-9)
        assert f.distortion is None  # all-zero OPENCV coefficients are a pinhole camera
    # the early releases' list of [qw, qx, qy, qz, tx, ty, tz, frame_name] rows reads the same
    rows = [[*v, k] for k, v in poses.items()]
    listed = read_scene_folder(_fields_folder(tmp_path / "list", rows))
    for a, b in zip(scene.frames, listed.frames):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-12)


def test_epic_fields_distortion_and_numeric_model(tmp_path):
    camera = {"id": 1, "model": 4, "width": 8, "height": 6, "params": [10.0, 11.0, 4.0, 3.0, -0.05, 0.01, 0.001, -0.002]}
    scene = read_scene_folder(_fields_folder(tmp_path, _poses(3), camera=camera))
    assert {(f.distortion.model, f.distortion.params) for f in scene.frames} == {("OPENCV", (-0.05, 0.01, 0.001, -0.002))}


def test_epic_fields_writer_round_trips_distortion(demo_scene, tmp_path):
    from n3f.scene.types import Distortion

    frames = [
        __import__("dataclasses").replace(f, distortion=Distortion("OPENCV", (0.01, -0.002, 0.0005, 0.0003))) for f in demo_scene.frames[:9]
    ]
    write_epic_fields(demo_scene.replace(frames=frames), tmp_path / "P02_02")
    back = read_scene_folder(tmp_path / "P02_02")
    assert [f.distortion for f in back.frames] == [f.distortion for f in frames]
    assert [f.name for f in back.frames] == [f"frame_{i:010d}.png" for i in range(1, 10)]


def test_epic_fields_detection(tmp_path):
    folder = _fields_folder(tmp_path, _poses(2), name="P09_02")
    assert detect_format(folder) == "epic_fields"
    os.rename(folder / "P09_02.json", folder / "reconstruction.json")  # a lone JSON of another name
    assert detect_format(folder) == "epic_fields"
    (folder / "notes.json").write_text("{}")  # two candidates: not guessed
    with pytest.raises(SceneError, match="cannot tell the format"):
        detect_format(folder)


def _break(doc, how):
    first = next(iter(doc["images"]))
    if how == "no_camera":
        del doc["camera"]
    elif how == "bad_model":
        doc["camera"]["model"] = "FISHEYE"
    elif how == "param_count":
        doc["camera"]["params"] = [10.0, 11.0, 4.0]
    elif how == "zero_focal":
        doc["camera"]["params"][0] = 0.0
    elif how == "no_images":
        doc["images"] = {}
    elif how == "zero_quaternion":
        doc["images"][first][:4] = [0, 0, 0, 0]
    elif how == "short_pose":
        doc["images"][first] = doc["images"][first][:6]
    elif how == "nan_translation":
        doc["images"][first][5] = float("nan")
    elif how == "bad_points":
        doc["points"] = [["a", "b"]]
    return doc


@pytest.mark.parametrize(
    "how, message",
    [
        ("no_camera", "no 'camera' entry"),
        ("bad_model", "FISHEYE is not supported"),
        ("param_count", "OPENCV takes 8 params"),
        ("zero_focal", "focal length"),
        ("no_images", "registered no frames"),
        ("zero_quaternion", "zero-length quaternion"),
        ("short_pose", "must be [qw, qx, qy, qz, tx, ty, tz]"),
        ("nan_translation", "NaN"),
        ("bad_points", "'points' must be rows"),
    ],
)
def test_epic_fields_bad_files_name_the_file_and_problem(tmp_path, how, message):
    folder = _fields_folder(tmp_path, _poses(3))
    path = folder / "P01_01.json"
    path.write_text(json.dumps(_break(json.loads(path.read_text()), how)))
    with pytest.raises(SceneError) as err:
        read_scene_folder(folder)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_epic_fields_missing_and_mismatched_frames(tmp_path):
    folder = _fields_folder(tmp_path, _poses(4))
    (folder / "P01_01.json").write_text("{not json")
    with pytest.raises(SceneError, match="P01_01.json is not valid JSON"):
        read_scene_folder(folder, format="epic_fields")
    folder = _fields_folder(tmp_path / "a", _poses(4))
    os.unlink(folder / "frames" / "frame_0000000105.jpg")
    with pytest.raises(SceneError, match=r"names 1 of its 4 frames that are absent .*frame_0000000105.jpg"):
        read_scene_folder(folder)
    folder = _fields_folder(tmp_path / "b", _poses(4), frames=False)
    with pytest.raises(SceneError, match="RGB frames"):
        read_scene_folder(folder)
    folder = _fields_folder(tmp_path / "c", _poses(2))
    for n in _poses(2):
        _png(folder / "frames" / n, width=6, height=6)
    with pytest.raises(SceneError, match="not the ones the reconstruction was made from"):
        read_scene_folder(folder)


# ---------------------------------------------------------------- streaming

N_LONG = 1200


def _long_epic_diff(folder, image):
    ids = list(range(0, 50 * N_LONG, 50))
    (folder / "frames").mkdir(parents=True)
    (folder / "annotations").mkdir()
    mask = _png(folder.parent / "mask.png", 228, 128, value=1)
    rng = np.random.default_rng(0)
    names, poses = {}, {}
    for i in ids:
        names[str(i)] = f"IMG_{i:010d}.png"
        os.symlink(image, folder / "frames" / names[str(i)])
        pose = np.eye(4)[:3]
        pose[:, :3] = _rot_y(rng.uniform(-180, 180))
        pose[:, 3] = rng.normal(size=3)
        poses[str(i)] = pose.tolist()
    train, val, test = epic_diff_split(ids)
    for i in test:
        os.symlink(mask, folder / "annotations" / names[str(i)])
    doc = {
        "ids_all": ids,
        "ids_train": train,
        "ids_val": val,
        "ids_test": test,
        "images": names,
        "poses": poses,
        "nears": {str(i): 0.1 for i in ids},
        "fars": {str(i): 5.0 for i in ids},
        "intrinsics": [[200.0, 0, 114.0], [0, 200.0, 64.0], [0, 0, 1]],
    }
    (folder / "meta.json").write_text(json.dumps(doc))


def _long_epic_fields(folder, image):
    (folder / "frames").mkdir(parents=True)
    rng = np.random.default_rng(1)
    posed = {}
    for k in range(N_LONG):
        name = f"frame_{k + 1:010d}.jpg"
        os.symlink(image, folder / "frames" / name)
        posed[name] = [*qvec_from_rotation(_rot_y(rng.uniform(-180, 180))), *rng.normal(size=3)]
    points = rng.normal(size=(5000, 3)).tolist()
    doc = {
        "camera": {"id": 1, "model": "OPENCV", "width": 228, "height": 128, "params": [200.0, 200.0, 114.0, 64.0, 0.01, 0, 0, 0]},
        "images": posed,
        "points": [[*p, 0, 0, 0] for p in points],
    }
    (folder / f"{folder.name}.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("fmt", ["epic_diff", "epic_fields"])
def test_loading_1200_frames_reads_no_pixels(tmp_path, monkeypatch, fmt):
    """A 1,200-frame video (228x128 frames, EPIC-Diff's size; all links to one image) loads with one
    image header opened, no image or mask decoded, and a small peak of traced memory (holding
    the frames' pixels would take 105 MB as uint8, 420 MB as float32)."""
    import tracemalloc

    import cv2
    from PIL import Image, ImageFile

    rng = np.random.default_rng(2)
    image = tmp_path / "one.png"
    Image.fromarray(rng.integers(0, 255, (128, 228, 3), dtype=np.uint8)).save(image)
    folder = tmp_path / "P01_01"
    (_long_epic_diff if fmt == "epic_diff" else _long_epic_fields)(folder, image)

    counts = {"open": 0, "decode": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(Image, "open", counting("open", Image.open))
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting("decode", ImageFile.ImageFile.load))
    monkeypatch.setattr(Image.Image, "load", counting("decode", Image.Image.load))
    for fn in ("imread", "imdecode"):
        monkeypatch.setattr(cv2, fn, counting("decode", getattr(cv2, fn)))

    tracemalloc.start()
    try:
        scene = load_scene(str(folder))
        half = load_scene(str(folder), downscale=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(scene) == len(half) == N_LONG and scene.format == fmt
    assert (half.frames[0].width, half.frames[0].height) == (114, 64)
    assert counts == {"open": 2, "decode": 0}, counts  # one header per load_scene, no pixels
    print(f"{fmt}: {N_LONG} frames, traced peak {peak / 2**20:.1f} MiB, {counts}")
    assert peak < 48 * 2**20
    # the reading really is lazy: the pixels arrive when a stage asks for them
    from n3f.scene.images import load_frame_image

    assert load_frame_image(scene.frames[5]).shape == (128, 228, 3) and counts["decode"] >= 1
    if fmt == "epic_diff":
        assert scene.objects == [FOREGROUND] and sum(f.mask_path is not None for f in scene.frames) == 75
