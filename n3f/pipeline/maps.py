"""Per-frame maps rendered by a fitted student, cached in its run folder.

Queries, evaluation and export need the student's features (and depth, opacity, colour) in every
frame; rendering them costs far more than using them, so they are rendered once per checkpoint at
1/``stride`` of the frame resolution, at the pixel positions ``x = stride * i + stride / 2``, and
kept in ``<run>/maps/step-NNNNNNN-sS/`` (written atomically, read as memory maps):

- ``feature.npy`` (n, h, w, D) float16, in the units of the training targets;
- ``rgb.npy`` (n, h, w, 3) uint8; ``depth.npy`` (n, h, w) float32, world distance along the ray
  (normalised scene units); ``opacity.npy`` (n, h, w) float16;
- ``meta.json``: step, stride, the per-frame map size and the cell ``geometry`` (as the teacher
  cache's: ``offset_x/y``, ``step_x/y`` in pixels), so :func:`n3f.pipeline.fit.sample_features`
  reads both kinds of map.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from n3f.errors import N3FError
from n3f.io import atomic_directory, atomic_write_json


@dataclass
class StudentMaps:
    """Rendered maps of every frame of a run (see the module docstring)."""

    folder: Path
    meta: dict

    @classmethod
    def open(cls, folder: Path) -> StudentMaps:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise N3FError(f"{folder} holds no rendered maps (no meta.json)")
        return cls(folder, json.loads(meta_path.read_text()))

    def array(self, name: str) -> np.ndarray:
        """``feature``, ``rgb``, ``depth`` or ``opacity`` as a read-only memory map."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")

    @property
    def geometry(self) -> dict:
        return self.meta["geometry"]

    @property
    def stride(self) -> int:
        return int(self.meta["stride"])


def map_pixels(width: int, height: int, stride: int) -> tuple[torch.Tensor, int, int]:
    """Pixel positions of a map: (h * w, 2) continuous coordinates (row-major), h, w."""
    w, h = max(width // stride, 1), max(height // stride, 1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    xy = torch.stack([xs * stride + stride / 2, ys * stride + stride / 2], -1).reshape(-1, 2)
    return xy, h, w


def student_maps(trainer, stride: int = 4, progress: Callable | None = None) -> StudentMaps:
    """Open the run's maps at its current step, rendering them first if they are missing.

    Args:
        trainer: a loaded run (:func:`n3f.pipeline.fit.load_run`).
        stride: render every ``stride``-th pixel in each direction.
        progress: ``track(iterable, desc, total)`` for a progress bar.

    Returns:
        The maps of all frames of the scene, in scene order.
    """
    if stride < 1:
        raise N3FError(f"the map stride must be >= 1, got {stride}")
    scene = trainer.scene
    folder = trainer.run_dir / "maps" / f"step-{trainer.step:07d}-s{stride}"
    if (folder / "meta.json").is_file():
        return StudentMaps.open(folder)
    sizes = {(f.width, f.height) for f in scene.frames}
    if len(sizes) != 1:
        raise N3FError("rendered maps need every frame at one size; downscale or resize the scene")
    W, H = sizes.pop()
    xy, h, w = map_pixels(W, H, stride)
    n, D = len(scene.frames), trainer.model.config.feature_dim
    feature = np.zeros((n, h, w, D), np.float16)
    rgb = np.zeros((n, h, w, 3), np.uint8)
    depth = np.zeros((n, h, w), np.float32)
    opacity = np.zeros((n, h, w), np.float16)
    ids = range(n)
    for i in progress(ids, "rendering maps", n) if progress else ids:
        r = trainer.render_pixels(scene.frames[i], xy)
        feature[i] = r["feature"].reshape(h, w, D).numpy()
        rgb[i] = (r["rgb"].clamp(0, 1).reshape(h, w, 3).numpy() * 255 + 0.5).astype(np.uint8)
        depth[i] = r["depth"].reshape(h, w).numpy()
        opacity[i] = r["opacity"].reshape(h, w).numpy()
    meta = {
        "step": trainer.step,
        "stride": stride,
        "size": [h, w],
        "frame_size": [H, W],
        "geometry": {"offset_x": stride / 2, "offset_y": stride / 2, "step_x": float(stride), "step_y": float(stride)},
        "frames": [f.name for f in scene.frames],
    }
    try:
        with atomic_directory(folder) as tmp:
            for name, arr in (("feature", feature), ("rgb", rgb), ("depth", depth), ("opacity", opacity)):
                np.save(tmp / f"{name}.npy", arr)
            atomic_write_json(tmp / "meta.json", meta)
    except N3FError:
        if not (folder / "meta.json").is_file():  # not a concurrent writer that finished first
            raise
    return StudentMaps.open(folder)


def upsample_map(values: np.ndarray, geometry: dict, width: int, height: int) -> np.ndarray:
    """Bilinearly resample a per-cell map (h, w) or (h, w, C) to every pixel of a (height, width) frame."""
    from n3f.pipeline.fit import sample_features
    from n3f.render.rays import pixel_grid

    v = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    squeeze = v.dim() == 2
    if squeeze:
        v = v[..., None]
    xy = pixel_grid(width, height)
    out = sample_features(v[None], torch.zeros(len(xy), dtype=torch.long), xy, geometry).reshape(height, width, -1).numpy()
    return out[..., 0] if squeeze else out
