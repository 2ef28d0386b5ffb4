"""How well a fit separates a dynamic scene into static, dynamic and actor streams.

On a scene whose masks say which pixels move (``scene.metadata["dynamic"]``, as
``demo/kitchen_dynamic`` has; see :func:`n3f.scene.dynamic.stream_labels`):

- ``static_pixel_psnr``: PSNR of the static field's render against the frame on the pixels that
  show the static world. Moving things are not in it, so a static-only student that smeared them
  into its geometry or colour loses here.
- for runs with transient streams, per stream: the IoU of the pixels the stream claims
  (``share/<stream> > 0.5`` in the render of all streams) with the pixels that truly belong to it,
  on held-out frames (embeddings interpolated in time) and on training frames (learned embeddings);
- ``moving_claimed_by``: which stream claims the moving objects' pixels (share of them each stream
  holds above one half, and the transient streams together). The actor stream, a field in camera
  coordinates with a free per-frame embedding, can paint a moving object as a floater in front
  of the camera: the dynamic IoU alone would not show that the object is out of the static field.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from n3f.errors import N3FError


def _pixel_centres(width: int, height: int, stride: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Pixel centres of every ``stride``-th pixel: (N, 2) positions and the row and column indices."""
    rows, cols = np.arange(0, height, stride), np.arange(0, width, stride)
    ys, xs = np.meshgrid(rows, cols, indexing="ij")
    xy = torch.from_numpy(np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) + 0.5)
    return xy, rows, cols


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else math.nan


def evaluate_streams(trainer, held: list[int], train: list[int] | None = None, stride: int = 2, progress=None) -> dict:
    """Score the stream separation of a fitted run (see the module docstring).

    Args:
        trainer: a loaded run on a scene with ``metadata["dynamic"]`` and masks.
        held, train: scene indices of the held-out and training frames to score; ``train`` None:
            as many training frames as ``held`` has, spread evenly over the training split.
        stride: score every ``stride``-th pixel in each direction (renders cost the most).
        progress: ``track(iterable, desc, total)`` for a progress bar.

    Returns:
        ``{"static_pixel_psnr": dB on held-out static pixels, "frames": {...}, "iou": {"held_out":
        {"dynamic", "actor", "transient"}, "train": {...}}, "moving_claimed_by": {"held_out":
        {"dynamic", "actor", "transient"}, "train": {...}}}``; ``iou`` and ``moving_claimed_by``
        only for runs with transient streams. Both pool the pixels of all frames of a split.

    Raises:
        N3FError: the scene has no stream metadata or no masks.
    """
    from n3f.scene.dynamic import ACTOR, DYNAMIC, STATIC, stream_labels
    from n3f.scene.images import load_frame_image, load_frame_mask

    scene = trainer.scene
    if train is None:
        split = scene.split_indices("train")
        train = split[:: max(len(split) // max(len(held), 1), 1)][: len(held)]
    dynamic = scene.metadata.get("dynamic")
    if not dynamic:
        raise N3FError(f"scene {scene.name} says nothing about what moves (no 'dynamic' record), so streams cannot be scored")
    with_streams = trainer.transient is not None
    work = [("held_out", i) for i in held] + ([("train", i) for i in train] if with_streams else [])
    sq_err, n_static = 0.0, 0
    pools: dict[str, dict[str, list]] = {"held_out": {}, "train": {}}
    moving: dict[str, dict[str, list]] = {"held_out": {}, "train": {}}
    for split, i in progress(work, "scoring streams", len(work)) if progress else work:
        frame = scene.frames[i]
        mask = load_frame_mask(frame)
        if mask is None:
            raise N3FError(f"frame {frame.image_path.name} of {scene.name} has no mask; streams cannot be scored")
        xy, rows, cols = _pixel_centres(frame.width, frame.height, stride)
        labels = stream_labels(mask, dynamic)[np.ix_(rows, cols)].reshape(-1)
        if split == "held_out":
            truth = load_frame_image(frame)[np.ix_(rows, cols)].reshape(-1, 3)
            rgb = trainer.render_pixels(frame, xy, features=False)["rgb"].clamp(0, 1).numpy()
            static = labels == STATIC
            sq_err += float(((rgb[static] - truth[static]) ** 2).sum())
            n_static += int(static.sum()) * 3
        if with_streams:
            r = trainer.render_pixels(frame, xy, features=False, streams="all")
            claims = {"dynamic": r["share/dynamic"].numpy() > 0.5, "actor": r["share/actor"].numpy() > 0.5}
            claims["transient"] = (r["share/dynamic"] + r["share/actor"]).numpy() > 0.5
            truths = {"dynamic": labels == DYNAMIC, "actor": labels == ACTOR, "transient": labels != STATIC}
            for name in claims:
                pools[split].setdefault(name, []).append((claims[name], truths[name]))
                moving[split].setdefault(name, []).append(claims[name][truths["dynamic"]])
    result: dict = {
        "static_pixel_psnr": -10 * math.log10(max(sq_err / max(n_static, 1), 1e-10)),
        "frames": {"held_out": held, "train": train if with_streams else []},
        "stride": stride,
    }
    if with_streams:
        result["iou"] = {
            split: {name: _iou(np.concatenate([c for c, _ in pairs]), np.concatenate([t for _, t in pairs])) for name, pairs in per.items()}
            for split, per in pools.items()
            if per
        }
        result["moving_claimed_by"] = {
            split: {name: _share(np.concatenate(parts)) for name, parts in per.items()} for split, per in moving.items() if per
        }
    return result


def _share(claimed: np.ndarray) -> float:
    return float(claimed.mean()) if len(claimed) else math.nan
