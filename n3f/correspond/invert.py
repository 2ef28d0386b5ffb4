"""Recover the latent of an unseen instance from a few rendered views (GAN inversion through the renderer).

Starting from the template latent, Adam minimises ``|rgb - rgb*|^2 + |opacity - opacity*|^2`` over a
random subset of the views' pixels each iteration, rendering the generator's field of the current
latent with :func:`~n3f.render.render.render_rays` (gradients reach the latent through the field).
The generator's ``field`` must accept ``differentiable=True`` (the chairs family does).
"""

from __future__ import annotations

import torch

from n3f.render.rays import pixel_grid, pixel_rays
from n3f.render.render import render_rays
from n3f.render.spaces import BoxSpace


def view_rays(views: list[tuple[float, float]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and directions (V * size * size, 3) of the pixels of ``views`` (see :func:`~.transfer.look_at_camera`)."""
    from n3f.correspond.transfer import look_at_camera

    rays = [pixel_rays(*look_at_camera(*v, radius=3.2, size=size), pixel_grid(size, size)) for v in views]
    return torch.cat([r[0] for r in rays]), torch.cat([r[1] for r in rays])


def invert_latent(
    generator,
    targets: dict[str, torch.Tensor],
    origins: torch.Tensor,
    dirs: torch.Tensor,
    iterations: int = 150,
    rays_per_step: int = 256,
    lr: float = 0.05,
    step: float = 0.04,
    seed: int = 0,
) -> torch.Tensor:
    """The latent (latent_dim,) whose renders best match ``targets``.

    Args:
        generator: a generator whose ``field(latent, differentiable=True)`` lets gradients reach the latent.
        targets: ``rgb`` (R, 3) and ``opacity`` (R, 1) of the rays ``origins``, ``dirs`` (R, 3).
        iterations, rays_per_step, lr: Adam iterations, pixels per iteration, learning rate.
        step: marching step, world units.
    """
    g = torch.Generator().manual_seed(seed)
    latent = generator.template_latent().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=lr)
    space = BoxSpace(generator.aabb)
    for _ in range(iterations):
        pick = torch.randint(len(origins), (rays_per_step,), generator=g)
        out = render_rays(generator.field(latent, differentiable=True), origins[pick], dirs[pick], space, None, step)
        loss = (out["rgb"] - targets["rgb"][pick]).square().mean() + (out["opacity"] - targets["opacity"][pick]).square().mean()
        loss = loss + 1e-3 * latent.square().mean()  # stay near the prior
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return latent.detach()


@torch.no_grad()
def render_targets(
    generator, latent: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, step: float = 0.04
) -> dict[str, torch.Tensor]:
    """``rgb`` (R, 3) and ``opacity`` (R, 1) of the instance ``latent`` along the rays (R, 3)."""
    out = render_rays(generator.field(latent), origins, dirs, BoxSpace(generator.aabb), None, step)
    return {"rgb": out["rgb"], "opacity": out["opacity"]}
