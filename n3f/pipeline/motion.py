"""Moving pixels from multi-view colour consistency.

A pixel that sees a static surface shows that surface's colour in the other frames that see the
same point; a pixel on a moving object does not, because by the other frames' times the object
has moved (and a hand attached to the camera is somewhere else entirely). So: back-project each
pixel with a depth map (the static field's render, or exact depth), project the point into
neighbouring frames of the video, skip the frames where something nearer hides it, and take the
median colour difference over the frames that see it. Unlike a field's own rendering error, this
does not mistake texture the field has not learned yet for motion: the images themselves agree
on static texture.

The score is a map per frame; :func:`motion_scores` computes it, and
``tools/measure_motion.py`` scores it against exact masks.

In a three-stream fit (``FitConfig.motion_after``) :func:`detect_moving_pixels` scores the
training frames with the static field's own depth and :class:`MovingPixels` keeps the result: a
share of each step's rays is drawn from the flagged pixels (the transient streams see the moving
object often enough to learn it) and the flagged pixels give the static field no gradient (it
cannot take the moving object in). The depth is the static field's *surface* depth (the mode of
each ray's weights, not the mean: fog in front of a half-learned wall drags the mean far off) and
pixels whose surface holds under half of the ray's weight go unscored. Both sets of flags keep
blobs and drop lines (:func:`keep_blobs`): a depth a cell off at an object's outline flags a thin
line along it, a moving object a blob.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def neighbour_offsets(span: int, step: int) -> tuple[int, ...]:
    """The neighbours a frame is compared with, as positions in the video relative to it: every
    ``step``-th frame up to ``span`` frames before and after it (``span >= step >= 1``)."""
    if not 1 <= step <= span:
        raise ValueError(f"neighbour offsets need 1 <= step <= span (got step {step}, span {span})")
    after = tuple(range(step, span + 1, step))
    return tuple(-k for k in reversed(after)) + after


DETECTOR_OFFSETS = neighbour_offsets(24, 8)  # (-24, -16, -8, 8, 16, 24)
MIN_SURFACE_SHARE = 0.5  # pixels whose static surface holds less of the ray's weight are unscored
ACTOR_COVERS = 0.5  # actor-stream opacity above which a cell is the hand's: it hides what lies behind
CAMERA_FIXED_OFFSETS = (-2, -1, 1, 2)  # the frames a camera-fixed cell looks the same in (video order)
OCCLUSION_TOLERANCE = 0.05  # a nearer surface hides a point when nearer by more than this share of its depth


def points_from_depth(frame, depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) world points of a frame's pixel centres at z-depth ``depth`` (H, W), the frame
    at the depth map's size."""
    H, W = depth.shape
    jj, ii = np.mgrid[0:H, 0:W]
    return frame.unproject(np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1), depth.ravel()).reshape(H, W, 3)


