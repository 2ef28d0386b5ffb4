"""``n3f preprocess``: turn a folder of photos or a video into a posed COLMAP scene folder.

Stages, each in its own child process (OpenCV and pycolmap never share one; see
:mod:`n3f.scene.preprocess.child`):

1. frames (:mod:`~n3f.scene.preprocess.frames`, OpenCV): a video is sampled at ``fps`` and
   blurry frames are dropped; photos are used in place, or shrunk copies when ``downscale`` > 1.
2. structure from motion (:mod:`~n3f.scene.preprocess.sfm`, pycolmap): SIFT, matching, mapping,
   undistortion to a pinhole model; the folder is checked by reading it with n3f's COLMAP reader.

The output folder is built under a temporary name and renamed into place only when every stage
succeeded; an existing non-empty folder is never touched. It holds ``images/`` and ``sparse/0/``
(what ``--scene`` reads), ``distorted/`` (database and the model before undistortion), ``input/``
(the frames SfM ran on, when they were extracted or resized) and ``preprocess.json`` (options and
summary).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from n3f.errors import PreprocessError
from n3f.scene.preprocess.options import SfmOptions

SUMMARY_VERSION = 1
MIN_IMAGES = 3


@dataclass
class PreprocessOptions:
    """Options of ``n3f preprocess``.

    Attributes:
        fps: video frames kept per second of video.
        downscale: shrink frames or photos by this integer factor before SfM (1: full size).
        blur_ratio: drop a video frame whose sharpness (variance of the Laplacian) is below this
            fraction of the median of its neighbours; 0 keeps every frame.
        blur_window: sampled neighbours on each side for the blur test.
        sfm: structure-from-motion options (matcher, mapper, camera model, threads, seed...).
    """

    fps: float = 2.0
    downscale: int = 1
    blur_ratio: float = 0.5
    blur_window: int = 3
    sfm: SfmOptions = field(default_factory=SfmOptions)

    def check(self) -> None:
        """Raise PreprocessError naming the first invalid option."""
        if not self.fps > 0:
            raise PreprocessError(f"--fps must be positive, got {self.fps}")
        if self.downscale < 1:
            raise PreprocessError(f"--downscale must be an integer >= 1, got {self.downscale}")
        if not 0 <= self.blur_ratio < 1:
            raise PreprocessError(f"--blur-ratio must be in [0, 1) (0 keeps every frame), got {self.blur_ratio}")
        if self.blur_window < 1:
            raise PreprocessError(f"the blur window must be >= 1 frame, got {self.blur_window}")
        self.sfm.check()


def check_output_folder(out: Path) -> bool:
    """Refuse an existing non-empty ``out``.

    Returns:
        True when ``out`` is an existing empty folder (the caller replaces it), False when absent.

    Raises:
        PreprocessError: ``out`` is a file or a folder with anything in it.
    """
    out = Path(out)
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return True
    if out.exists() or out.is_symlink():
        raise PreprocessError(
            f"--out {out} already exists and is not empty; n3f never overwrites results. Choose another --out or remove it."
        )
    return False


def _input_images(images: Path) -> list[str]:
    from n3f.scene.images import IMAGE_SUFFIXES, list_images

    images = Path(images)
    if not images.is_dir():
        raise PreprocessError(f"image folder {images} does not exist; check the path given to --images")
    names = [p.name for p in list_images(images)]
    if not names:
        raise PreprocessError(
            f"no images found in {images} (looked for {', '.join(IMAGE_SUFFIXES)} files directly inside it). "
            "Point --images at the folder holding the photos, or use --video for a video."
        )
    return names


def _one_size(image_dir: Path, names: list[str]) -> bool:
    from n3f.scene.images import read_image_size

    return len({read_image_size(image_dir / n) for n in names}) == 1


def preprocess(out: Path, images: Path | None = None, video: Path | None = None, options: PreprocessOptions | None = None) -> dict:
    """Run ``n3f preprocess``: photos or a video in, a posed COLMAP scene folder out.

    Args:
        out: the scene folder to create; it must not exist or be empty.
        images: a folder of photos (give this or ``video``).
        video: a video file (give this or ``images``).
        options: see :class:`PreprocessOptions`.

    Returns:
        The summary also written to ``out/preprocess.json``: ``source``, ``kind`` (images or
        video), ``options``, ``frames`` (video: source fps, sampled, kept, rejected with their
        sharpness) and ``sfm`` (images, registered, mean_reprojection_error_px, points, matcher,
        mapper, camera...; see :func:`n3f.scene.preprocess.sfm.run_sfm`).

    Raises:
        N3FError: bad options, no images, an unreadable video or image, ``out`` not empty, or
            structure from motion registering fewer than half of the images.
    """
    from n3f.io import atomic_directory, atomic_write_json
    from n3f.scene.preprocess.child import run_child
    from n3f.scene.preprocess.sfm import request_for

    options = options or PreprocessOptions()
    if (images is None) == (video is None):
        raise PreprocessError("give exactly one input: --images DIR or --video FILE")
    options.check()
    out = Path(out).expanduser()
    names = _input_images(images) if images is not None else None
    if video is not None and not Path(video).is_file():
        raise PreprocessError(f"video {video} not found; check the path given to --video")
    empty_out_existed = check_output_folder(out)

    # one shared camera needs one image size; photos of mixed sizes get a camera each
    shared = options.sfm.single_camera and (video is not None or _one_size(Path(images), names))
    sfm = dataclasses.replace(options.sfm, ordered=video is not None, single_camera=shared)
    summary = {
        "version": SUMMARY_VERSION,
        "kind": "video" if video is not None else "images",
        "source": str(Path(video if video is not None else images).resolve()),
        "options": dataclasses.asdict(dataclasses.replace(options, sfm=sfm)),
    }
    if empty_out_existed:
        out.rmdir()  # atomic_directory creates it whole; it is put back if anything fails
    try:
        with atomic_directory(out) as tmp:
            if video is not None:
                summary["frames"] = _extract_video(Path(video), tmp / "input", options)
                image_dir, names = tmp / "input", summary["frames"]["kept"]
            elif options.downscale > 1:
                image_dir = _downscale_images(Path(images), names, tmp / "input", options)
            else:
                image_dir = Path(images).resolve()
            if len(names) < MIN_IMAGES:
                hint = " (raise --fps or lower --blur-ratio)" if video is not None else ""
                raise PreprocessError(
                    f"only {len(names)} usable image(s); structure from motion needs at least {MIN_IMAGES} overlapping views{hint}"
                )
            summary["sfm"] = run_child("n3f.scene.preprocess.sfm", request_for(image_dir, names, tmp, sfm), "structure-from-motion")
            atomic_write_json(tmp / "preprocess.json", summary)
    except BaseException:
        if empty_out_existed and not out.exists():
            out.mkdir()
        raise
    return summary


def _extract_video(video: Path, out_dir: Path, options: PreprocessOptions) -> dict:
    """Frames of ``video`` into ``out_dir`` (child process); the result of :func:`~n3f.scene.preprocess.frames.extract_video_frames`."""
    from n3f.scene.preprocess.child import run_child

    request = {
        "kind": "video",
        "video": str(video.resolve()),
        "out_dir": str(out_dir),
        "fps": options.fps,
        "downscale": options.downscale,
        "blur_ratio": options.blur_ratio,
        "blur_window": options.blur_window,
        "threads": options.sfm.threads,
        "quiet": options.sfm.quiet,
    }
    return run_child("n3f.scene.preprocess.frames", request, "frame extraction")


def _downscale_images(image_dir: Path, names: list[str], out_dir: Path, options: PreprocessOptions) -> Path:
    """Shrunk copies of the photos in ``out_dir`` (child process); returns ``out_dir``."""
    from n3f.scene.preprocess.child import run_child

    request = {
        "kind": "images",
        "image_dir": str(image_dir.resolve()),
        "names": names,
        "out_dir": str(out_dir),
        "downscale": options.downscale,
        "threads": options.sfm.threads,
        "quiet": options.sfm.quiet,
    }
    run_child("n3f.scene.preprocess.frames", request, "image downscaling")
    return out_dir


__all__ = ["PreprocessOptions", "check_output_folder", "preprocess"]
