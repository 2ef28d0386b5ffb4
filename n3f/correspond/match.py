"""Point matches between instances through the template, with a confidence.

A *correspondence* is anything with ``to_template(latent, points)`` and ``from_template(latent,
points)`` (points (N, 3) world units): the learned :class:`~.deformation.DualDeformationField`, a
procedural family's exact maps (the oracle) or :class:`IdentityMaps`.
"""

from __future__ import annotations

import torch


class IdentityMaps:
    """The identity baseline: every instance point is its own template point."""

    def to_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``points`` (N, 3) unchanged."""
        return points

    def from_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``points`` (N, 3) unchanged."""
        return points


class ComposedMaps:
    """A correspondence whose template space is re-parametrised by a fixed bijection ``phi``:
    ``to_template = phi o to_template`` and ``from_template = from_template o phi^-1``."""

    def __init__(self, maps, phi, phi_inverse):
        self.maps, self.phi, self.phi_inverse = maps, phi, phi_inverse

    def to_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """phi(template point) (N, 3) of instance points (N, 3)."""
        return self.phi(self.maps.to_template(latent, points))

    def from_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Instance points (N, 3) of re-parametrised template points (N, 3)."""
        return self.maps.from_template(latent, self.phi_inverse(points))


@torch.no_grad()
def match_points(maps, latent_a: torch.Tensor, latent_b: torch.Tensor, points_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map points of instance A onto instance B through the template.

    Args:
        maps: a correspondence (see module docstring); latent_a, latent_b: (latent_dim,).
        points_a: (N, 3) world points of A.

    Returns:
        points on B (N, 3) and a confidence (N,): the cycle error ``|to(B, from(B, y)) - y|`` of the
        template point ``y`` (world units; lower is more reliable).
    """
    y = maps.to_template(latent_a, points_a)
    points_b = maps.from_template(latent_b, y)
    return points_b, (maps.to_template(latent_b, points_b) - y).norm(dim=-1)


@torch.no_grad()
def match_points_nearest(
    maps, latent_a: torch.Tensor, latent_b: torch.Tensor, points_a: torch.Tensor, candidates_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour-in-template-space matching: each point of A goes to the candidate of B (e.g.
    B's surface points, (M, 3)) whose template point is nearest to A's template point.

    Returns:
        matched candidates (N, 3) and the template-space distance to them (N,), world units.
    """
    ya = maps.to_template(latent_a, points_a)
    yb = maps.to_template(latent_b, candidates_b)
    dist, index = torch.cdist(ya, yb).min(dim=1)
    return candidates_b[index], dist


@torch.no_grad()
def match_features_nearest(features_a: torch.Tensor, features_b: torch.Tensor, candidates_b: torch.Tensor) -> torch.Tensor:
    """Raw-feature nearest neighbour: for features (N, C) of A's points, the candidates of B (M, 3)
    whose features (M, C) are nearest in Euclidean distance; returns (N, 3)."""
    return candidates_b[torch.cdist(features_a, features_b).argmin(dim=1)]
