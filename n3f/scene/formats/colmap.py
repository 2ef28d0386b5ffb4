"""COLMAP sparse models (text or binary), read and written through pycolmap.

Layout understood: ``SCENE/images/`` plus the model in ``SCENE/sparse/0/``, ``SCENE/sparse/`` or
``SCENE/colmap/sparse/0/`` (nerfstudio), or model files directly in ``SCENE``. COLMAP poses are
world-to-camera in OpenCV axes already; they become camera-to-world here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n3f.errors import SceneError
from n3f.scene.formats.common import check_intrinsics, place_images
from n3f.scene.normalise import holdout_every, normalise_scene
from n3f.scene.types import DISTORTION_PARAMS, Distortion, Frame, Scene

MODEL_DIRS = ("sparse/0", "sparse", "colmap/sparse/0", ".")
MODEL_FILES = ("cameras.bin", "cameras.txt")


def find_model_dir(folder: Path) -> Path | None:
    """The first sub-folder of ``folder`` holding a COLMAP model, or None."""
    for sub in MODEL_DIRS:
        candidate = Path(folder) / sub
        if any((candidate / f).is_file() for f in MODEL_FILES):
            return candidate
    return None


def intrinsics_from_colmap(model: str, params: np.ndarray) -> tuple[np.ndarray, Distortion | None]:
    """(K (3, 3), distortion or None) from a COLMAP camera model name and its parameter vector.

    Raises:
        SceneError: the model is not one the toolkit undistorts.
    """
    p = [float(x) for x in params]
    if model == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy, rest = p[1], p[2], []
    elif model == "PINHOLE":
        fx, fy, cx, cy, rest = p[0], p[1], p[2], p[3], []
    elif model in ("SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy, rest = p[1], p[2], p[3:]
    elif model == "OPENCV":
        fx, fy, cx, cy, rest = p[0], p[1], p[2], p[3], p[4:]
    else:
        raise SceneError(
            f"COLMAP camera model {model} is not supported (supported: SIMPLE_PINHOLE, PINHOLE, "
            f"{', '.join(DISTORTION_PARAMS)}). Undistort the images first: `colmap image_undistorter`."
        )
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    distortion = Distortion(model, tuple(rest)) if rest else None
    return K, distortion


def read_colmap(folder: Path, images_dir: str = "images", name: str | None = None, holdout: int = 8) -> Scene:
    """Read a COLMAP scene folder and normalise it.

    Args:
        folder: the scene folder (see the module docstring for layouts).
        images_dir: sub-folder of ``folder`` holding the images the model names.
        name: the scene's name (default: the folder's name).
        holdout: every n-th registered image (in name order) becomes a test frame; 0 for none.

    Raises:
        SceneError: no model, an unreadable model, no registered images, or images the model names
            that are absent from ``images_dir``.
    """
    import pycolmap

    folder = Path(folder)
    model_dir = find_model_dir(folder)
    if model_dir is None:
        raise SceneError(f"no COLMAP model in {folder} (looked for {', '.join(d + '/cameras.bin|txt' for d in MODEL_DIRS)})")
    rec = pycolmap.Reconstruction()
    try:
        rec.read(str(model_dir))
    except Exception as exc:  # pycolmap raises ValueError/RuntimeError with C++ messages
        raise SceneError(f"cannot read the COLMAP model in {model_dir}: {exc}") from exc
    registered = [rec.images[i] for i in rec.reg_image_ids()]
    if not registered:
        raise SceneError(
            f"the COLMAP model in {model_dir} has no registered images; the reconstruction failed. "
            "Re-run structure from motion (`n3f preprocess`) with more overlapping images."
        )
    registered.sort(key=lambda im: im.name)
    image_root = folder / images_dir
    missing = [im.name for im in registered if not (image_root / im.name).is_file()]
    if missing:
        raise SceneError(
            f"the COLMAP model in {model_dir} names {len(missing)} image(s) absent from {image_root} "
            f"(mismatched image lists), e.g. {missing[:3]}. Point --scene at the folder whose images/ the model was made from."
        )
    splits = holdout_every(len(registered), holdout)
    frames = []
    for im, split in zip(registered, splits):
        cam = rec.cameras[im.camera_id]
        K, distortion = intrinsics_from_colmap(cam.model_name, np.asarray(cam.params))
        check_intrinsics(K, f"camera {im.camera_id}", model_dir)
        w2c = np.vstack([np.asarray(im.cam_from_world().matrix()), [0, 0, 0, 1]])
        frames.append(
            Frame(
                image_path=image_root / im.name,
                K=K,
                c2w=np.linalg.inv(w2c),
                width=cam.width,
                height=cam.height,
                split=split,
                distortion=distortion,
                frame_id=int(im.image_id),
            )
        )
    points = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
    scene = Scene(
        frames=frames,
        points=points if len(points) else None,
        name=name or folder.name,
        source=folder,
        format="colmap",
        metadata={"model_dir": str(model_dir), "n_images_in_model": rec.num_images(), "n_registered": len(registered)},
    )
    return normalise_scene(scene)


def colmap_params(frame: Frame) -> tuple[str, list[float]]:
    """COLMAP model name and parameter vector for a frame's K and distortion."""
    K = frame.K
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    d = frame.distortion
    if d is None:
        return "PINHOLE", [fx, fy, cx, cy]
    if d.model == "OPENCV":
        return "OPENCV", [fx, fy, cx, cy, *d.params]
    if not np.isclose(fx, fy):
        raise SceneError(f"{d.model} needs fx == fy; frame {frame.name} has {fx} and {fy}")
    return d.model, [fx, cx, cy, *d.params]


def write_colmap(scene: Scene, folder: Path, binary: bool = True, images: str = "link") -> Path:
    """Write ``scene`` as a COLMAP scene folder (``images/`` and ``sparse/0/``) in its original world.

    Args:
        scene: the scene; poses are mapped back through ``scene.normalisation``.
        folder: output scene folder.
        binary: write ``.bin`` files (else ``.txt``).
        images: ``link`` (symlinks), ``copy`` or ``none`` (caller provides ``images/``).

    Returns:
        The model folder.
    """
    import pycolmap

    folder = Path(folder)
    model_dir = folder / "sparse" / "0"
    model_dir.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    cameras: dict[tuple, int] = {}
    for image_id, f in enumerate(scene.frames, start=1):
        model, params = colmap_params(f)
        key = (model, f.width, f.height, tuple(np.round(params, 12)))
        if key not in cameras:
            cameras[key] = len(cameras) + 1
            cam = pycolmap.Camera(model=model, width=f.width, height=f.height, params=params, camera_id=cameras[key])
            rec.add_camera_with_trivial_rig(cam)
        c2w = scene.original_c2w(f)
        w2c = np.linalg.inv(c2w)
        image = pycolmap.Image(name=f.name, camera_id=cameras[key], image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3]))
    if scene.points is not None:
        for xyz in scene.to_original(scene.points):
            rec.add_point3D(xyz, pycolmap.Track(), np.zeros(3, dtype=np.uint8))
    if binary:
        rec.write_binary(str(model_dir))
    else:
        rec.write_text(str(model_dir))
    place_images(scene.frames, folder / "images", images)
    return model_dir
