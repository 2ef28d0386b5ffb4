"""EPIC-Diff scenes in NeuralDiff's layout: ``meta.json``, ``frames/``, ``annotations/``.

``meta.json`` keys: ``ids_all``, ``ids_train``, ``ids_val``, ``ids_test`` (frame ids), and per id
``images`` (file name in ``frames/``), ``poses`` (3x4 camera-to-world, axes right-up-back, as
NeuralDiff makes them from COLMAP), ``nears``, ``fars``; plus one shared 3x3 ``intrinsics``.
``annotations/<frame file name>`` (where present) holds the frame's foreground mask.
NeuralDiff's split rule: of every 8th id, alternate ones are test and val; the rest train.

Annotations: NeuralDiff reads ``annotations/<frame file name>`` with PIL as a 0/1 array (1 = the
dynamic foreground: hands and the objects they move) and scores a frame only when its mask is not
empty. They carry no object ids, so the reader declares one object, ``{"id": 1, "name":
"foreground"}``, sets ``metadata["mask_kind"] = "foreground"`` (masks are read as ``mask > 0``, see
:func:`n3f.scene.images.load_frame_mask`) and gives annotated frames a ``mask_path``. Only file
names are checked here; no pixels are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from n3f.errors import SceneError
from n3f.io import atomic_write_bytes, atomic_write_json
from n3f.scene.formats.common import (
    OPENGL_TO_OPENCV,
    as_matrix,
    as_number,
    check_intrinsics,
    check_rotation,
    load_json,
    place_images,
    require,
)
from n3f.scene.images import read_image_size
from n3f.scene.normalise import normalise_scene
from n3f.scene.types import Frame, Scene

ANNOTATIONS_DIR = "annotations"
FOREGROUND = {"id": 1, "name": "foreground", "category": "dynamic foreground (EPIC-Diff annotation)"}


def epic_diff_split(ids: list[int], every: int = 8) -> tuple[list[int], list[int], list[int]]:
    """NeuralDiff's split of frame ids: (train, val, test)."""
    held = ids[::every] if every else []
    test, val = held[::2], held[1::2]
    train = sorted(set(ids) - set(test) - set(val))
    return train, val, test


def _per_id(doc: dict, key: str, path: Path) -> dict[int, object]:
    table = require(doc, key, path)
    if not isinstance(table, dict):
        raise SceneError(f"{path}: {key!r} must map frame ids to values")
    try:
        return {int(k): v for k, v in table.items()}
    except ValueError as exc:
        raise SceneError(f"{path}: {key!r} has a key that is not an integer frame id") from exc


def read_epic_diff(folder: Path, name: str | None = None) -> Scene:
    """Read an EPIC-Diff scene folder and normalise it.

    Args:
        folder: the video's folder (``meta.json``, ``frames/``, optional ``annotations/``).
        name: the scene's name (default: the folder's name).

    Returns:
        A normalised Scene in ``ids_all`` order: one shared K, OpenCV c2w converted from the
        right-up-back poses, near/far per frame, the meta.json splits (ids in no list train),
        ``mask_path`` on annotated frames and the ``foreground`` object when any frame has one.
        Only the first frame's header is opened (for the image size); no pixels are read.

    Raises:
        SceneError: missing keys, ids without pose/image, malformed matrices, missing frames.
    """
    folder = Path(folder)
    path = folder / "meta.json"
    doc = load_json(path)
    try:
        ids_all = [int(i) for i in require(doc, "ids_all", path)]
        split_of = {}
        for split in ("train", "val", "test"):
            for i in doc.get(f"ids_{split}") or []:
                split_of[int(i)] = split
    except (TypeError, ValueError) as exc:
        raise SceneError(f"{path}: frame id lists must hold integers") from exc
    if not ids_all:
        raise SceneError(f"{path}: ids_all is empty")
    images, poses = _per_id(doc, "images", path), _per_id(doc, "poses", path)
    nears, fars = _per_id(doc, "nears", path), _per_id(doc, "fars", path)
    K = as_matrix(require(doc, "intrinsics", path), (3, 3), "intrinsics", path)
    check_intrinsics(K, "intrinsics", path)
    frame_dir = folder / "frames"
    width = height = None
    frames = []
    numeric = all(isinstance(i, int) and not isinstance(i, bool) for i in ids_all)
    first, span = (min(ids_all), max(max(ids_all) - min(ids_all), 1)) if numeric else (0, 1)
    for fid in ids_all:
        for table, key in ((images, "images"), (poses, "poses")):
            if fid not in table:
                raise SceneError(f"{path}: frame id {fid} is in ids_all but has no {key!r} entry")
        image = frame_dir / str(images[fid])
        if not image.is_file():
            raise SceneError(f"{path}: frame id {fid} names {image}, which does not exist")
        if width is None:
            width, height = read_image_size(image)
        pose = as_matrix(poses[fid], (3, 4), f"pose of frame {fid}", path)
        check_rotation(pose[:, :3], f"pose of frame {fid}", path)
        c2w = np.vstack([pose, [0, 0, 0, 1]]) @ OPENGL_TO_OPENCV
        mask = folder / ANNOTATIONS_DIR / image.name
        near, far = nears.get(fid), fars.get(fid)
        frames.append(
            Frame(
                image,
                K,
                c2w,
                width,
                height,
                split_of.get(fid, "train"),
                mask_path=mask if mask.is_file() else None,
                near=as_number(near, f"near of frame {fid}", path) if near is not None else None,
                far=as_number(far, f"far of frame {fid}", path) if far is not None else None,
                frame_id=fid,
                time=(fid - first) / span if numeric else None,  # video frame numbers: time in [0, 1] (the transient streams need it)
            )
        )
    annotated = sum(f.mask_path is not None for f in frames)
    scene = Scene(
        frames=frames,
        name=name or folder.name,
        source=folder,
        format="epic_diff",
        contraction="sphere",
        objects=[dict(FOREGROUND)] if annotated else [],
        metadata={"mask_kind": "foreground", "annotated_frames": annotated},
    )
    return normalise_scene(scene)


