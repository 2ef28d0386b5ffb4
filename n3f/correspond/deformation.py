"""The dual deformation field: instance <-> template maps conditioned on an instance's latent.

``to_template(latent, x) = x + F(PE(x), P z)`` and ``from_template(latent, y) = y + B(PE(y), P' z)``,
where ``PE`` is a NeRF positional encoding (``n_frequencies`` octaves), ``P``/``P'`` are learned
linear projections of the latent and ``F``/``B`` are MLPs predicting displacements (world units).
The last layers start at zero, so an untrained field is the identity map.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class DeformationConfig:
    """Size of the dual deformation field."""

    latent_dim: int = 16
    n_frequencies: int = 4  # octaves of the positional encoding (2^0 .. 2^(n-1)) x pi
    latent_features: int = 32  # width of the latent projection
    hidden: int = 64  # width of each MLP
    layers: int = 2  # hidden layers of each MLP


def positional_encoding(points: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """(N, 3) points -> (N, 3 + 6 n_frequencies): the points, then sin and cos of ``2^k pi`` times each coordinate."""
    freqs = math.pi * 2.0 ** torch.arange(n_frequencies, device=points.device, dtype=points.dtype)
    scaled = (points[:, None, :] * freqs[:, None]).reshape(len(points), -1)
    return torch.cat([points, torch.sin(scaled), torch.cos(scaled)], -1)


class _DisplacementMLP(nn.Module):
    def __init__(self, config: DeformationConfig):
        super().__init__()
        self.n_frequencies = config.n_frequencies
        self.latent_projection = nn.Linear(config.latent_dim, config.latent_features)
        width_in = 3 + 6 * config.n_frequencies + config.latent_features
        layers: list[nn.Module] = []
        for i in range(config.layers):
            layers += [nn.Linear(width_in if i == 0 else config.hidden, config.hidden), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(config.hidden, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        code = self.latent_projection(latent.to(points)).expand(len(points), -1)
        return self.out(self.body(torch.cat([positional_encoding(points, self.n_frequencies), code], -1)))


class DualDeformationField(nn.Module):
    """Forward (instance -> template) and backward (template -> instance) deformations.

    Both take ``latent`` (latent_dim,) and points (N, 3) in world units and return points (N, 3).
    """

    def __init__(self, config: DeformationConfig | None = None):
        super().__init__()
        self.config = config or DeformationConfig()
        self.forward_net = _DisplacementMLP(self.config)
        self.backward_net = _DisplacementMLP(self.config)

    def to_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Template points (N, 3) of instance points (N, 3)."""
        return points + self.forward_net(latent, points)

    def from_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Instance points (N, 3) of template points (N, 3)."""
        return points + self.backward_net(latent, points)

    def state(self) -> dict:
        """Config and weights, for a checkpoint."""
        return {"config": asdict(self.config), "weights": self.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> DualDeformationField:
        """Rebuild from :meth:`state`."""
        model = cls(DeformationConfig(**state["config"]))
        model.load_state_dict(state["weights"])
        return model