def motion_scores(
    frames: list,
    images: list[np.ndarray],
    points: list[np.ndarray],
    offsets: tuple[int, ...] = DETECTOR_OFFSETS,
    occlusion_tolerance: float = OCCLUSION_TOLERANCE,
    min_views: int = 2,
    quantile: float = 0.0,
    search_radius: int = 0,
    hidden: list[np.ndarray] | None = None,
    far_tolerance: float = 0.0,
) -> list[np.ndarray]:
    """Per-pixel colour inconsistency of each frame with its neighbours in the video.

    Args:
        frames: the frames, in video order (``Frame`` with ``K``, ``c2w``, ``project``), at the
            size of ``images`` and ``points``.
        images: per frame (H, W, 3) float RGB in [0, 1].
        points: per frame (H, W, 3) world points of the static surface each pixel sees (from the
            static field's depth, or exact depth of the static scene), normalised world units.
        offsets: which neighbours each frame is compared with, as positions in ``frames``.
        occlusion_tolerance: a neighbour sees the point when its own surface at the projection is
            not nearer than the point by more than this share of the point's depth.
        min_views: fewest neighbours that must see a pixel's point for it to be scored.
        quantile: which quantile of the neighbours' differences is the score: 0 (the best
            agreeing neighbour; a static point needs one frame that shows it unoccluded, a moving
            one disagrees with all) up to 0.5 (the median).
        search_radius: compare with the best-matching pixel within this many pixels of the
            projection in each neighbour (0: the projection's pixel alone). Forgives a depth a pixel
            or so off, which at object outlines lands on the other side of the edge; an object that
            moved further than this still disagrees.
        hidden: optional per frame (H, W) bool maps of pixels something outside the static scene
            covers (the actor stream's hand): a neighbour whose projection lands there does not
            see the point, as if a nearer surface hid it.
        far_tolerance: when above 0, a neighbour whose own surface at the projection lies
            *farther* than the point by more than this share of its depth does not count either:
            the two depth maps disagree about the point (it floats in front of what the neighbour
            sees; a fitted depth that is off at an object's outline lands there), so the colours
            compared would belong to different surfaces. Multi-view stereo's geometric consistency
            check. 0: only nearer surfaces count against a neighbour. On demo/kitchen_dynamic 0.05
            made the flags of the exact static depth purer (0.85 of them the sponge against 0.77)
            but not those of a fitted static field's depth, whose errors the neighbours' depths
            share (README, "A sharper static surface"); the fit does not use it.

    Returns:
        Per frame an (H, W) float32 map: the ``quantile`` over the neighbours that see the pixel's
        point of the mean absolute RGB difference, in [0, 1]; NaN where fewer than ``min_views``
        see it.
    """
    depths = z_depths(frames, points)
    scores = []
    for i in range(len(frames)):
        H, W = depths[i].shape
        world = points[i].reshape(-1, 3)
        colour = images[i].reshape(-1, 3)
        diffs = []
        for k in offsets:
            j = i + k
            if not 0 <= j < len(frames):
                continue
            rows, uu, vv = seen_in(frames[j], depths[j], world, None if hidden is None else hidden[j], occlusion_tolerance, far_tolerance)
            diff = np.full(len(world), np.nan, dtype=np.float32)
            diff[rows] = np.inf
            for dy in range(-search_radius, search_radius + 1):
                for dx in range(-search_radius, search_radius + 1):
                    near = images[j][np.clip(vv + dy, 0, H - 1), np.clip(uu + dx, 0, W - 1)]
                    diff[rows] = np.minimum(diff[rows], np.abs(near - colour[rows]).mean(-1))
            diffs.append(diff)
        score = np.full(len(world), np.nan, dtype=np.float32)
        if diffs:
            stack = np.stack(diffs)
            enough = np.sum(~np.isnan(stack), 0) >= min_views
            if enough.any():
                score[enough] = np.nanquantile(stack[:, enough], quantile, axis=0, method="lower")
        scores.append(score.reshape(H, W))
    return scores


def z_depths(frames: list, points: list[np.ndarray]) -> list[np.ndarray]:
    """Per frame the (H, W) float32 z-depth (along the camera's viewing axis) of its (H, W, 3) world
    ``points``."""
    return [((p - f.c2w[:3, 3]) @ f.c2w[:3, 2]).astype(np.float32) for f, p in zip(frames, points)]


def seen_in(frame, depth: np.ndarray, world: np.ndarray, hidden: np.ndarray | None, occlusion_tolerance: float, far_tolerance: float = 0.0):
    """Which of the (n, 3) ``world`` points ``frame`` sees (inside it, in front, not behind its
    own surface of z-depth ``depth`` (H, W) by more than ``occlusion_tolerance`` of the point's
    depth, not where ``hidden`` (H, W) bool; with ``far_tolerance`` above 0, not in front of that
    surface by more than that share either): their indices and the columns and rows they land on."""
    H, W = depth.shape
    uv, z = frame.project(world)
    u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
    uu, vv = u[inside], v[inside]
    seen = depth[vv, uu] >= z[inside] * (1 - occlusion_tolerance)
    if far_tolerance > 0:
        seen &= depth[vv, uu] <= z[inside] * (1 + far_tolerance)
    if hidden is not None:
        seen &= ~hidden[vv, uu]
    return np.flatnonzero(inside)[seen], uu[seen], vv[seen]


