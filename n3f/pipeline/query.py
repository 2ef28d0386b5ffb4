"""Click-to-query: one patch of one frame -> cosine similarity to every pixel of every frame.

The query vector is the mean feature over the patch: the student's features rendered at every
pixel of the patch (``source="student"``), or the teacher's cached features sampled there
(``source="teacher"``, for comparison). Similarity is computed on each source's own map grid
(student maps at 1/stride, teacher cells) and resampled bilinearly to full frame resolution.
A frame's score is the 99th percentile of its similarity (high when some part of it matches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from n3f.errors import N3FError
from n3f.pipeline.maps import render_map_pixels

SOURCES = ("student", "teacher")
SCORE_PERCENTILE = 99.0


@dataclass(frozen=True)
class Patch:
    """A query patch: frame index and pixel box ``x0, y0, x1, y1`` (x1, y1 exclusive)."""

    frame: int
    box: tuple[int, int, int, int]

    def pixels(self) -> torch.Tensor:
        """(N, 2) continuous coordinates of the patch's pixel centres."""
        x0, y0, x1, y1 = self.box
        ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float32), torch.arange(x0, x1, dtype=torch.float32), indexing="ij")
        return torch.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5], -1)


def parse_box(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (pixels, x1/y1 exclusive) -> a box checked against a (width, height) image.

    Raises:
        N3FError: malformed, empty, or not inside the image.
    """
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise N3FError(f"--box takes x0,y0,x1,y1 in pixels, got {text!r}") from None
    return check_box((x0, y0, x1, y1), width, height)


def check_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """Return ``box`` if it is non-empty and inside a (width, height) image, else raise N3FError."""
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise N3FError(f"box {x0},{y0},{x1},{y1} is empty or outside the {width}x{height} image (x0 < x1 <= {width}, y0 < y1 <= {height})")
    return box


def point_box(x: float, y: float, size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A ``size`` x ``size`` box centred on pixel (x, y), shifted to lie inside the image.

    Raises:
        N3FError: the point is outside the image or size < 1.
    """
    if not (0 <= x < width and 0 <= y < height):
        raise N3FError(f"point {x:g},{y:g} is outside the {width}x{height} image")
    if size < 1:
        raise N3FError(f"--size must be >= 1, got {size}")
    size = min(size, width, height)
    x0 = int(min(max(round(x - size / 2), 0), width - size))
    y0 = int(min(max(round(y - size / 2), 0), height - size))
    return x0, y0, x0 + size, y0 + size


def parse_point(text: str) -> tuple[float, float]:
    """``"x,y"`` -> (x, y) in pixels."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise N3FError(f"--point takes x,y in pixels, got {text!r}") from None
    return x, y


class QueryEngine:
    """Similarity of query patches to every frame, for a fitted run.

    Args:
        trainer: a loaded run (:func:`n3f.pipeline.fit.load_run`).
        maps: the run's :class:`n3f.pipeline.maps.StudentMaps`.
    """

    def __init__(self, trainer, maps):
        self.trainer, self.scene, self.maps = trainer, trainer.scene, maps
        self._student = None
        self._teacher = None

    def _grid(self, source: str) -> tuple[np.ndarray, dict]:
        """Unit-normalised feature grid (n, h, w, D) float32 and its cell geometry."""
        if source == "student":
            if self._student is None:
                self._student = _unit(np.asarray(self.maps.array("feature"), dtype=np.float32))
            return self._student, self.maps.geometry
        if source == "teacher":
            if self._teacher is None:
                self._teacher = _unit(np.asarray(self.trainer.cache.features(), dtype=np.float32))
            return self._teacher, self.trainer.cache.meta["geometry"]
        raise N3FError(f"unknown feature source {source!r}; use one of {', '.join(SOURCES)}")

    def vector(self, patch: Patch, source: str = "student") -> np.ndarray:
        """Mean feature over a patch, (D,) unit length."""
        frame = self.scene.frames[patch.frame]
        check_box(patch.box, frame.width, frame.height)
        xy = patch.pixels()
        if source == "student":
            feats = render_map_pixels(self.trainer, frame, xy, self.maps.composite, streams=self.maps.streams)["feature"].numpy()
        else:
            from n3f.pipeline.fit import sample_features

            grid, geometry = self._grid(source)
            feats = sample_features(
                torch.from_numpy(grid[patch.frame : patch.frame + 1]), torch.zeros(len(xy), dtype=torch.long), xy, geometry
            )
            feats = feats.numpy()
        return _unit(feats.mean(0))

    def anchor(self, patch: Patch) -> np.ndarray:
        """(3,) the surface point (normalised scene frame) the student renders at the patch centre."""
        from n3f.render.rays import pixel_rays

        frame = self.scene.frames[patch.frame]
        x0, y0, x1, y1 = patch.box
        xy = torch.tensor([[(x0 + x1) / 2, (y0 + y1) / 2]], dtype=torch.float32)
        depth = render_map_pixels(self.trainer, frame, xy, self.maps.composite, features=False, streams=self.maps.streams)["depth"]
        coeffs = frame.distortion.opencv_coefficients() if frame.distortion is not None else None
        o, d = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy, coeffs)
        return (o + d * depth.reshape(-1, 1))[0].numpy()

    def similarity_grid(self, vector: np.ndarray, source: str = "student") -> tuple[np.ndarray, dict]:
        """Cosine similarity on the source's map grid for every frame: (n, h, w) and its geometry."""
        grid, geometry = self._grid(source)
        return grid @ vector.astype(np.float32), geometry

    def similarity(self, vector: np.ndarray, source: str, frames: list[int]) -> dict[int, np.ndarray]:
        """Full-resolution similarity (H, W) float32 of each frame in ``frames``."""
        from n3f.pipeline.maps import upsample_map

        sim, geometry = self.similarity_grid(vector, source)
        return {i: upsample_map(sim[i], geometry, self.scene.frames[i].width, self.scene.frames[i].height) for i in frames}


def frame_score(similarity: np.ndarray) -> float:
    """Score of a frame for a query: the 99th percentile of its similarity."""
    return float(np.percentile(similarity, SCORE_PERCENTILE))


def select_frames(scene, which: str) -> list[int]:
    """``all``, ``train`` or ``test`` (test also takes val frames) -> frame indices."""
    if which == "all":
        return list(range(len(scene.frames)))
    if which == "train":
        return scene.split_indices("train")
    if which == "test":
        return scene.split_indices("test") + scene.split_indices("val")
    raise N3FError(f"--frames takes all, train or test, got {which!r}")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
