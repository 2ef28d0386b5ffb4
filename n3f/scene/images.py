"""Reading images, masks and depth maps of frames, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n3f.errors import ImageReadError
from n3f.scene.types import Frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # Pillow 13: ValueError for a truncated PNG header
        raise ImageReadError(f"cannot read image {path}: {exc}. Replace or remove the file.") from exc


def read_image(path: Path) -> np.ndarray:
    """Decode an image file.

    Returns:
        (H, W, 3) float32 RGB in [0, 1]. Greyscale is expanded; alpha is dropped.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode image {path} (empty, truncated or not an image). Replace or remove the file.")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return image.astype(np.float32) / scale


def load_frame_image(frame: Frame) -> np.ndarray:
    """The frame's image at the frame's size (resized with area averaging when it differs).

    Returns:
        (frame.height, frame.width, 3) float32 RGB in [0, 1].

    Raises:
        ImageReadError: the file is missing or undecodable, or its aspect ratio is not the frame's.
    """
    import cv2

    image = read_image(frame.image_path)
    height, width = image.shape[:2]
    if abs(width * frame.height / height - frame.width) > max(1.0, 0.02 * frame.width):
        raise ImageReadError(
            f"image {frame.image_path} is {width}x{height} but its camera is calibrated for {frame.width}x{frame.height} "
            "(another aspect ratio): it is not the image the poses were made for. Replace it or fix the scene file."
        )
    if image.shape[:2] != (frame.height, frame.width):
        image = cv2.resize(image, (frame.width, frame.height), interpolation=cv2.INTER_AREA)
    return image


def load_frame_mask(frame: Frame, foreground: bool = False) -> np.ndarray | None:
    """The frame's instance mask at the frame's size, or None when it has none.

    Args:
        frame: the frame.
        foreground: read a foreground annotation instead of instance ids (EPIC-Diff's
            ``annotations/``, scenes with ``metadata["mask_kind"] == "foreground"``): the file is
            decoded with PIL as NeuralDiff reads it (palette indices, 0/1 or 0/255 values, any
            channel of a colour image) and every non-zero pixel becomes 1.

    Returns:
        (frame.height, frame.width) int32 instance ids (0 = background; 0/1 with ``foreground``),
        nearest-neighbour resized.
    """
    import cv2

    if frame.mask_path is None:
        return None
    path = Path(frame.mask_path)
    if foreground:
        mask = _read_foreground(path)
    else:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if mask is None:
        raise ImageReadError(f"cannot read mask {path}")
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != (frame.height, frame.width):
        mask = cv2.resize(mask, (frame.width, frame.height), interpolation=cv2.INTER_NEAREST)
    return mask.astype(np.int32)


def _read_foreground(path: Path) -> np.ndarray | None:
    """(H, W) uint8 0/1 foreground of an annotation file, or None when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            values = np.asarray(im)
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None
    if values.ndim == 3:
        values = values[:, :, :3].max(axis=2)  # any colour channel; alpha ignored
    return (values > 0).astype(np.uint8)


def load_frame_depth(frame: Frame) -> np.ndarray | None:
    """The frame's z-depth map in normalised world units at the frame's size, or None.

    Returns:
        (frame.height, frame.width) float32 depth along the optical axis (nearest-neighbour resized).
    """
    import cv2

    if frame.depth_path is None:
        return None
    path = Path(frame.depth_path)
    try:
        depth = np.load(path).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise ImageReadError(f"cannot read depth map {path}: {exc}") from exc
    if depth.shape != (frame.height, frame.width):
        depth = cv2.resize(depth, (frame.width, frame.height), interpolation=cv2.INTER_NEAREST)
    return depth * np.float32(frame.depth_scale)
