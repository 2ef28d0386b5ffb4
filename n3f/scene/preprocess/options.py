"""Options of structure from motion, importable without pycolmap (the CLI and the parent process use them)."""

from __future__ import annotations

from dataclasses import dataclass

from n3f.errors import PreprocessError

MATCHERS = ("auto", "exhaustive", "sequential", "vocabtree")
MAPPERS = ("incremental", "global")
CAMERA_MODELS = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "SIMPLE_PINHOLE", "PINHOLE")
EXHAUSTIVE_MAX_IMAGES = 100  # above this, ``auto`` stops trying every pair
MIN_REGISTERED_FRACTION = 0.5


@dataclass
class SfmOptions:
    """How structure from motion runs.

    Attributes:
        matcher: ``auto`` (exhaustive up to 100 images, else sequential for ordered frames and
            vocabtree for unordered photos), ``exhaustive``, ``sequential`` or ``vocabtree``.
        loop_detection: with ``sequential``, also match each frame with similar far-away frames.
        mapper: ``incremental`` (COLMAP) or ``global`` (GLOMAP, in pycolmap >= 3.12).
        camera_model: COLMAP camera model fitted during mapping (images are undistorted after).
        single_camera: all images share one camera (one phone or video); else one camera per image.
        ordered: the images are consecutive frames in name order (a video).
        threads: CPU threads for every stage (0: all cores).
        seed: random seed of COLMAP's RANSAC and mapper.
        verbose: show COLMAP's own log.
        quiet: no progress display.
    """

    matcher: str = "auto"
    loop_detection: bool = True
    mapper: str = "incremental"
    camera_model: str = "SIMPLE_RADIAL"
    single_camera: bool = True
    ordered: bool = False
    threads: int = 0
    seed: int = 0
    verbose: bool = False
    quiet: bool = False

    def check(self) -> None:
        """Raise PreprocessError naming the first invalid option."""
        for value, allowed, flag in (
            (self.matcher, MATCHERS, "--matcher"),
            (self.mapper, MAPPERS, "--mapper"),
            (self.camera_model, CAMERA_MODELS, "--camera-model"),
        ):
            if value not in allowed:
                raise PreprocessError(f"unknown {flag} {value!r}; use one of {', '.join(allowed)}")
        if self.threads < 0:
            raise PreprocessError("--threads must be 0 (all cores) or a positive number")
