"""What the correspondence module needs from a generator of NeRF instances of one category.

A :class:`Generator` draws latents and turns one latent into a renderable field. A
:class:`ProceduralGenerator` also knows the exact maps between each instance and its canonical
template, and the part labels, so every correspondence it produces can be scored exactly.

All points are in the generator's world box ``aabb`` (world units); latents are float32 tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

Field = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@runtime_checkable
class Generator(Protocol):
    """A generator of NeRF instances.

    Attributes:
        latent_dim: size of a latent code.
        feature_dim: channels of the ``feature`` output.
        aabb: (2, 3) world box that holds every instance.
    """

    latent_dim: int
    feature_dim: int
    aabb: torch.Tensor

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, latent_dim) latents drawn from the generator's prior."""
        ...

    def template_latent(self) -> torch.Tensor:
        """(latent_dim,) the latent whose instance serves as the learned template (the prior's mean)."""
        ...

    def field(self, latent: torch.Tensor) -> Field:
        """The instance of ``latent`` (latent_dim,) as a field ``points (N, 3), dirs (N, 3) ->
        {"sigma": (N,) per world unit, "rgb": (N, 3) in [0, 1], "feature": (N, feature_dim)}``;
        differentiable with respect to the points."""
        ...


@runtime_checkable
class ProceduralGenerator(Generator, Protocol):
    """A generator whose instances are exact deformations of one canonical template."""

    n_parts: int

    def to_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Canonical template coordinates (N, 3) of instance points (N, 3)."""
        ...

    def from_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Instance points (N, 3) of canonical template coordinates (N, 3)."""
        ...

    def template_field(self) -> Field:
        """The canonical template as a field with ``sigma``, ``rgb``, ``feature`` and ``label`` (one-hot, n_parts)."""
        ...

    def template_surface_points(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3) points on the canonical template's surface."""
        ...

    def part_labels(self, template_points: torch.Tensor) -> torch.Tensor:
        """(N,) int64 part index of canonical template points (N, 3)."""
        ...
