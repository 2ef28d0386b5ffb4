"""EPIC Fields: COLMAP reconstructions of EPIC-KITCHENS-100 videos, one JSON file per video.

The release (epic-kitchens.github.io/epic-fields; format in github.com/epic-kitchens/epic-fields-code)
ships ``<video>.json``::

    {"camera": {"id": 1, "model": "OPENCV", "width": 456, "height": 256,
                "params": [fx, fy, cx, cy, k1, k2, p1, p2]},
     "images": {"frame_0000000001.jpg": [qw, qx, qy, qz, tx, ty, tz], ...},
     "points": [[x, y, z, r, g, b], ...]}

``images`` holds COLMAP world-to-camera poses (quaternion, scalar first, and translation; OpenCV
camera axes), keyed by the EPIC-KITCHENS-100 frame file name. Early releases stored a list of
``[qw, qx, qy, qz, tx, ty, tz, frame_name]`` rows instead; both are read. The frames themselves are
not in the JSON: they are the EK-100 ``rgb_frames`` of the video (456x256 JPEGs).

Layout read here (``--scene`` names the folder)::

    EPIC-Fields/P01_01/
        P01_01.json          the release's JSON (named after the folder; a lone *.json also works)
        frames/              the video's EK-100 RGB frames: frame_0000000001.jpg ... (a symlink to
                             .../rgb_frames/P01/P01_01 works)

Only the frames the JSON names are used, in frame-name order; every 8th is a test frame (the
release has no split). Frame sizes come from the JSON's camera: one image header is opened (to
check that the frames match the camera's aspect ratio) and no pixels are read, so a video of
thousands of frames loads without decoding an image (tests/scene/test_epic.py: 1,200 frames).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n3f.errors import SceneError
from n3f.io import atomic_write_json
from n3f.scene.formats.common import (
    check_intrinsics,
    load_json,
    place_images,
    pose_from_rt,
    qvec_from_rotation,
    require,
    rotation_from_qvec,
)
from n3f.scene.images import read_image_size
from n3f.scene.normalise import holdout_every, normalise_scene
from n3f.scene.types import Frame, Scene

FRAMES_DIR = "frames"
# COLMAP's numeric camera model ids, for JSON files that store the id instead of the name
COLMAP_MODEL_IDS = {0: "SIMPLE_PINHOLE", 1: "PINHOLE", 2: "SIMPLE_RADIAL", 3: "RADIAL", 4: "OPENCV"}
# names of other formats' JSON files: never taken for an EPIC Fields file
OTHER_JSON = {"meta.json", "scene.json", "transforms.json", "transforms_train.json", "transforms_val.json", "transforms_test.json"}


def find_epic_fields_json(folder: Path) -> Path | None:
    """The EPIC Fields JSON of a scene folder: ``<folder name>.json``, else the folder's only
    ``*.json`` file (other formats' files excepted); None when there is neither."""
    folder = Path(folder)
    named = folder / f"{folder.name}.json"
    if named.is_file():
        return named
    candidates = [p for p in folder.glob("*.json") if p.is_file() and p.name not in OTHER_JSON and not p.name.startswith(".")]
    return candidates[0] if len(candidates) == 1 else None


def _camera(doc: dict, path: Path):
    """(K (3, 3), distortion or None, width, height) from the JSON's ``camera`` entry."""
    from n3f.scene.formats.colmap import intrinsics_from_colmap

    camera = require(doc, "camera", path)
    if not isinstance(camera, dict):
        raise SceneError(f"{path}: 'camera' must be an object with model, width, height and params")
    model = require(camera, "model", path)
    model = COLMAP_MODEL_IDS.get(model, model) if isinstance(model, int) else str(model)
    try:
        width, height = int(require(camera, "width", path)), int(require(camera, "height", path))
        params = np.asarray(require(camera, "params", path), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise SceneError(f"{path}: camera width, height and params must be numbers") from exc
    if width <= 0 or height <= 0:
        raise SceneError(f"{path}: camera size {width}x{height} is not positive")
    expected = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8}
    if model in expected and len(params) != expected[model]:
        raise SceneError(f"{path}: camera model {model} takes {expected[model]} params, the file has {len(params)}")
    if not np.isfinite(params).all():
        raise SceneError(f"{path}: camera params contain NaN or infinite values")
    try:
        K, distortion = intrinsics_from_colmap(model, params)
    except SceneError as exc:
        raise SceneError(f"{path}: {exc}") from exc
    check_intrinsics(K, "camera", path)
    if distortion is not None and distortion.is_identity():
        distortion = None
    return K, distortion, width, height


def _poses(doc: dict, path: Path) -> dict[str, list]:
    """``{frame name: [qw, qx, qy, qz, tx, ty, tz]}`` from either layout of ``images``."""
    images = require(doc, "images", path)
    if isinstance(images, dict):
        poses = {str(k): v for k, v in images.items()}
    elif isinstance(images, list):
        poses = {}
        for row in images:
            if not isinstance(row, list) or len(row) != 8 or not isinstance(row[7], str):
                raise SceneError(f"{path}: each 'images' row must be [qw, qx, qy, qz, tx, ty, tz, frame_name]")
            poses[row[7]] = row[:7]
    else:
        raise SceneError(f"{path}: 'images' must map frame names to [qw, qx, qy, qz, tx, ty, tz]")
    if not poses:
        raise SceneError(f"{path}: 'images' is empty: the reconstruction registered no frames")
    return poses


def _points(doc: dict, path: Path) -> np.ndarray | None:
    rows = doc.get("points")
    if not rows:
        return None
    try:
        points = np.asarray([row[:3] for row in rows], dtype=np.float64)
    except (TypeError, ValueError, IndexError) as exc:
        raise SceneError(f"{path}: 'points' must be rows of [x, y, z, r, g, b]") from exc
    points = points[np.isfinite(points).all(axis=1)]
    return points if len(points) else None


def read_epic_fields(folder: Path, name: str | None = None, holdout: int = 8) -> Scene:
    """Read an EPIC Fields scene folder (see the module docstring) and normalise it.

    Args:
        folder: the scene folder holding the JSON and ``frames/``.
        name: the scene's name (default: the folder's name).
        holdout: every n-th frame (in frame-name order) is a test frame; 0 for none.

    Returns:
        A normalised Scene: frames in frame-name order with the JSON's one camera (K in pixels at
        the camera's width x height, OPENCV distortion kept unless all zero), OpenCV c2w, the
        sparse points (normalised) and ``contraction="sphere"``.

    Raises:
        SceneError: no JSON, a malformed one (the message names the file and the entry), or frames
            it names that are not in ``frames/``.
    """
    folder = Path(folder)
    path = find_epic_fields_json(folder)
    if path is None:
        raise SceneError(
            f"no EPIC Fields JSON in {folder}: expected {folder / (folder.name + '.json')} (the release's <video>.json) beside frames/"
        )
    doc = load_json(path)
    K, distortion, width, height = _camera(doc, path)
    poses = _poses(doc, path)
    frame_dir = folder / FRAMES_DIR
    if not frame_dir.is_dir():
        raise SceneError(
            f"{frame_dir} does not exist: put the video's EPIC-KITCHENS-100 RGB frames (frame_0000000001.jpg ...) there, "
            f"e.g. `mkdir {frame_dir} && tar -xf P01_01.tar -C {frame_dir}` or a symlink to rgb_frames/P01/P01_01"
        )
    names = sorted(poses)
    missing = [n for n in names if not (frame_dir / n).is_file()]
    if missing:
        raise SceneError(
            f"{path} names {len(missing)} of its {len(names)} frames that are absent from {frame_dir}, e.g. {missing[:3]}. "
            "Extract all of the video's RGB frames there."
        )
    first_w, first_h = read_image_size(frame_dir / names[0])
    if abs(first_w / first_h - width / height) > 0.01 * width / height:
        raise SceneError(
            f"{frame_dir / names[0]} is {first_w}x{first_h} but {path} calibrates a {width}x{height} camera; "
            "these frames are not the ones the reconstruction was made from"
        )
    splits = holdout_every(len(names), holdout)
    frames = []
    for frame_name, split in zip(names, splits):
        values = poses[frame_name]
        if not isinstance(values, list | tuple) or len(values) != 7:
            raise SceneError(f"{path}: the pose of {frame_name} must be [qw, qx, qy, qz, tx, ty, tz]")
        what = f"the pose of {frame_name}"
        R = rotation_from_qvec(values[:4], what, path)
        try:
            t = np.asarray(values[4:], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SceneError(f"{path}: {what} is not numeric") from exc
        if not np.isfinite(t).all():
            raise SceneError(f"{path}: {what} contains NaN or infinite values")
        w2c = pose_from_rt(R, t)
        frames.append(
            Frame(
                image_path=frame_dir / frame_name,
                K=K,
                c2w=np.linalg.inv(w2c),
                width=width,
                height=height,
                split=split,
                distortion=distortion,
                frame_id=frame_name,
            )
        )
    scene = Scene(
        frames=frames,
        points=_points(doc, path),
        name=name or folder.name,
        source=folder,
        format="epic_fields",
        contraction="sphere",
        metadata={"json": str(path)},
    )
    return normalise_scene(scene)


def write_epic_fields(scene: Scene, folder: Path, images: str = "link", video: str | None = None) -> Path:
    """Write ``scene`` as an EPIC Fields folder: ``<video>.json`` (original world) and ``frames/``.

    Frames are named ``frame_<index + 1:010d><suffix>`` as in EPIC-KITCHENS-100; the camera is
    OPENCV (zero distortion for pinhole frames). All frames must share one camera and size.

    Args:
        scene: the scene; poses are mapped back through ``scene.normalisation``.
        folder: output scene folder.
        images: ``link``, ``copy`` or ``none`` (see :func:`place_images`).
        video: the JSON's stem (default: the folder's name, which the reader looks for).

    Returns:
        The JSON path.

    Raises:
        SceneError: frames with different intrinsics, sizes or distortion.
    """
    folder = Path(folder)
    f0 = scene.frames[0]
    for f in scene.frames:
        if not np.allclose(f.K, f0.K) or (f.width, f.height) != (f0.width, f0.height) or f.distortion != f0.distortion:
            raise SceneError("EPIC Fields stores one camera; this scene's frames differ in intrinsics, size or distortion")
    # every distortion model the toolkit knows is a special case of OPENCV (k1, k2, p1, p2)
    coefficients = [0.0] * 4 if f0.distortion is None else f0.distortion.opencv_coefficients().tolist()
    names = [f"frame_{i + 1:010d}{Path(f.image_path).suffix}" for i, f in enumerate(scene.frames)]
    posed = {}
    for frame_name, f in zip(names, scene.frames):
        w2c = np.linalg.inv(scene.original_c2w(f))
        posed[frame_name] = [*qvec_from_rotation(w2c[:3, :3]).tolist(), *w2c[:3, 3].tolist()]
    K = f0.K
    doc = {
        "camera": {
            "id": 1,
            "model": "OPENCV",
            "width": f0.width,
            "height": f0.height,
            "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2], *coefficients],
        },
        "images": posed,
        "points": [] if scene.points is None else [[*p, 128, 128, 128] for p in scene.to_original(scene.points).tolist()],
    }
    path = folder / f"{video or folder.name}.json"
    atomic_write_json(path, doc)
    place_images(scene.frames, folder / FRAMES_DIR, images, names)
    return path
