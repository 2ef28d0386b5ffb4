"""COLMAP sparse models (text or binary), read and written through pycolmap.

Layout understood: ``SCENE/images/`` plus the model in ``SCENE/sparse/0/``, ``SCENE/sparse/`` or
``SCENE/colmap/sparse/0/`` (nerfstudio), or model files directly in ``SCENE``. COLMAP poses are
world-to-camera in OpenCV axes already; they become camera-to-world here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n3f.errors import SceneError
from n3f.scene.formats.common import as_matrix, check_intrinsics, place_images
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


# parameters per COLMAP camera model id (colmap/sensor/models.h), for checking binary files
COLMAP_PARAM_COUNTS = {
    0: 3,
    1: 4,
    2: 4,
    3: 5,
    4: 8,
    5: 8,
    6: 12,
    7: 5,
    8: 4,
    9: 5,
    10: 12,
    11: 16,
    12: 4,
    13: 5,
    14: 3,
    15: 4,
    16: 6,
    17: 2,
}


class _BinaryReader:
    """Walks a COLMAP binary file, raising SceneError (naming it) on any read past its end."""

    def __init__(self, path: Path):
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def take(self, fmt: str, what: str) -> tuple:
        import struct

        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise SceneError(f"{self.path} is truncated: it ends at byte {len(self.data)} inside {what}. Re-export the model from COLMAP.")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def count(self, what: str, record_size: int, fmt: str = "<Q") -> int:
        """A record count, checked against the bytes left (each record takes >= ``record_size``)."""
        (n,) = self.take(fmt, f"the number of {what}")
        if n * record_size > len(self.data) - self.pos:
            raise SceneError(
                f"{self.path} claims {n} {what}, more than its {len(self.data)} bytes can hold: the file is corrupt or truncated"
            )
        return n

    def skip(self, n_bytes: int, what: str) -> None:
        if self.pos + n_bytes > len(self.data):
            raise SceneError(f"{self.path} is truncated: it ends at byte {len(self.data)} inside {what}. Re-export the model from COLMAP.")
        self.pos += n_bytes

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise SceneError(f"{self.path} is truncated: {what} has no terminating NUL byte")
        raw, self.pos = self.data[self.pos : end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SceneError(f"{self.path}: {what} is not valid UTF-8 ({raw[:40]!r}); the file is corrupt") from exc

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise SceneError(f"{self.path} has {len(self.data) - self.pos} unexpected bytes after its last record: the file is corrupt")


def _check_cameras_bin(r: _BinaryReader) -> None:
    for i in range(r.count("cameras", 24)):
        _, model_id, width, height = r.take("<iiQQ", f"camera {i}")
        if model_id not in COLMAP_PARAM_COUNTS:
            raise SceneError(f"{r.path}: camera {i} has unknown camera model id {model_id}; the file is corrupt")
        if not (0 < width < 2**20 and 0 < height < 2**20):
            raise SceneError(f"{r.path}: camera {i} has an impossible image size {width}x{height}; the file is corrupt")
        r.skip(8 * COLMAP_PARAM_COUNTS[model_id], f"camera {i}'s parameters")


def _check_images_bin(r: _BinaryReader) -> None:
    for i in range(r.count("images", 64 + 1 + 8)):
        r.take("<I7dI", f"image {i}")
        r.name(f"image {i}'s name")
        r.skip(24 * r.count(f"2D points of image {i}", 24), f"image {i}'s 2D points")


def _check_points3d_bin(r: _BinaryReader) -> None:
    for i in range(r.count("3D points", 51)):
        r.take("<Q3d3Bd", f"3D point {i}")
        r.skip(8 * r.count(f"track entries of 3D point {i}", 8), f"3D point {i}'s track")


def _check_rigs_bin(r: _BinaryReader) -> None:
    for i in range(r.count("rigs", 8)):
        _, n_sensors = r.take("<II", f"rig {i}")
        if n_sensors:
            r.take("<iI", f"rig {i}'s reference sensor")
        for s in range(max(n_sensors - 1, 0)):
            _, _, has_pose = r.take("<iIB", f"sensor {s} of rig {i}")
            if has_pose:
                r.skip(56, f"sensor {s} of rig {i}'s pose")


def _check_frames_bin(r: _BinaryReader) -> None:
    for i in range(r.count("frames", 68)):
        r.take("<II7d", f"frame {i}")
        r.skip(16 * r.count(f"data ids of frame {i}", 16, "<I"), f"frame {i}'s data ids")


BINARY_CHECKS = {
    "cameras.bin": _check_cameras_bin,
    "images.bin": _check_images_bin,
    "points3D.bin": _check_points3d_bin,
    "rigs.bin": _check_rigs_bin,
    "frames.bin": _check_frames_bin,
}


def check_binary_model(model_dir: Path) -> None:
    """Walk every COLMAP binary file of ``model_dir`` record by record before pycolmap reads it.

    pycolmap trusts the record counts in the files: a truncated or corrupted ``points3D.bin`` makes
    it loop for a very long time reading past the end, and damaged files can yield garbage values
    or names that are not text. This check reads counts and lengths only, never more than the
    file holds.

    Raises:
        SceneError: a file is truncated, has trailing bytes, an impossible count or camera model,
            or a name that is not UTF-8; the message names the file.
    """
    for file_name, check in BINARY_CHECKS.items():
        path = Path(model_dir) / file_name
        if path.is_file():
            reader = _BinaryReader(path)
            check(reader)
            reader.finish()


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
    check_binary_model(model_dir)
    rec = pycolmap.Reconstruction()
    try:
        rec.read(str(model_dir))
        registered = [rec.images[i] for i in rec.reg_image_ids()]
        cameras = {im.camera_id: rec.cameras[im.camera_id] for im in registered}
    except Exception as exc:  # pycolmap raises ValueError/RuntimeError/KeyError with C++ messages
        raise SceneError(f"cannot read the COLMAP model in {model_dir}: {exc}") from exc
    if not registered:
        raise SceneError(
            f"the COLMAP model in {model_dir} has no registered images; the reconstruction failed. "
            "Re-run structure from motion (`n3f preprocess`) with more overlapping images."
        )
    try:
        registered.sort(key=lambda im: im.name)
    except UnicodeDecodeError as exc:
        raise SceneError(f"the COLMAP model in {model_dir} has an image name that is not valid UTF-8; the model is corrupt") from exc
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
        cam = cameras[im.camera_id]
        K, distortion = intrinsics_from_colmap(cam.model_name, np.asarray(cam.params))
        check_intrinsics(K, f"camera {im.camera_id}", model_dir)
        w2c = as_matrix(
            np.vstack([np.asarray(im.cam_from_world().matrix()), [0, 0, 0, 1]]), (4, 4), f"the pose of image {im.name}", model_dir
        )
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
