"""Checks shared by the readers, so that bad input fails with a message naming the file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from n3f.errors import SceneError

# OpenCV camera axes (x right, y down, z forward) from OpenGL/Blender/nerfstudio axes (x right,
# y up, z back): flip the camera's y and z columns.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def load_json(path: Path) -> dict:
    """Parse a JSON file, raising SceneError that names it when missing or malformed."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise SceneError(f"{path} not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SceneError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SceneError(f"{path} must hold a JSON object at the top level")
    return data


def require(data: dict, key: str, path: Path):
    """``data[key]``, or a SceneError naming the missing key and the file."""
    if key not in data:
        raise SceneError(f"{path} has no {key!r} entry")
    return data[key]


def as_matrix(value, shape: tuple[int, ...], what: str, path: Path) -> np.ndarray:
    """Convert ``value`` to a finite float64 array of ``shape`` or raise SceneError."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SceneError(f"{path}: {what} is not numeric") from exc
    if arr.shape != shape:
        if arr.size == int(np.prod(shape)):
            arr = arr.reshape(shape)
        else:
            raise SceneError(f"{path}: {what} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all():
        raise SceneError(f"{path}: {what} contains NaN or infinite values")
    return arr


def as_number(value, what: str, path: Path) -> float:
    """``value`` as a finite float (booleans, text, lists and NaN/inf refused) or raise SceneError."""
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    except OverflowError:  # an integer beyond float range
        number = None
    if number is None or not np.isfinite(number):
        raise SceneError(f"{path}: {what} is {value!r}; it must be a finite number")
    return number


def as_size(value, what: str, path: Path) -> int:
    """``value`` as a positive whole number of pixels or raise SceneError."""
    number = as_number(value, what, path)
    if number != int(number) or not 0 < number < 2**20:
        raise SceneError(f"{path}: {what} is {value!r}; it must be a positive whole number of pixels")
    return int(number)


def check_rotation(R: np.ndarray, what: str, path: Path, tol: float = 1e-3) -> None:
    """Raise SceneError unless R (3, 3) is a proper rotation within ``tol``."""
    # a rotation's entries lie in [-1, 1]; testing that first also keeps huge values from overflowing R.T @ R
    if not (np.abs(R) <= 1 + tol).all() or not np.allclose(R.T @ R, np.eye(3), atol=tol) or abs(np.linalg.det(R) - 1) > tol:
        raise SceneError(f"{path}: {what} is not a rotation (columns not orthonormal or mirrored)")


def check_intrinsics(K: np.ndarray, what: str, path: Path) -> None:
    """Raise SceneError unless K has positive finite focal lengths."""
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        raise SceneError(f"{path}: {what} has a zero, negative or non-finite focal length")


def pose_from_rt(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) matrix from a (3, 3) rotation and (3,) translation."""
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, t
    return M


def rotation_from_qvec(qvec, what: str, path: Path) -> np.ndarray:
    """(3, 3) rotation from a COLMAP quaternion ``(qw, qx, qy, qz)`` (Hamilton, scalar first).

    The quaternion is normalised first; one of (near) zero length raises SceneError naming ``what``.
    """
    q = as_matrix(qvec, (4,), what, path)
    norm = float(np.linalg.norm(q))
    if norm < 1e-6:
        raise SceneError(f"{path}: {what} is a zero-length quaternion")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def qvec_from_rotation(R: np.ndarray) -> np.ndarray:
    """COLMAP quaternion ``(qw, qx, qy, qz)`` (unit, qw >= 0) of a (3, 3) rotation.

    Shepperd's method: divide by the largest of the four squared components, so the result is
    accurate to rounding for every rotation (no loss near 180 degrees).
    """
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    squares = np.array([1 + trace, 1 + 2 * R[0, 0] - trace, 1 + 2 * R[1, 1] - trace, 1 + 2 * R[2, 2] - trace])
    k = int(np.argmax(squares))
    s = 2.0 * np.sqrt(squares[k])  # 4 times the largest component
    if k == 0:
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif k == 1:
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif k == 2:
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def place_images(frames, image_dir: Path, mode: str = "link", names: list[str] | None = None) -> None:
    """Put the frames' image files into ``image_dir`` for a writer.

    Args:
        frames: the frames whose ``image_path`` to place.
        image_dir: destination folder (created).
        mode: ``link`` (absolute symlinks), ``copy``, or ``none`` (do nothing).
        names: optional file names to use instead of the frames' own.
    """
    if mode == "none":
        return
    if mode not in ("link", "copy"):
        raise ValueError(f"images mode must be link, copy or none, got {mode!r}")
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        target = image_dir / (names[i] if names else Path(f.image_path).name)
        if target.exists() or target.is_symlink():
            continue
        if mode == "link":
            os.symlink(Path(f.image_path).resolve(), target)
        else:
            shutil.copy2(f.image_path, target)