def write_epic_diff(scene: Scene, folder: Path, images: str = "link", annotations: Mapping[int, np.ndarray] | None = None) -> Path:
    """Write ``scene`` in the EPIC-Diff layout (original world, right-up-back poses).

    Frame ids are the frame indices; files are ``frames/IMG_<id:010d><suffix>``. All frames must
    share one K (EPIC-Diff stores one).

    Args:
        scene: the scene; splits are written as they are (use :func:`epic_diff_split` for
            NeuralDiff's rule).
        folder: output folder.
        images: ``link``, ``copy`` or ``none`` (see :func:`place_images`).
        annotations: optional ``{frame index: (height, width) bool foreground}``, written as 0/1
            8-bit masks ``annotations/<frame file name>`` (PNG data, BMP for ``.bmp`` frames), as
            NeuralDiff's release stores them.

    Returns:
        The ``meta.json`` path.
    """
    folder = Path(folder)
    K = scene.frames[0].K
    if any(not np.allclose(f.K, K) for f in scene.frames):
        raise SceneError("EPIC-Diff stores one intrinsics matrix; this scene's frames differ")
    names = [f"IMG_{i:010d}{Path(f.image_path).suffix}" for i, f in enumerate(scene.frames)]
    ids = list(range(len(scene.frames)))
    doc = {
        "ids_all": ids,
        **{f"ids_{s}": [i for i, f in enumerate(scene.frames) if f.split == s] for s in ("train", "val", "test")},
        "images": {str(i): n for i, n in zip(ids, names)},
        "poses": {str(i): (scene.original_c2w(f) @ OPENGL_TO_OPENCV)[:3].tolist() for i, f in enumerate(scene.frames)},
        "nears": {str(i): (f.near or 0.0) / scene.scale for i, f in enumerate(scene.frames)},
        "fars": {str(i): (f.far or 0.0) / scene.scale for i, f in enumerate(scene.frames)},
        "intrinsics": K.tolist(),
    }
    atomic_write_json(folder / "meta.json", doc)
    place_images(scene.frames, folder / "frames", images, names)
    for index, mask in (annotations or {}).items():
        frame = scene.frames[index]
        if np.shape(mask) != (frame.height, frame.width):
            raise SceneError(f"annotation of frame {index} has shape {np.shape(mask)}, expected ({frame.height}, {frame.width})")
        atomic_write_bytes(folder / ANNOTATIONS_DIR / names[index], _mask_bytes(np.asarray(mask) > 0, names[index]))
    return folder / "meta.json"


def _mask_bytes(mask: np.ndarray, file_name: str) -> bytes:
    """A 0/1 8-bit greyscale image file's bytes (lossless: BMP for ``.bmp`` names, else PNG)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="BMP" if file_name.lower().endswith(".bmp") else "PNG")
    return buf.getvalue()
