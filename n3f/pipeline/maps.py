"""Per-frame maps rendered by a fitted student, cached in its run folder.

Queries, evaluation and export need the student's features (and depth, opacity, colour) in every
frame; rendering them costs far more than using them, so they are rendered once per checkpoint at
1/``stride`` of the frame resolution, at the pixel positions ``x = stride * i + stride / 2``, and
kept in ``<run>/maps/step-NNNNNNN-sS/`` (written atomically, read as memory maps):

- ``feature.npy`` (n, h, w, D) float16, in the units of the training targets;
- ``rgb.npy`` (n, h, w, 3) uint8; ``depth.npy`` (n, h, w) float32, world distance along the ray
  (normalised scene units); ``opacity.npy`` (n, h, w) float16;
- ``meta.json``: step, stride, composite, the per-frame map size and the cell ``geometry`` (as the
  teacher cache's: ``offset_x/y``, ``step_x/y`` in pixels), so
  :func:`n3f.pipeline.fit.sample_features` reads both kinds of map.

Features and depth come from one of two composites (``composite``):

- ``surface`` (default): only the samples within a few marching steps of each ray's most visible
  surface (:func:`n3f.render.volume.surface_composite`). A short CPU fit keeps a thin fog in free
  space and floaters by the cameras; volume rendering mixes them into every pixel (on the demo at
  1,000 steps the expected depth lies within 5% of the truth at 1% of pixels, the surface depth at
  33%), so the surface composite is what queries, retrieval and the point cloud should see.
- ``volume``: N3F's volume-rendered features and expected depth.

Colour and opacity are always the volume composites (what the student renders). Surface maps live
in ``step-NNNNNNN-sS-surface/``.

A run folder that cannot be written (a read-only mount, a colleague's run) is still queried: maps it
already holds are used, and missing ones are cached under ``$XDG_CACHE_HOME/n3f/maps/<run hash>/``
(default ``~/.cache``) instead, with a warning.

``streams`` (runs fitted with transient streams, ``n3f fit --dynamic``): ``static`` (default) maps
the static field alone, so moving things and the camera wearer's hands leave no trace in queries,
retrieval or point clouds; ``all`` renders every stream with each frame's embeddings (folder suffix
``-all``), to find things that move too.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from n3f.errors import N3FError
from n3f.io import atomic_directory, atomic_write_json, is_writable

COMPOSITES = ("surface", "volume")
SURFACE_WINDOW_STEPS = 8  # half-width of the surface window, in marching steps


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

    @property
    def composite(self) -> str:
        return self.meta.get("composite", "volume")

    @property
    def streams(self) -> str:
        return self.meta.get("streams", "static")


def render_map_pixels(
    trainer, frame, xy: torch.Tensor, composite: str = "surface", features: bool = True, streams: str = "static"
) -> dict[str, torch.Tensor]:
    """Render pixels ``xy`` (N, 2) of a frame as the maps do: ``feature`` (N, D) and ``depth`` (N,)
    from the chosen composite and streams (see the module docstring), ``rgb`` (N, 3) and ``opacity`` (N,)."""
    if composite not in COMPOSITES:
        raise N3FError(f"unknown composite {composite!r}; use one of {', '.join(COMPOSITES)}")
    if composite == "volume":
        return trainer.render_pixels(frame, xy, features=features, streams=streams)
    r = trainer.render_pixels(frame, xy, features=features, surface_window=SURFACE_WINDOW_STEPS * trainer.step_size, streams=streams)
    out = {"rgb": r["rgb"], "opacity": r["opacity"], "depth": r["surface/depth"]}
    if features:
        out["feature"] = r["surface/feature"]
    return out


def map_pixels(width: int, height: int, stride: int) -> tuple[torch.Tensor, int, int]:
    """Pixel positions of a map: (h * w, 2) continuous coordinates (row-major), h, w."""
    w, h = max(width // stride, 1), max(height // stride, 1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    xy = torch.stack([xs * stride + stride / 2, ys * stride + stride / 2], -1).reshape(-1, 2)
    return xy, h, w


def student_maps(
    trainer, stride: int = 4, progress: Callable | None = None, composite: str = "surface", streams: str = "static"
) -> StudentMaps:
    """Open the run's maps at its current step, rendering them first if they are missing.

    Args:
        trainer: a loaded run (:func:`n3f.pipeline.fit.load_run`).
        stride: render every ``stride``-th pixel in each direction.
        progress: ``track(iterable, desc, total)`` for a progress bar.
        composite: ``surface`` or ``volume`` features and depth (see the module docstring).
        streams: ``static`` or ``all`` (runs with transient streams; see the module docstring).

    Returns:
        The maps of all frames of the scene, in scene order.
    """
    if stride < 1:
        raise N3FError(f"the map stride must be >= 1, got {stride}")
    scene = trainer.scene
    if composite not in COMPOSITES:
        raise N3FError(f"unknown composite {composite!r}; use one of {', '.join(COMPOSITES)}")
    suffix = ("-surface" if composite == "surface" else "") + ("-all" if streams == "all" else "")
    if streams != "static":
        trainer.render_pixels(scene.frames[0], torch.zeros(0, 2), streams=streams)  # checks the choice before any work
    name = f"step-{trainer.step:07d}-s{stride}{suffix}"
    folder = trainer.run_dir / "maps" / name
    if (folder / "meta.json").is_file():
        return StudentMaps.open(folder)
    if not is_writable(trainer.run_dir / "maps"):
        folder = maps_fallback_root(trainer.run_dir) / name
        if (folder / "meta.json").is_file():
            return StudentMaps.open(folder)
        print(f"n3f: warning: {trainer.run_dir} cannot be written; caching its maps in {folder.parent}", file=sys.stderr)
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
        r = render_map_pixels(trainer, scene.frames[i], xy, composite, streams=streams)
        feature[i] = r["feature"].reshape(h, w, D).numpy()
        rgb[i] = (r["rgb"].clamp(0, 1).reshape(h, w, 3).numpy() * 255 + 0.5).astype(np.uint8)
        depth[i] = r["depth"].reshape(h, w).numpy()
        opacity[i] = r["opacity"].reshape(h, w).numpy()
    meta = {
        "step": trainer.step,
        "stride": stride,
        "composite": composite,
        "streams": streams,
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


def maps_fallback_root(run_dir: Path) -> Path:
    """Where the maps of a run folder that cannot be written are cached: one folder per run path."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return base / "n3f" / "maps" / key


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
