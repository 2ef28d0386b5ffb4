"""LLFF ``poses_bounds.npy`` (forward-facing captures such as the NeRF "fern").

Each row holds a 3x5 matrix ``[R | t | hwf]`` flattened, then near and far depth bounds. ``R``'s
columns are LLFF's camera axes (down, right, backwards) in the world; ``hwf`` is height, width and
focal length at the *original* resolution. Images are the sorted files of ``images/`` or of the
pre-downscaled ``images_N/``; the focal length is scaled to the size actually found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n3f.errors import SceneError
from n3f.io import atomic_save_npy
from n3f.scene.formats.common import as_matrix, check_rotation, place_images
from n3f.scene.images import list_images, read_image_size
from n3f.scene.normalise import holdout_every, normalise_scene
from n3f.scene.types import Frame, Scene


def choose_images_dir(folder: Path, downscale: int | None) -> tuple[Path, int]:
    """The image folder to read and the factor its images are already downscaled by.

    ``images_N`` is used when ``downscale`` is N and it exists; otherwise ``images/`` (resized on
    load); with no downscale asked, ``images/`` or else the least-downscaled ``images_N/``.
    """
    folder = Path(folder)
    if downscale and downscale > 1 and (folder / f"images_{downscale}").is_dir():
        return folder / f"images_{downscale}", downscale
    if (folder / "images").is_dir():
        return folder / "images", 1
    found = sorted((int(p.name.split("_")[1]), p) for p in folder.glob("images_*") if p.is_dir() and p.name.split("_")[1].isdigit())
    if not found:
        raise SceneError(f"{folder} has poses_bounds.npy but no images/ or images_N/ folder")
    return found[0][1], found[0][0]


def read_llff(folder: Path, downscale: int | None = None, name: str | None = None, holdout: int = 8) -> Scene:
    """Read an LLFF folder and normalise it.

    Args:
        folder: holds ``poses_bounds.npy`` and ``images*/``.
        downscale: load images at 1/downscale of the original size (uses ``images_N/`` if present).
        name: the scene's name.
        holdout: frames 0, n, 2n... are test frames (LLFF's ``llffhold``); 0 for none.

    Raises:
        SceneError: a malformed array, non-rotation poses, or an image count that differs from
            the number of poses.
    """
    folder = Path(folder)
    path = folder / "poses_bounds.npy"
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise SceneError(f"{path} not found") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise SceneError(f"{path} is not a readable .npy array: {exc}") from exc
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0:
        raise SceneError(f"{path} has shape {arr.shape}; LLFF needs (N, 17) with N >= 1")
    arr = as_matrix(arr, arr.shape, "poses_bounds", path)
    image_dir, factor = choose_images_dir(folder, downscale)
    images = list_images(image_dir)
    if len(images) != len(arr):
        raise SceneError(
            f"mismatched image lists: {path} has {len(arr)} poses but {image_dir} holds {len(images)} images. "
            "LLFF pairs them by sorted file name; remove extra images or regenerate poses_bounds.npy."
        )
    width, height = read_image_size(images[0])
    poses = arr[:, :15].reshape(-1, 3, 5)
    splits = holdout_every(len(arr), holdout)
    frames = []
    for i, (pose, bounds) in enumerate(zip(poses, arr[:, 15:])):
        h0, w0, focal = pose[:, 4]
        if focal <= 0 or h0 <= 0 or w0 <= 0:
            raise SceneError(f"{path}: row {i} has a non-positive height, width or focal length")
        down, right, back = pose[:, 0], pose[:, 1], pose[:, 2]
        R = np.stack([right, down, -back], axis=1)
        check_rotation(R, f"row {i} rotation", path)
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = R, pose[:, 3]
        sx, sy = width / w0, height / h0
        K = np.array([[focal * sx, 0, width / 2], [0, focal * sy, height / 2], [0, 0, 1.0]])
        near, far = float(bounds[0]), float(bounds[1])
        frames.append(
            Frame(images[i], K, c2w, width, height, splits[i], near=near if near > 0 else None, far=far if far > 0 else None, frame_id=i)
        )
    scene = Scene(
        frames=frames, name=name or folder.name, source=folder, format="llff", contraction="ndc", metadata={"images_dir": image_dir.name}
    )
    scene = normalise_scene(scene)
    if downscale and downscale != factor:
        from n3f.scene.normalise import downscale_scene

        scene = downscale_scene(scene, downscale / factor)
    return scene


def write_llff(scene: Scene, folder: Path, images: str = "link") -> Path:
    """Write ``scene`` as an LLFF folder in its original world (``poses_bounds.npy`` + ``images/``).

    Images are named ``image0000.png``... so that sorted order is frame order.

    Raises:
        SceneError: a frame LLFF cannot represent (fx != fy, off-centre principal point, distortion).
    """
    folder = Path(folder)
    rows = []
    for f in scene.frames:
        K = f.K
        if not (np.isclose(K[0, 0], K[1, 1]) and np.isclose(K[0, 2], f.width / 2) and np.isclose(K[1, 2], f.height / 2)) or f.distortion:
            raise SceneError(f"LLFF stores one focal length and a centred principal point; frame {f.name} has K={K.tolist()}")
        c2w = scene.original_c2w(f)
        right, down, forward = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
        pose = np.stack([down, right, -forward, c2w[:3, 3], [f.height, f.width, K[0, 0]]], axis=1)
        near = f.near / scene.scale if f.near else 0.0
        far = f.far / scene.scale if f.far else 0.0
        rows.append(np.concatenate([pose.reshape(-1), [near, far]]))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(folder / "poses_bounds.npy", np.stack(rows))
    names = [f"image{i:04d}{Path(f.image_path).suffix}" for i, f in enumerate(scene.frames)]
    place_images(scene.frames, folder / "images", images, names)
    return folder
