"""The frames structure from motion starts from: decoded from a video, or resized from a folder (OpenCV).

Runs in its own process (see :mod:`n3f.scene.preprocess.child`): this module imports OpenCV and
must never be imported where pycolmap runs.

Video frames are sampled at a requested rate (constant source frame rate assumed), saved as JPEG
(quality 95) named after their source frame number, and frames much blurrier than their
neighbours are dropped: sharpness is the variance of the image's Laplacian, and a frame whose
sharpness is below ``blur_ratio`` times the median of the ``blur_window`` sampled frames on each
side is rejected. A whole blurry stretch is kept (its neighbours are as blurry), since structure
from motion needs the coverage more than the sharpness.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from n3f.errors import ImageReadError, PreprocessError, VideoReadError
from n3f.scene.images import list_images

JPEG_QUALITY = 95


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of an image: larger is sharper.

    Args:
        image: (H, W, 3) uint8 BGR or (H, W) uint8 grey.

    Returns:
        The variance of the 3x3 Laplacian of the grey image, in squared intensity units (0..255 scale).
    """
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def blurry_mask(scores: np.ndarray, ratio: float = 0.5, window: int = 3) -> np.ndarray:
    """Which frames are far blurrier than their neighbours.

    Args:
        scores: (N,) sharpness of consecutive frames (see :func:`sharpness`).
        ratio: a frame is blurry when its score is below ``ratio`` times the median score of its
            neighbours; 0 rejects nothing.
        window: neighbours on each side (fewer at the ends of the sequence).

    Returns:
        (N,) bool, True for the frames to reject.
    """
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.zeros(len(scores), dtype=bool)
    if ratio <= 0 or len(scores) < 2:
        return mask
    for i, s in enumerate(scores):
        lo, hi = max(0, i - window), min(len(scores), i + window + 1)
        neighbours = np.concatenate([scores[lo:i], scores[i + 1 : hi]])
        mask[i] = s < ratio * float(np.median(neighbours))
    return mask


def sample_step(source_fps: float, fps: float) -> float:
    """Source frames per sampled frame (>= 1: a rate above the video's keeps every frame)."""
    return max(1.0, source_fps / fps)


