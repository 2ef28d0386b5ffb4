"""Render a field through a deformation: sample points are mapped before the wrapped field is queried.

``DeformedField(field, deformation)`` is itself a field (``points (N, 3), dirs (N, 3) -> channels``):
it evaluates ``field(deformation(points), dirs)``. The renderer marches in the deformed space's
own coordinates (the "instance" space) while densities and every other channel come from the
wrapped field's space (the "template" space). Directions are passed through unchanged: the
deformations this is meant for are close to rigid, and view dependence is a small effect.

Example::

    shifted = DeformedField(field, lambda p: p - torch.tensor([0.1, 0.0, 0.0]))
    out = render_rays(shifted, origins, dirs, space, None, step=0.01)  # the field moved +0.1 in x
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class DeformedField:
    """A field evaluated at deformed points.

    Args:
        field: ``field(points (N, 3), dirs (N, 3)) -> {"sigma": (N,), name: (N, C)}``.
        deformation: ``points (N, 3) -> (N, 3)``, the map from the space rays are marched in to the
            wrapped field's space (differentiable if gradients should reach it).
        coordinates_channel: when given, the deformed points (N, 3) are also returned under this name,
            so the renderer composites them (e.g. a rendered template-coordinate map).
    """

    def __init__(
        self,
        field: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
        deformation: Callable[[torch.Tensor], torch.Tensor],
        coordinates_channel: str | None = None,
    ):
        self.field = field
        self.deformation = deformation
        self.coordinates_channel = coordinates_channel

    def __call__(self, points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Channels of the wrapped field at ``deformation(points)``; points and dirs (N, 3)."""
        warped = self.deformation(points)
        out = dict(self.field(warped, dirs))
        if self.coordinates_channel is not None:
            out[self.coordinates_channel] = warped
        return out
