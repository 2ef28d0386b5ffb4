"""nerfstudio / Blender / instant-ngp ``transforms.json``.

``transform_matrix`` is camera-to-world in OpenGL axes (x right, y up, z back); it becomes OpenCV
here. Intrinsics come from ``fl_x, fl_y, cx, cy, w, h`` (and ``k1, k2, p1, p2``), per frame or at the
top level, or from Blender's ``camera_angle_x``. Splits: nerfstudio's ``train_filenames`` /
``val_filenames`` / ``test_filenames``; Blender's ``transforms_{train,val,test}.json``; otherwise
every 8th frame is held out.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from n3f.errors import SceneError
from n3f.io import atomic_write_json
from n3f.scene.formats.common import (
    OPENGL_TO_OPENCV,
    as_matrix,
    as_number,
    as_size,
    check_intrinsics,
    check_rotation,
    load_json,
    place_images,
    require,
)
from n3f.scene.images import IMAGE_SUFFIXES, read_image_size
from n3f.scene.normalise import holdout_every, normalise_scene
from n3f.scene.types import Distortion, Frame, Scene

BLENDER_SPLITS = ("train", "val", "test")


def _resolve_image(folder: Path, file_path: str, path: Path) -> Path:
    image = folder / file_path
    if image.is_file():
        return image
    for suffix in IMAGE_SUFFIXES:  # Blender's file_path has no extension
        if image.with_name(image.name + suffix).is_file():
            return image.with_name(image.name + suffix)
    raise SceneError(f"{path} names image {file_path!r}, which is not in {folder}")


def _frame_from_entry(folder: Path, entry: dict, top: dict, path: Path, index: int, split: str) -> Frame:
    where = f"frame {index}"
    if not isinstance(entry, dict):
        raise SceneError(f"{path}: {where} is not an object")
    image = _resolve_image(folder, str(require(entry, "file_path", path)), path)

    def get(key, default=None):
        return entry.get(key, top.get(key, default))

    c2w_gl = as_matrix(require(entry, "transform_matrix", path), (4, 4), f"{where} transform_matrix", path)
    check_rotation(c2w_gl[:3, :3], f"{where} transform_matrix rotation", path)
    width, height = get("w"), get("h")
    if width is None or height is None:
        width, height = read_image_size(image)
    width, height = as_size(width, f"{where} w", path), as_size(height, f"{where} h", path)

    def number(key, default=None):
        value = get(key, default)
        return as_number(value, f"{where} {key}", path)

    def focal(angle_key, size):
        angle = number(angle_key)
        if not 0 < angle < math.pi:
            raise SceneError(f"{path}: {where} {angle_key} is {angle}; a field of view must lie in (0, pi) radians")
        return 0.5 * size / math.tan(0.5 * angle)

    if get("fl_x") is not None:
        fx = number("fl_x")
        fy = number("fl_y", fx)
    elif get("camera_angle_x") is not None:
        fx = focal("camera_angle_x", width)
        fy = focal("camera_angle_y", height) if get("camera_angle_y") is not None else fx
    else:
        raise SceneError(f"{path}: {where} has no focal length (fl_x or camera_angle_x)")
    K = np.array([[fx, 0, number("cx", width / 2)], [0, fy, number("cy", height / 2)], [0, 0, 1.0]])
    check_intrinsics(K, f"{where} intrinsics", path)
    model = get("camera_model", "OPENCV")
    if model != "OPENCV":
        raise SceneError(f"{path}: camera_model {model!r} is not supported; use OPENCV (pinhole with k1, k2, p1, p2)")
    if any(number(k, 0.0) != 0.0 for k in ("k3", "k4")):
        raise SceneError(f"{path}: {where} uses k3/k4 distortion, which n3f does not undo; undistort the images first")
    coeffs = tuple(number(k, 0.0) for k in ("k1", "k2", "p1", "p2"))
    distortion = Distortion("OPENCV", coeffs) if any(coeffs) else None
    mask = entry.get("mask_path")
    return Frame(
        image, K, c2w_gl @ OPENGL_TO_OPENCV, width, height, split, distortion, mask_path=folder / mask if mask else None, frame_id=index
    )


def _filenames(doc: dict, split: str, path: Path) -> set[str]:
    """nerfstudio's ``<split>_filenames`` list as a set of strings (empty when absent)."""
    names = doc.get(f"{split}_filenames") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SceneError(f"{path}: {split}_filenames must be a list of file paths")
    return set(names)


def read_transforms(folder: Path, name: str | None = None, holdout: int = 8) -> Scene:
    """Read a nerfstudio/Blender ``transforms*.json`` folder and normalise it.

    Raises:
        SceneError: missing keys, malformed matrices, non-rotations, zero focal lengths, missing images.
    """
    folder = Path(folder)
    frames: list[Frame] = []
    single = folder / "transforms.json"
    if single.is_file():
        doc = load_json(single)
        entries = require(doc, "frames", single)
        if not isinstance(entries, list) or not entries:
            raise SceneError(f"{single} lists no frames")
        listed = {s: _filenames(doc, s, single) for s in BLENDER_SPLITS}
        default = holdout_every(len(entries), holdout)
        for i, entry in enumerate(entries):
            fp = str(entry.get("file_path")) if isinstance(entry, dict) else None
            split = next((s for s in BLENDER_SPLITS if fp in listed[s]), None) if any(listed.values()) else default[i]
            frames.append(_frame_from_entry(folder, entry, doc, single, i, split or "train"))
    else:
        for split in BLENDER_SPLITS:
            path = folder / f"transforms_{split}.json"
            if not path.is_file():
                continue
            doc = load_json(path)
            entries = require(doc, "frames", path)
            if not isinstance(entries, list):
                raise SceneError(f"{path}: 'frames' must be a list of frame objects")
            for entry in entries:
                frames.append(_frame_from_entry(folder, entry, doc, path, len(frames), split))
        if not frames:
            raise SceneError(f"no transforms.json or transforms_{{train,val,test}}.json with frames in {folder}")
    scene = Scene(frames=frames, name=name or folder.name, source=folder, format="transforms")
    return normalise_scene(scene)


def write_transforms(scene: Scene, folder: Path, images: str = "link") -> Path:
    """Write ``scene`` as a nerfstudio ``transforms.json`` (per-frame intrinsics, original world).

    Splits are kept in ``train_filenames`` / ``val_filenames`` / ``test_filenames``.
    """
    folder = Path(folder)
    frames, by_split = [], {s: [] for s in BLENDER_SPLITS}
    for f in scene.frames:
        file_path = f"images/{f.name}"
        entry = {
            "file_path": file_path,
            "transform_matrix": (scene.original_c2w(f) @ OPENGL_TO_OPENCV).tolist(),
            "fl_x": f.K[0, 0],
            "fl_y": f.K[1, 1],
            "cx": f.K[0, 2],
            "cy": f.K[1, 2],
            "w": f.width,
            "h": f.height,
        }
        if f.distortion is not None:
            entry.update(zip(("k1", "k2", "p1", "p2"), f.distortion.opencv_coefficients().tolist()))
        frames.append(entry)
        by_split[f.split].append(file_path)
    doc = {"camera_model": "OPENCV", "frames": frames, **{f"{s}_filenames": v for s, v in by_split.items()}}
    atomic_write_json(folder / "transforms.json", doc)
    place_images(scene.frames, folder / "images", images)
    return folder / "transforms.json"
