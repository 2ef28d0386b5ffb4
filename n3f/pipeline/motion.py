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
"""

from __future__ import annotations

import numpy as np


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
    offsets: tuple[int, ...] = (-24, -16, -8, 8, 16, 24),
    occlusion_tolerance: float = 0.05,
    min_views: int = 2,
    quantile: float = 0.0,
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

    Returns:
        Per frame an (H, W) float32 map: the ``quantile`` over the neighbours that see the pixel's
        point of the mean absolute RGB difference, in [0, 1]; NaN where fewer than ``min_views``
        see it.
    """
    depths = [((p - f.c2w[:3, 3]) @ f.c2w[:3, 2]).astype(np.float32) for f, p in zip(frames, points)]
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
            uv, z = frames[j].project(world)
            u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
            inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
            diff = np.full(len(world), np.nan, dtype=np.float32)
            uu, vv = u[inside], v[inside]
            seen = depths[j][vv, uu] >= z[inside] * (1 - occlusion_tolerance)
            rows = np.flatnonzero(inside)[seen]
            diff[rows] = np.abs(images[j][vv[seen], uu[seen]] - colour[rows]).mean(-1)
            diffs.append(diff)
        score = np.full(len(world), np.nan, dtype=np.float32)
        if diffs:
            stack = np.stack(diffs)
            enough = np.sum(~np.isnan(stack), 0) >= min_views
            if enough.any():
                score[enough] = np.nanquantile(stack[:, enough], quantile, axis=0, method="lower")
        scores.append(score.reshape(H, W))
    return scores
