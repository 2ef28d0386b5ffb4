"""Render rays through any field: march, evaluate, composite.

A field here is any callable ``field(points (N, 3), dirs (N, 3)) -> {"sigma": (N,), name: (N, C)...}``;
every channel other than ``sigma`` is composited.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from n3f.render.sampling import OccupancyGrid
from n3f.render.volume import composite, decode_composited, render_weight_from_density, surface_composite


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
    min_alpha: float = 1e-6,
    return_samples: bool = False,
    surface_window: float | None = None,
    near_gradient_distance: float | None = None,
    near: float = 0.0,
    decoders: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Render world rays.

    Args:
        field: the field (see module docstring).
        origins, dirs: (n_rays, 3) world rays with unit directions.
        space: a space from :mod:`n3f.render.spaces` (box, NDC or contracted).
        grid: occupancy grid in that space, or None.
        step: marching step in space units (world units for the contracted space, where steps
            lengthen beyond its box).
        jitter: (n_rays,) offsets in [0, 1) for stratified training samples.
        detach_weights: channels composited with detached weights.
        background: per-channel background values.
        density_fn: optional ``points -> sigma``; when given, a first pass without gradients drops
            samples hidden behind opaque surfaces (transmittance < ``min_transmittance``) or
            transparent (alpha < ``min_alpha``) before the full field runs (nerfacc's visibility pruning).
        near_gradient_distance: when given, the gradients reaching the field from samples closer
            than this (space units) to the ray origin are scaled by ``(t / distance)^2``
            (Philip and Deschaintre, "Floaters No More", 2023): a point near a camera covers many
            of its pixels, so without the scaling it gets an outsized gradient and grows floaters.
        near: samples start this far along each ray (space units).
        surface_window: when given, also composite every channel near each ray's most visible
            surface only (see :func:`~n3f.render.volume.surface_composite`; window in space units):
            ``surface/<channel>``, ``surface/depth`` (world distance) and ``surface/share``.
        decoders: channel -> decoder, for channels the field returns as a code to be decoded
            once per ray after compositing (see :func:`~n3f.render.volume.decode_composited`);
            surface composites are decoded too.

    Returns:
        Composited channels (n_rays, C), ``opacity`` and ``depth`` (world distance along the ray),
        and ``n_samples`` (a 0-d tensor). With ``return_samples``, also the packed samples under
        ``samples``: a dict of ``weights``, ``t_starts``, ``t_ends`` and ``ray_indices`` (n,).
    """
    if decoders and background and set(decoders) & set(background):
        raise ValueError(f"decoded channels are composited over black; no background for {sorted(set(decoders) & set(background))}")
    o, d, t_max = space.to_space(origins, dirs)
    ray_indices, t_starts, t_ends = space.march(o, d, t_max, grid, step, near=near, jitter=jitter)
    n_rays = len(origins)
    if density_fn is not None and len(ray_indices):
        with torch.no_grad():
            mids = (t_starts + t_ends) / 2
            sigma = density_fn(space.points(o[ray_indices], d[ray_indices], mids))
            _, trans, alphas = render_weight_from_density(t_starts, t_ends, sigma, ray_indices)
            keep = (trans > min_transmittance) & (alphas > min_alpha)
        ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
    t_mids = (t_starts + t_ends) / 2
    points = space.points(o[ray_indices], d[ray_indices], t_mids)
    values = field(points, dirs[ray_indices])
    if near_gradient_distance is not None and torch.is_grad_enabled():
        scale = (t_mids / near_gradient_distance).square().clamp(max=1.0)
        values = {k: _scale_gradient(v, scale) for k, v in values.items()}
    weights, _, _ = render_weight_from_density(t_starts, t_ends, values.pop("sigma"), ray_indices)
    out = composite(weights, values, t_mids, ray_indices, n_rays, background=background, detach_weights=detach_weights)
    for name, decoder in (decoders or {}).items():
        if name in out:
            opacity = out["opacity"].detach() if name in detach_weights else out["opacity"]
            out[name] = decode_composited(out[name], opacity, decoder)
    if surface_window is not None:
        surface = surface_composite(
            weights.detach(), {k: v.detach() for k, v in values.items()}, t_mids, ray_indices, n_rays, surface_window
        )
        with torch.no_grad():  # surface composites carry no gradients
            for name, decoder in (decoders or {}).items():
                if name in surface:
                    surface[name] = decoder(surface[name])  # already normalised by the window's weight
        surface["depth"] = space.world_depth(origins, dirs, surface["depth"][:, 0])[:, None]
        out.update({f"surface/{k}": v for k, v in surface.items()})
    out["depth"] = space.world_depth(origins, dirs, out["depth"][:, 0])[:, None]
    out["n_samples"] = torch.tensor(len(ray_indices))
    if return_samples:
        out["samples"] = {"weights": weights, "t_starts": t_starts, "t_ends": t_ends, "ray_indices": ray_indices}
    return out


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies each sample's gradient by its scale."""

    @staticmethod
    def forward(ctx, values, scale):
        ctx.save_for_backward(scale)
        return values.view_as(values)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * (scale if grad.dim() == 1 else scale[:, None]), None


def _scale_gradient(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``values`` (n,) or (n, C) unchanged, with their gradient scaled per sample by ``scale`` (n,)."""
    return _ScaleGradient.apply(values, scale)
