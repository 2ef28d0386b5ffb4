"""Scene normalisation, splits and downscaling: the transforms every reader applies once."""

from __future__ import annotations

import dataclasses

import numpy as np

from n3f.scene.types import Frame, Scene


def similarity_matrix(scale: float, centre: np.ndarray) -> np.ndarray:
    """Return the (4, 4) map ``x -> scale * (x - centre)``."""
    T = np.eye(4)
    T[:3, :3] *= scale
    T[:3, 3] = -scale * np.asarray(centre, dtype=np.float64)
    return T


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine map to (N, 3) points; returns (N, 3)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return points @ T[:3, :3].T + T[:3, 3]


def _box_corners(box: np.ndarray) -> np.ndarray:
    lo, hi = np.asarray(box, dtype=np.float64).reshape(2, 3)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def content_points(scene: Scene, content_box: np.ndarray | None = None) -> np.ndarray:
    """Points that the normalised box must hold, in the scene's current world.

    Camera centres always; then the first available of: the corners of a known content box, the
    1st-99th percentile box of the sparse points, or the points at each camera's near and far
    bounds along its optical axis.

    Returns:
        (M, 3) float64 points.
    """
    centres = np.stack([f.camera_centre for f in scene.frames])
    extra: list[np.ndarray] = []
    if content_box is not None:
        extra.append(_box_corners(content_box))
    elif scene.points is not None and len(scene.points) >= 10:
        lo, hi = np.percentile(scene.points, [1, 99], axis=0)
        extra.append(_box_corners(np.stack([lo, hi])))
    else:
        for f in scene.frames:
            for depth in (f.near, f.far):
                if depth is not None:
                    extra.append(f.camera_centre[None] + depth * f.c2w[:3, 2][None])
    return np.concatenate([centres, *extra], axis=0)


def normalise_scene(scene: Scene, content_box: np.ndarray | None = None) -> Scene:
    """Centre and scale a scene so its cameras and content lie in the box [-1, 1]^3.

    The map is a similarity (uniform scale, translation; no rotation), so axis conventions and
    angles are untouched. Camera translations, near/far bounds, sparse points and the content box
    are carried over; ``Scene.normalisation`` records the map composed with any earlier one.

    Args:
        scene: a scene in its reader's original world (normalisation usually the identity).
        content_box: optional (2, 3) [min, max] box of the content in the same world.

    Returns:
        A new scene; the input is not modified.
    """
    pts = content_points(scene, content_box)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    half = float(np.max(hi - lo)) / 2
    scale = 1.0 / half if half > 0 else 1.0
    T = similarity_matrix(scale, centre)

    frames = []
    for f in scene.frames:
        c2w = f.c2w.copy()
        c2w[:3, 3] = transform_points(T, c2w[:3, 3])[0]
        frames.append(
            dataclasses.replace(
                f,
                c2w=c2w,
                depth_scale=f.depth_scale * scale,
                near=None if f.near is None else f.near * scale,
                far=None if f.far is None else f.far * scale,
            )
        )
    if content_box is not None:
        aabb = transform_points(T, np.asarray(content_box, dtype=np.float64).reshape(2, 3))
    elif scene.points is not None and len(scene.points) >= 10:
        aabb = transform_points(T, np.percentile(scene.points, [1, 99], axis=0))
    else:
        aabb = transform_points(T, np.stack([lo, hi]))
    aabb = np.clip(np.sort(aabb, axis=0), -1.0, 1.0)
    points = None if scene.points is None else transform_points(T, scene.points)
    return scene.replace(frames=frames, aabb=aabb, normalisation=T @ scene.normalisation, points=points)


def holdout_every(n_frames: int, every: int = 8) -> list[str]:
    """The default split rule (LLFF's ``llffhold``): frames 0, every, 2*every... are ``test``.

    Returns:
        A split name per frame.
    """
    if every <= 0:
        return ["train"] * n_frames
    return ["test" if i % every == 0 else "train" for i in range(n_frames)]


def downscale_scene(scene: Scene, factor: float) -> Scene:
    """Return the scene as seen at ``1/factor`` of its image size, with matching intrinsics.

    New sizes are ``round(size / factor)``; the intrinsics scale by the exact ratio of new to old
    size per axis (COLMAP pixel convention, so no half-pixel shift is needed).
    """
    if factor == 1:
        return scene
    if factor <= 0:
        raise ValueError(f"downscale factor must be positive, got {factor}")
    return scene.replace(frames=[downscale_frame(f, factor) for f in scene.frames])


def downscale_frame(frame: Frame, factor: float) -> Frame:
    """One frame at ``1/factor`` of its size; see :func:`downscale_scene`."""
    width = max(1, int(round(frame.width / factor)))
    height = max(1, int(round(frame.height / factor)))
    return resize_frame(frame, width, height)


def resize_frame(frame: Frame, width: int, height: int) -> Frame:
    """The frame at an exact new size, intrinsics scaled per axis by new/old size."""
    K = frame.K.copy()
    K[0] *= width / frame.width
    K[1] *= height / frame.height
    K[2] = [0.0, 0.0, 1.0]
    return dataclasses.replace(frame, K=K, width=width, height=height)