def _resize(image: np.ndarray, downscale: int) -> np.ndarray:
    import cv2

    if downscale <= 1:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w / downscale)), max(1, round(h / downscale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _write(path: Path, image: np.ndarray) -> None:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise PreprocessError(f"OpenCV cannot encode {path.name} as {path.suffix}; use --images with PNG or JPEG files")
    path.write_bytes(data.tobytes())


def extract_video_frames(
    video: Path,
    out_dir: Path,
    fps: float = 2.0,
    downscale: int = 1,
    blur_ratio: float = 0.5,
    blur_window: int = 3,
    threads: int = 0,
    progress=None,
) -> dict:
    """Decode ``video``, keep ``fps`` frames per second that are not blurry, write them as JPEG.

    Args:
        video: a video file OpenCV can decode (mp4, mov, avi...).
        out_dir: folder for the frames (created), named ``frame_NNNNNN.jpg`` by source frame number.
        fps: frames to keep per second of video (every frame when above the video's rate).
        downscale: integer factor to shrink the frames by (area averaging); 1 keeps the size.
        blur_ratio: reject frames below this fraction of their neighbours' median sharpness; 0 keeps all.
        blur_window: neighbours on each side for the blur test, in sampled frames.
        threads: OpenCV threads (0: all cores).
        progress: optional ``track(iterable, description, total)``.

    Returns:
        ``{"source_fps", "source_frames", "sampled", "kept": [names], "rejected": [{"name",
        "sharpness", "neighbour_median"}], "width", "height"}``; sharpness in squared grey levels.

    Raises:
        VideoReadError: the file is missing, cannot be opened, or yields no frame.
    """
    import cv2

    video, out_dir = Path(video), Path(out_dir)
    if not video.is_file():
        raise VideoReadError(f"video {video} not found; check the path given to --video")
    cv2.setNumThreads(threads if threads > 0 else -1)
    capture = cv2.VideoCapture(str(video))
    unreadable = (
        f"cannot read video {video}: OpenCV (FFmpeg) does not decode it (truncated, not a video, or an unsupported codec). "
        f"Re-encode it, e.g. `ffmpeg -i {video.name} -c:v libx264 out.mp4`, or extract the frames yourself and use --images."
    )
    if not capture.isOpened():
        raise VideoReadError(unreadable)
    source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    n_frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))  # an estimate, 0 when unknown
    if not np.isfinite(source_fps) or source_fps <= 0:
        capture.release()
        raise VideoReadError(f"{video} does not say its frame rate; re-encode it with one, e.g. `ffmpeg -i {video.name} -r 30 out.mp4`")
    step = sample_step(source_fps, fps)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, scores = [], []
    width = height = 0
    index, next_sample = 0, 0
    # the container's frame count is an estimate: read until the decoder stops
    for _ in progress(itertools.count(), "decoding video", n_frames or None) if progress else itertools.count():
        if index == next_sample:
            ok, image = capture.read()
            if not ok:
                break
            image = _resize(image, downscale)
            height, width = image.shape[:2]
            name = f"frame_{index:06d}.jpg"
            _write(out_dir / name, image)
            names.append(name)
            scores.append(sharpness(image))
            next_sample = math.floor(len(names) * step + 0.5)
        elif not capture.grab():  # skip without converting the frame
            break
        index += 1
    capture.release()
    if not names:
        raise VideoReadError(unreadable)
    rejected_mask = blurry_mask(np.array(scores), blur_ratio, blur_window)
    rejected = []
    for i in np.flatnonzero(rejected_mask):
        lo, hi = max(0, i - blur_window), min(len(scores), i + blur_window + 1)
        median = float(np.median([scores[j] for j in range(lo, hi) if j != i]))
        rejected.append({"name": names[i], "sharpness": scores[i], "neighbour_median": median})
        (out_dir / names[i]).unlink()
    return {
        "source_fps": source_fps,
        "source_frames": index,
        "sampled": len(names),
        "kept": [n for n, r in zip(names, rejected_mask) if not r],
        "rejected": rejected,
        "width": width,
        "height": height,
    }


def downscale_images(image_dir: Path, names: list[str], out_dir: Path, downscale: int, threads: int = 0, progress=None) -> dict:
    """Write copies of images shrunk by an integer factor (area averaging), keeping their names.

    Args:
        image_dir: the source folder.
        names: file names inside ``image_dir``.
        out_dir: destination folder (created).
        downscale: factor >= 1.
        threads: OpenCV threads (0: all cores).
        progress: optional ``track(iterable, description, total)``.

    Returns:
        ``{"kept": names, "width", "height"}`` (size of the last image written, pixels).

    Raises:
        ImageReadError: an image cannot be decoded (the message names it).
    """
    import cv2

    cv2.setNumThreads(threads if threads > 0 else -1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = height = 0
    for name in progress(names, "downscaling images", len(names)) if progress else names:
        path = Path(image_dir) / name
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageReadError(f"cannot decode image {path}; remove it from the folder or replace it")
        image = _resize(image, downscale)
        height, width = image.shape[:2]
        _write(out_dir / name, image)
    return {"kept": list(names), "width": width, "height": height}


def _handle(request: dict) -> dict:
    from n3f.progress import make_progress

    progress = make_progress(request.get("quiet", False))
    if request["kind"] == "video":
        return extract_video_frames(
            Path(request["video"]),
            Path(request["out_dir"]),
            fps=request["fps"],
            downscale=request["downscale"],
            blur_ratio=request["blur_ratio"],
            blur_window=request["blur_window"],
            threads=request["threads"],
            progress=progress,
        )
    image_dir = Path(request["image_dir"])
    names = request.get("names") or [p.name for p in list_images(image_dir)]
    return downscale_images(image_dir, names, Path(request["out_dir"]), request["downscale"], request["threads"], progress)


if __name__ == "__main__":
    from n3f.scene.preprocess.child import child_main

    child_main(_handle)
