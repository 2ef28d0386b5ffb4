"""Losses of the dual deformation field, on one instance at a time.

With ``F_z``/``sigma_z`` the generator's features/density of instance ``z`` and ``0`` the template
latent, ``f = to_template(z, .)``, ``b = from_template(z, .)``, instance points ``x`` and template
points ``y``:

- feature matching: ``|F_z(x) - F_0(f(x))|^2`` and ``|F_0(y) - F_z(b(y))|^2``, each weighted by the
  occupancy of the point whose feature is the target (descriptors only mean something on the surface);
- density agreement: ``|o_z(x) - o_0(f(x))|^2`` and ``|o_0(y) - o_z(b(y))|^2`` with occupancy
  ``o = 1 - exp(-sigma * occupancy_step)``;
- cycle consistency: ``|b(f(x)) - x|^2`` and ``|f(b(y)) - y|^2``;
- smoothness: ``|d(p + e) - d(p)|^2 / |e|^2`` of each displacement ``d`` for small random offsets ``e``;
- small displacement: ``|f(x) - x|^2 + |b(y) - y|^2``.

Every term is a mean over points; the weights are in :class:`LossWeights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossWeights:
    """Weights of the loss terms (see module docstring)."""

    feature: float = 1.0
    density: float = 1.0
    cycle: float = 10.0
    smooth: float = 0.01
    small: float = 0.001
    occupancy_step: float = 0.05  # world units; turns density into occupancy in [0, 1)
    smooth_offset: float = 0.02  # world units; std of the finite-difference offsets


def occupancy(sigma: torch.Tensor, step: float) -> torch.Tensor:
    """Occupancy in [0, 1) of density ``sigma`` (per world unit) over ``step`` world units."""
    return 1.0 - torch.exp(-sigma * step)


def _weighted_mse(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return ((a - b).square().mean(-1) * weight).sum() / weight.sum().clamp_min(1e-6)


def smoothness(deform, latent: torch.Tensor, points: torch.Tensor, offset: float) -> torch.Tensor:
    """Mean squared finite-difference gradient of the displacement of ``deform(latent, p) - p`` at points (N, 3)."""
    e = torch.randn_like(points) * offset
    d0 = deform(latent, points) - points
    d1 = deform(latent, points + e) - (points + e)
    return ((d1 - d0).square().sum(-1) / e.square().sum(-1).clamp_min(1e-12)).mean()


def deformation_losses(
    model, instance_field, template_field, latent: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights: LossWeights
) -> dict[str, torch.Tensor]:
    """All loss terms for one instance.

    Args:
        model: a :class:`~n3f.correspond.deformation.DualDeformationField`.
        instance_field, template_field: generator fields (``sigma``, ``feature`` channels) of the
            instance ``latent`` and of the template latent.
        latent: (latent_dim,); x: (N, 3) instance points; y: (M, 3) template points (world units).

    Returns:
        ``feature``, ``density``, ``cycle``, ``smooth``, ``small`` (0-d tensors) and ``total``.
    """
    step = weights.occupancy_step
    with torch.no_grad():
        inst_x = instance_field(x, x)
        tmpl_y = template_field(y, y)
    fx = model.to_template(latent, x)
    by = model.from_template(latent, y)
    tmpl_fx = template_field(fx, fx)
    inst_by = instance_field(by, by)
    occ_x, occ_y = occupancy(inst_x["sigma"], step), occupancy(tmpl_y["sigma"], step)
    terms = {
        "feature": _weighted_mse(inst_x["feature"], tmpl_fx["feature"], occ_x)
        + _weighted_mse(tmpl_y["feature"], inst_by["feature"], occ_y),
        "density": (occ_x - occupancy(tmpl_fx["sigma"], step)).square().mean()
        + (occ_y - occupancy(inst_by["sigma"], step)).square().mean(),
        "cycle": (model.from_template(latent, fx) - x).square().sum(-1).mean()
        + (model.to_template(latent, by) - y).square().sum(-1).mean(),
        "smooth": smoothness(model.to_template, latent, x, weights.smooth_offset)
        + smoothness(model.from_template, latent, y, weights.smooth_offset),
        "small": (fx - x).square().sum(-1).mean() + (by - y).square().sum(-1).mean(),
    }
    terms["total"] = sum(getattr(weights, k) * v for k, v in terms.items())
    return terms
