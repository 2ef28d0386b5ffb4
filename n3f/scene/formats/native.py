"""The toolkit's own scene folder: ``scene.json`` beside ``images/`` (and optional ``masks/``, ``depth/``).

``scene.json`` (schema version 1)::

    {"format": "n3f-scene", "version": 1, "name": "...",
     "frames": [{"file": "images/0000.png", "K": 3x3, "c2w": 4x4 OpenCV camera-to-world,
                 "width": W, "height": H, "split": "train"|"val"|"test",
                 "mask": "masks/0000.png", "depth": "depth/0000.npy", "near": z, "far": z, "id": ...,
                 "time": t in [0, 1] (optional; frames of a video with moving content)}],
     "content_box": [[xmin, ymin, zmin], [xmax, ymax, zmax]] | null,
     "contraction": "none"|"ndc"|"sphere", "objects": [...], ...extras}

Poses are stored in the folder's own world (the demo uses metres); reading normalises them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n3f.errors import SceneError
from n3f.io import atomic_write_json
from n3f.scene.formats.common import as_matrix, as_number, as_size, check_intrinsics, check_rotation, load_json, require
from n3f.scene.normalise import normalise_scene
from n3f.scene.types import SPLITS, Frame, Scene

SCHEMA_VERSION = 1


def _rel(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    path = Path(path)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def write_scene_json(folder: Path, scene: Scene, content_box: np.ndarray | None = None, extra: dict | None = None) -> Path:
    """Write ``folder/scene.json`` describing ``scene`` (paths stored relative to ``folder``).

    Args:
        folder: the scene folder; frame files should live inside it.
        scene: frames with c2w in the world to store (usually the original, unnormalised one).
        content_box: optional (2, 3) content box in the same world.
        extra: more top-level keys (e.g. the generator's settings).

    Returns:
        The path of the written file.
    """
    folder = Path(folder)
    frames = []
    for f in scene.frames:
        entry = {
            "file": _rel(f.image_path, folder),
            "K": f.K.tolist(),
            "c2w": f.c2w.tolist(),
            "width": f.width,
            "height": f.height,
            "split": f.split,
        }
        for key, value in (
            ("mask", _rel(f.mask_path, folder)),
            ("depth", _rel(f.depth_path, folder)),
            ("near", f.near),
            ("far", f.far),
            ("id", f.frame_id),
            ("time", f.time),
        ):
            if value is not None:
                entry[key] = value
        frames.append(entry)
    doc = {
        "format": "n3f-scene",
        "version": SCHEMA_VERSION,
        "name": scene.name,
        "frames": frames,
        "content_box": None if content_box is None else np.asarray(content_box).tolist(),
        "contraction": scene.contraction,
        "objects": scene.objects,
        **(extra or {}),
    }
    path = folder / "scene.json"
    atomic_write_json(path, doc)
    return path


def _text(value, what: str, path: Path) -> str:
    """A file name of the scene file: non-empty text, or SceneError."""
    if not isinstance(value, str) or not value:
        raise SceneError(f"{path}: {what} is {value!r}; it must be a file name")
    return value


def _integer(value, what: str, path: Path) -> int:
    """An id of the scene file: a whole number (not a boolean), or SceneError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SceneError(f"{path}: {what} is {value!r}; it must be an integer")
    return value


def _time(value, where: str, path: Path) -> float | None:
    """A frame's optional ``time``: a number in [0, 1], or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise SceneError(f"{path}: {where} has time {value!r}; it must be a number in [0, 1]")
    return float(value)


def _objects(value, path: Path) -> list[dict]:
    """The ``objects`` list of a scene file (labelled objects with an integer ``id``, a ``name`` and
    a world ``box`` (2, 3), each optional), checked."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SceneError(f"{path}: objects must be a list of objects, got {type(value).__name__}")
    objects = []
    for i, obj in enumerate(value):
        if not isinstance(obj, dict):
            raise SceneError(f"{path}: object {i} is not an object")
        obj = dict(obj)
        if "id" in obj:
            _integer(obj["id"], f"object {i} id", path)
        if "name" in obj and not isinstance(obj["name"], str):
            raise SceneError(f"{path}: object {i} has name {obj['name']!r}; it must be text")
        if "box" in obj:
            obj["box"] = as_matrix(obj["box"], (2, 3), f"object {i} box", path).tolist()
        objects.append(obj)
    return objects


def read_native(folder: Path, name: str | None = None) -> Scene:
    """Read a toolkit scene folder and normalise it.

    Raises:
        SceneError: the file is missing, malformed, from a newer schema, or names missing images.
    """
    folder = Path(folder)
    path = folder / "scene.json"
    doc = load_json(path)
    if doc.get("format") != "n3f-scene":
        raise SceneError(f'{path} is not an n3f scene file (no "format": "n3f-scene")')
    version = doc.get("version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SceneError(f"{path} has schema version {version!r}; this n3f reads up to {SCHEMA_VERSION}. Upgrade n3f.")
    entries = require(doc, "frames", path)
    if not isinstance(entries, list) or not entries:
        raise SceneError(f"{path} lists no frames")
    frames = []
    for i, e in enumerate(entries):
        where = f"frame {i}"
        if not isinstance(e, dict):
            raise SceneError(f"{path}: {where} is not an object")
        K = as_matrix(require(e, "K", path), (3, 3), f"{where} K", path)
        c2w = as_matrix(require(e, "c2w", path), (4, 4), f"{where} c2w", path)
        check_intrinsics(K, f"{where} K", path)
        check_rotation(c2w[:3, :3], f"{where} c2w rotation", path)
        split = e.get("split", "train")
        if split not in SPLITS:
            raise SceneError(f"{path}: {where} has split {split!r}; use one of {SPLITS}")
        image = folder / _text(require(e, "file", path), f"{where} file", path)
        if not image.is_file():
            raise SceneError(f"{path}: {where} names image {image}, which does not exist")
        width = as_size(require(e, "width", path), f"{where} width", path)
        height = as_size(require(e, "height", path), f"{where} height", path)
        near, far = (None if e.get(k) is None else as_number(e[k], f"{where} {k}", path) for k in ("near", "far"))
        if (near is not None and near < 0) or (near is not None and far is not None and not near < far):
            raise SceneError(f"{path}: {where} has near {near} and far {far}; it needs 0 <= near < far")
        frame_id = _integer(e.get("id", i), f"{where} id", path)
        frames.append(
            Frame(
                image_path=image,
                K=K,
                c2w=c2w,
                width=width,
                height=height,
                split=split,
                mask_path=folder / _text(e["mask"], f"{where} mask", path) if e.get("mask") else None,
                depth_path=folder / _text(e["depth"], f"{where} depth", path) if e.get("depth") else None,
                near=near,
                far=far,
                frame_id=frame_id,
                time=_time(e.get("time"), where, path),
            )
        )
    box = doc.get("content_box")
    content_box = None if box is None else as_matrix(box, (2, 3), "content_box", path)
    contraction = doc.get("contraction", "none")
    if contraction not in ("none", "ndc", "sphere"):
        raise SceneError(f"{path}: unknown contraction {contraction!r}")
    scene = Scene(
        frames=frames,
        name=name or str(doc.get("name") or folder.name),
        source=folder,
        format="n3f",
        contraction=contraction,
        objects=_objects(doc.get("objects"), path),
        metadata={k: v for k, v in doc.items() if k not in ("frames", "objects")},
    )
    scene = normalise_scene(scene, content_box)
    T = scene.normalisation
    for obj in scene.objects:
        if "box" in obj:
            box_world = np.asarray(obj["box"], dtype=np.float64)
            obj["box_normalised"] = (box_world @ T[:3, :3].T + T[:3, 3]).tolist()
    return scene
