"""Render rays through any field: march, evaluate, composite.

A field here is any callable ``field(points (N, 3), dirs (N, 3)) -> {"sigma": (N,), name: (N, C)...}``;
every channel other than ``sigma`` is composited.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from n3f.render.sampling import OccupancyGrid, march
from n3f.render.volume import composite, render_weight_from_density


def render_rays(
    field: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    origins: torch.Tensor,
    dirs: torch.Tensor,
    space,
    grid: OccupancyGrid | None,
    step: float,
    jitter: torch.Tensor | None = None,
    detach_weights: tuple[str, ...] = (),
    background: dict[str, torch.Tensor] | None = None,
    density_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    min_transmittance: float = 1e-4,
    return_samples: bool = False,
) -> dict[str, torch.Tensor]:
    """Render world rays.

    Args:
        field: the field (see module docstring).
        origins, dirs: (n_rays, 3) world rays with unit directions.
        space: a space from :mod:`n3f.render.spaces` (box or NDC).
        grid: occupancy grid in that space, or None.
        step: marching step in space units.
        jitter: (n_rays,) offsets in [0, 1) for stratified training samples.
        detach_weights: channels composited with detached weights.
        background: per-channel background values.
        density_fn: optional ``points -> sigma``; when given, a first pass without gradients drops
            samples hidden behind opaque surfaces (transmittance < ``min_transmittance``) or
            transparent (alpha < 1e-6) before the full field runs (nerfacc's visibility pruning).

    Returns:
        Composited channels (n_rays, C), ``opacity`` and ``depth`` (world distance along the ray),
        and ``n_samples`` (a 0-d tensor). With ``return_samples``, also the packed samples under
        ``samples``: a dict of ``weights``, ``t_starts``, ``t_ends`` and ``ray_indices`` (n,).
    """
    o, d, t_max = space.to_space(origins, dirs)
    ray_indices, t_starts, t_ends = march(o, d, grid, space.aabb.to(o), step, far=float(t_max.max()) if len(t_max) else 1e10, jitter=jitter)
    if len(ray_indices):
        keep = t_starts < t_max[ray_indices]
        ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
    n_rays = len(origins)
    if density_fn is not None and len(ray_indices):
        with torch.no_grad():
            mids = (t_starts + t_ends) / 2
            sigma = density_fn(o[ray_indices] + mids[:, None] * d[ray_indices])
            _, trans, alphas = render_weight_from_density(t_starts, t_ends, sigma, ray_indices)
            keep = (trans > min_transmittance) & (alphas > 1e-6)
        ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
    t_mids = (t_starts + t_ends) / 2
    points = o[ray_indices] + t_mids[:, None] * d[ray_indices]
    values = field(points, dirs[ray_indices])
    weights, _, _ = render_weight_from_density(t_starts, t_ends, values.pop("sigma"), ray_indices)
    out = composite(weights, values, t_mids, ray_indices, n_rays, background=background, detach_weights=detach_weights)
    out["depth"] = space.world_depth(origins, dirs, out["depth"][:, 0])[:, None]
    out["n_samples"] = torch.tensor(len(ray_indices))
    if return_samples:
        out["samples"] = {"weights": weights, "t_starts": t_starts, "t_ends": t_ends, "ray_indices": ray_indices}
    return out