def camera_fixed_cells(
    images: np.ndarray, order: list[int], threshold: float, offsets: tuple[int, ...] = CAMERA_FIXED_OFFSETS
) -> np.ndarray:
    """The cells that look fixed to the camera: whose colour stays within ``threshold`` of the same
    cell in every neighbouring frame of the video. A hand held in front of the camera sits at the
    same pixels from one frame to the next; a thing that moves in the world, and the static world
    itself, slide across the image as the camera moves.

    Args:
        images: (n, h, w, 3) float RGB in [0, 1], one per frame (any order).
        order: the frames' indices into ``images`` in video order.
        threshold: mean absolute RGB difference (0-1 units).
        offsets: the neighbours compared, as positions in ``order`` relative to each frame.

    Returns:
        (n, h, w) bool, in the order of ``images``: True where the largest difference over the
        neighbours that exist is at most ``threshold`` (True everywhere in a frame without one).
    """
    fixed = np.ones(images.shape[:3], dtype=bool)
    for pos, i in enumerate(order):
        for k in offsets:
            if 0 <= pos + k < len(order):
                fixed[i] &= np.abs(images[i] - images[order[pos + k]]).mean(-1) <= threshold
    return fixed


def rows_in_video_order(trainer) -> list[int]:
    """A fit's training rows (indices into ``trainer.train_ids``) sorted by their frames' time."""
    return sorted(range(len(trainer.train_ids)), key=lambda r: trainer.scene.frames[trainer.train_ids[r]].time)


