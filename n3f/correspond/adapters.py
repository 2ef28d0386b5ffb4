"""Use a pretrained NeRF-GAN (a user's generator checkpoint) as a correspondence :class:`~.generator.Generator`.

What the user's module must provide: ``module(points (N, 3), latent (latent_dim,)) -> dict`` of
per-point tensors with a density (N,) or (N, 1), a colour (N, 3) and a feature map (N, C) (e.g. the
last hidden layer of its MLP, or its tri-plane features). Name the keys with ``keys`` if they
differ from ``sigma``, ``rgb``, ``feature``. Densities must be per world unit of ``aabb``; if the
module works in another frame, wrap it first. Example with a EG3D-style decoder::

    gan = load_my_gan("ffhq.pt")                       # the user's code
    generator = NeRFGANAdapter(gan, latent_dim=512, feature_dim=32, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]),
                               keys={"sigma": "density", "feature": "features"})
    fit_correspondence(CorrespondConfig(family="my-gan"), Path("runs/correspond/my-gan/1"), generator=generator)

Such a generator has no exact maps, so ``n3f correspond eval`` (which needs the ground truth of a
procedural family) does not apply; the transfers of :mod:`.transfer` and :mod:`.match` do.
"""

from __future__ import annotations

import torch
from torch import nn

from n3f.correspond.deformation import positional_encoding


class NeRFGANAdapter:
    """A user's latent-conditioned NeRF module seen through the :class:`~.generator.Generator` protocol.

    Args:
        module: ``module(points (N, 3), latent (latent_dim,)) -> {key: tensor}`` (see module docstring);
            its parameters are frozen (the deformation field trains, the generator does not).
        latent_dim, feature_dim: sizes of the latent and of the feature output.
        aabb: (2, 3) world box holding every instance.
        latent_std: the prior is N(0, latent_std^2 I); its mean (zeros) is the template latent.
        keys: the module's names for ``sigma``, ``rgb`` and ``feature`` where they differ.
    """

    def __init__(
        self,
        module: nn.Module,
        latent_dim: int,
        feature_dim: int,
        aabb: torch.Tensor,
        latent_std: float = 1.0,
        keys: dict[str, str] | None = None,
    ):
        self.module = module.eval().requires_grad_(False)
        self.latent_dim, self.feature_dim = latent_dim, feature_dim
        self.aabb = torch.as_tensor(aabb, dtype=torch.float32)
        self.latent_std = latent_std
        self.keys = {"sigma": "sigma", "rgb": "rgb", "feature": "feature", **(keys or {})}

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, latent_dim) latents from N(0, latent_std^2 I)."""
        return self.latent_std * torch.randn(n, self.latent_dim, generator=generator)

    def template_latent(self) -> torch.Tensor:
        """(latent_dim,) zeros: the prior's mean."""
        return torch.zeros(self.latent_dim)

    def field(self, latent: torch.Tensor):
        """The instance of ``latent`` as a field ``points (N, 3), dirs (N, 3) -> {"sigma" (N,), "rgb" (N, 3), "feature" (N, C)}``."""
        latent = latent.detach().float()

        def instance(points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.module(points, latent.to(points))
            return {
                "sigma": out[self.keys["sigma"]].reshape(len(points)),
                "rgb": out[self.keys["rgb"]],
                "feature": out[self.keys["feature"]],
            }

        return instance


class TinyNeRFGenerator(nn.Module):
    """A small latent-conditioned MLP NeRF generator with the interface :class:`NeRFGANAdapter` expects:
    the reference for adapter authors and the stand-in the tests train against (random weights).

    ``forward(points (N, 3), latent (latent_dim,))`` returns ``density`` (N, 1) per world unit (a blob
    around the origin whose shape the latent bends), ``rgb`` (N, 3) in [0, 1] and ``features`` (N, feature_dim).
    """

    def __init__(self, latent_dim: int = 8, feature_dim: int = 16, hidden: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(3 + 6 * 3 + latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.density_head = nn.Linear(hidden, 1)
        self.rgb_head = nn.Linear(hidden, 3)
        self.feature_head = nn.Linear(hidden, feature_dim)

    def forward(self, points: torch.Tensor, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(torch.cat([positional_encoding(points, 3), latent.expand(len(points), -1)], -1))
        blob = 0.6 + 0.1 * torch.tanh(self.density_head(h)) - points.norm(dim=-1, keepdim=True)  # signed distance-like
        return {"density": 50 * torch.sigmoid(blob / 0.03), "rgb": torch.sigmoid(self.rgb_head(h)), "features": self.feature_head(h)}