def cell_images(images: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(n, H, W, 3) uint8 images -> (n, h, w, 3) float32 RGB in [0, 1], each area-averaged over
    the cells of an h x w grid."""
    import torch.nn.functional as F

    return np.stack(
        [F.interpolate(i.permute(2, 0, 1)[None].float() / 255, size=(h, w), mode="area")[0].permute(1, 2, 0).numpy() for i in images]
    )


class MovingPixels(nn.Module):
    """The training pixels a detector flagged as moving, on a grid of ``stride`` x ``stride``
    pixel cells: draws training pixels among them, and says which rays the static field must not
    learn from. A module with buffers, kept on the CPU beside the random generator, so checkpoints
    carry it and a resumed fit draws the same pixels.

    Args:
        n_frames: training frames (rows of the training data); height, width: their size in pixels.
        stride: cell side in pixels.
    """

    def __init__(self, n_frames: int, height: int, width: int, stride: int):
        super().__init__()
        if stride < 1:
            raise ValueError(f"moving pixels need stride >= 1 (got {stride})")
        self.height, self.width, self.stride = int(height), int(width), int(stride)
        cells = (n_frames, math.ceil(height / stride), math.ceil(width / stride))
        self.register_buffer("sample", torch.zeros(cells, dtype=torch.bool))  # cells rays are drawn from
        self.register_buffer("gate", torch.zeros(cells, dtype=torch.bool))  # cells the static field skips
        self.register_buffer("detected_at", torch.tensor(-1))  # step of the last detection; -1: none yet
        # Cells the actor may hold when the share loss charges a flag (see ``camera_fixed_cells``):
        # worked out from the images alone, so not kept in checkpoints.
        self.register_buffer("camera_fixed", torch.ones(cells, dtype=torch.bool), persistent=False)

    def set(self, sample: torch.Tensor, gate: torch.Tensor, step: int) -> None:
        """Replace the flags with (n_frames, h, w) bool cell maps ``sample`` and ``gate``, detected
        at training step ``step``."""
        self.sample.copy_(sample)
        self.gate.copy_(gate)
        self.detected_at.fill_(step)

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``n`` training pixels drawn uniformly among the ``sample`` cells (a cell, then a pixel in
        it): frame rows, px, py (n,) int64; None when no cell is flagged."""
        from n3f.pipeline.error_map import draw_in_tiles

        if n <= 0 or not bool(self.sample.any()):
            return None
        return draw_in_tiles(self.sample, self.stride, self.height, self.width, n, generator)

    def gated(self, frame: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        """(n,) bool: the pixels (frame rows, columns, rows; (n,) int64) that lie in ``gate`` cells."""
        return self._lookup(self.gate, frame, px, py)

    def sampled(self, frame: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        """(n,) bool: the pixels (as :meth:`gated`) that lie in ``sample`` cells, the surest flags."""
        return self._lookup(self.sample, frame, px, py)

    def actor_may_hold(self, frame: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        """(n,) bool: the pixels (as :meth:`gated`) in cells that look fixed to the camera."""
        return self._lookup(self.camera_fixed, frame, px, py)

    def _lookup(self, cells: torch.Tensor, frame: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        s = self.stride
        return cells[frame.cpu(), py.cpu() // s, px.cpu() // s]


@torch.no_grad()
def render_cells(trainer, stride: int, progress=None) -> dict:
    """What the detector sees of a three-stream fit's training frames, on a grid of ``stride`` x
    ``stride`` pixel cells: each frame rendered at the cells' centres by the static field alone
    (its surface depth gives each cell's world point) and by the actor stream alone (its opacity).

    Args:
        trainer: a :class:`n3f.pipeline.fit.Trainer` with transient streams.
        stride: cell side in training pixels.
        progress: optional ``progress(iterable, description, total)`` wrapper.

    Returns:
        A dict: ``rows`` the training rows in video order (by ``time``); in that order, ``frames``
        (the frames resized to the grid), ``images`` (h, w, 3) float RGB area-averaged over each
        cell, ``points`` (h, w, 3) world points of the static surface, ``static_rgb`` (h, w, 3) the
        static field's colour at the cells' centres (over black); in training-row order,
        ``surface`` (n_train_rows, h, w) float32, the share of each ray's weight the surface holds,
        and ``actor`` the same shape, the actor stream's opacity. ``h, w = ceil(H / stride),
        ceil(W / stride)``.
    """
    from n3f.pipeline.maps import SURFACE_WINDOW_STEPS
    from n3f.render.rays import pixel_rays
    from n3f.scene.normalise import resize_frame

    H, W = trainer.data.images.shape[1:3]
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    rows = rows_in_video_order(trainer)
    jj, ii = np.mgrid[0:h, 0:w]
    xy = torch.tensor(np.stack([(ii.ravel() + 0.5) * W / w, (jj.ravel() + 0.5) * H / h], 1), dtype=torch.float32)
    frames, images, points, static_rgb = [], [], [], []
    surface = np.zeros((len(rows), h, w), dtype=np.float32)
    actor = np.zeros_like(surface)
    for r in progress(rows, "detecting moving pixels", len(rows)) if progress else rows:
        full = trainer.scene.frames[trainer.train_ids[r]]
        alone = trainer.render_pixels(full, xy, features=False, surface_window=SURFACE_WINDOW_STEPS * trainer.step_size)
        o, d = pixel_rays(torch.tensor(full.K), torch.tensor(full.c2w), xy)
        points.append((o + alone["surface/depth"][:, None] * d).numpy().reshape(h, w, 3))
        static_rgb.append(alone["rgb"].numpy().reshape(h, w, 3))
        surface[r] = alone["surface/share"].numpy().reshape(h, w)
        actor[r] = trainer.actor_opacity(full, xy).numpy().reshape(h, w)
        images.append(cell_images(trainer.data.images[trainer.train_ids[r]][None], h, w)[0])
        frames.append(resize_frame(full, w, h))
    return {
        "rows": rows,
        "frames": frames,
        "images": images,
        "points": points,
        "static_rgb": static_rgb,
        "surface": surface,
        "actor": actor,
    }


def score_cells(
    cells: dict,
    search_radii: tuple[int, ...] = (0,),
    quantile: float = 0.0,
    offsets: tuple[int, ...] = DETECTOR_OFFSETS,
    far_tolerance: float = 0.0,
) -> dict[int, np.ndarray]:
    """:func:`motion_scores` of :func:`render_cells`' output: frames compared in video order; a
    neighbour's cells the actor stream covers (opacity above ``ACTOR_COVERS``) do not count as
    seeing a point (the hand hides what lies behind it); cells whose surface holds
    ``MIN_SURFACE_SHARE`` of the ray's weight or less go unscored. ``far_tolerance``: that of
    :func:`motion_scores`.

    Returns:
        Per search radius an (n_train_rows, h, w) float32 array in training-row order, NaN where
        unscored.
    """
    rows, actor = cells["rows"], cells["actor"]
    hidden = list(actor[rows] > ACTOR_COVERS)
    scores = {}
    for radius in search_radii:
        scores[radius] = np.full(actor.shape, np.nan, dtype=np.float32)
        scores[radius][rows] = np.stack(
            motion_scores(
                cells["frames"],
                cells["images"],
                cells["points"],
                offsets,
                quantile=quantile,
                search_radius=radius,
                hidden=hidden,
                far_tolerance=far_tolerance,
            )
        )
        scores[radius][cells["surface"] <= MIN_SURFACE_SHARE] = np.nan
    return scores


def keep_blobs(flags: np.ndarray, radius: int) -> np.ndarray:
    """Drop thin flags and keep blobs: per frame, the flagged cells connected (8-neighbours) to
    what survives a morphological opening by a (2 * radius + 1)-cell square.

    A static surface whose depth is a cell off at an object's outline is flagged along the outline,
    a line one or two cells wide that the opening erases; a moving object is flagged as a blob
    that survives it, and the reconstruction gives back the blob's ragged edge.

    Args:
        flags: (n, h, w) bool cell maps; radius: the square's half side in cells (0: keep all).

    Returns:
        (n, h, w) bool, a subset of ``flags``.
    """
    from scipy.ndimage import binary_opening, binary_propagation

    if radius <= 0:
        return flags
    square = np.ones((2 * radius + 1,) * 2, dtype=bool)
    return np.stack([binary_propagation(binary_opening(f, square), structure=np.ones((3, 3), bool), mask=f) for f in flags])


def grow_flags(kept: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Hysteresis: grow flagged cells through the weakly flagged cells connected to them
    (8-neighbours), as Canny's edge linking does. A moving object that :func:`keep_blobs` found
    as a blob gets back the rest of its cells whose scores fall below the threshold.

    Args:
        kept: (n, h, w) bool cell maps, the sure flags; weak: (n, h, w) bool, cells above a lower
            threshold.

    Returns:
        (n, h, w) bool: ``kept`` and the cells of ``weak`` connected to it within each frame.
    """
    from scipy.ndimage import binary_propagation

    eight = np.ones((3, 3), bool)
    return np.stack([binary_propagation(k, structure=eight, mask=k | w) for k, w in zip(kept, weak)])


def flag_cells(
    scores: np.ndarray, threshold: float, opening: int = 0, grow_threshold: float = 0.0, allowed: np.ndarray | None = None
) -> np.ndarray:
    """The detector's flags from its scores: cells scoring above ``threshold``, kept by
    :func:`keep_blobs` (``opening``), then grown through the cells scoring above ``grow_threshold``
    (:func:`grow_flags`; 0: not grown), all within ``allowed``.

    Args:
        scores: (n, h, w) float cell scores, no NaN; threshold, grow_threshold: in the scores' units;
        opening: the ``radius`` of :func:`keep_blobs`; allowed: optional (n, h, w) bool, the cells
            that may be flagged (default: all).

    Returns:
        (n, h, w) bool flags.
    """
    allowed = np.ones(scores.shape, dtype=bool) if allowed is None else allowed
    flags = keep_blobs((scores > threshold) & allowed, opening)
    return grow_flags(flags, (scores > grow_threshold) & allowed) if grow_threshold > 0 else flags


def detect_moving_pixels(
    trainer,
    stride: int,
    threshold: float,
    gate_dilation: int = 1,
    sample_radius: int = 0,
    sample_opening: int = 0,
    gate_opening: int = 0,
    grow_threshold: float = 0.0,
    quantile: float = 0.0,
    progress=None,
    offsets: tuple[int, ...] = DETECTOR_OFFSETS,
    static_agrees: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Flag the moving pixels of a three-stream fit's training frames: the cells (:func:`render_cells`
    scored by :func:`score_cells`) whose score is above ``threshold``. Rays are drawn where the
    flag is surest (blobs, not lines: :func:`keep_blobs`; or scored with a search radius, which
    forgives depth errors at object outlines); the static field skips flagged cells and their
    neighbours.

    Args:
        trainer: a :class:`n3f.pipeline.fit.Trainer` with transient streams.
        stride: cell side in training pixels; threshold: score above which a cell moves (mean
            absolute RGB difference, 0-1 units).
        gate_dilation: cells the static field skips are the flagged ones grown by this many cells
            (a detector finds part of a moving object; its rest must not teach the static field).
        sample_radius: the ``search_radius`` of the scores that choose where rays are drawn.
        sample_opening, gate_opening: the ``radius`` of :func:`keep_blobs` applied to the flags
            rays are drawn from and to those the static field skips (before the dilation); 0: none.
        grow_threshold: when above 0 (and below ``threshold``), both sets of kept flags grow
            through the connected cells scoring above it (:func:`grow_flags`; before the gate's
            dilation).
        quantile: which neighbour's difference scores a cell (:func:`motion_scores`): 0 the
            best-agreeing one, 0.34 of six the second best.
        progress: optional ``progress(iterable, description, total)`` wrapper.
        offsets: the neighbours each frame is compared with (:func:`neighbour_offsets`).
        static_agrees: when above 0, cells whose colour the static field alone renders within this
            mean absolute RGB difference (0-1 units) of the image are not flagged: the static field
            already explains them, so their disagreement with the neighbours is a depth error, not
            motion. A moving object hides what the static field renders behind it and stays
            flagged. Applied to the kept blobs (after ``keep_blobs`` and the growth). 0: off.

    Returns:
        ``sample`` and ``gate``, (n_train_rows, ceil(H / stride), ceil(W / stride)) bool maps in
        training-row order: cells flagged by the ``sample_radius`` scores that the actor stream
        does not already hold (opacity ``ACTOR_COVERS`` or less), kept by ``keep_blobs(., sample_opening)``
        (rays are drawn there); and the cells flagged by the plain scores, kept by
        ``keep_blobs(., gate_opening)`` and grown by ``gate_dilation``; and a dict of counts.
    """
    from scipy.ndimage import binary_dilation

    cells = render_cells(trainer, stride, progress)
    scores, actor = score_cells(cells, tuple(sorted({0, sample_radius})), quantile, offsets), cells["actor"]
    plain, near = np.nan_to_num(scores[0], nan=0.0), np.nan_to_num(scores[sample_radius], nan=0.0)
    unexplained = np.ones(actor.shape, dtype=bool)
    if static_agrees > 0:
        residual = np.stack([np.abs(r - i).mean(-1) for r, i in zip(cells["static_rgb"], cells["images"])])
        unexplained[cells["rows"]] = residual > static_agrees
    # The veto comes after keep_blobs: taken before, it cuts holes in the moving object's blobs
    # and the opening then drops what is left of them.
    flagged = flag_cells(plain, threshold, gate_opening, grow_threshold) & unexplained
    gate = np.stack([binary_dilation(f, iterations=gate_dilation) for f in flagged]) if gate_dilation > 0 else flagged
    sample = flag_cells(near, threshold, sample_opening, grow_threshold, allowed=actor <= ACTOR_COVERS) & unexplained
    sample = torch.from_numpy(sample)
    counts = {
        "cells": sample.numel(),
        "sample_cells": int(sample.sum()),
        "gate_cells": int(gate.sum()),
        "explained_cells": int((~unexplained).sum()),
    }
    return sample, torch.from_numpy(gate), counts
