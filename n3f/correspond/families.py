"""Built-in procedural shape families and their registry (``create_family("chairs")``).

The ``chairs`` family: a canonical template assembled from box SDF parts (seat, four legs, back) and
an asymmetric marker (a sphere on the back's right corner, so no mirror symmetry can explain a
match). Each latent ``z`` (16-d standard normal) is mixed by a fixed random matrix into shape and
texture parameters, so every latent dimension moves both. Template -> instance is
``x = A (y + bump(y)) + b`` with ``A = R_y(theta) diag(s)`` (positive determinant) and
``bump(y) = sum_k a_k sin(w_k . y + phi_k)``, whose Lipschitz constant is kept below 0.55 so that
``y + bump(y)`` is invertible; the inverse solves ``y = u - bump(y)`` by fixed-point iteration.

Channels of an instance at world point ``x`` with template coordinate ``y = to_template(z, x)``:

- ``sigma = 60 * sigmoid(-sdf(y) / 0.015)`` per world unit (density from the SDF in template space);
- ``rgb``: a per-part colour of the texture code, striped along a texture-chosen direction of ``y``;
- ``feature`` (32 channels): 24 random Fourier features of ``y`` (the geometry-aware descriptor),
  plus per-instance noise (high-frequency features of ``x`` with latent phases, amplitude 0.3),
  then 8 nuisance channels that depend on the texture code (amplitude 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from n3f.errors import N3FError

_FAMILIES: dict[str, Callable[..., object]] = {}


def register_family(name: str) -> Callable:
    """Decorator: register a generator class (or factory) under ``name``."""

    def wrap(cls):
        _FAMILIES[name] = cls
        return cls

    return wrap


def available_families() -> list[str]:
    """Names of the registered families, sorted."""
    return sorted(_FAMILIES)


def create_family(name: str, **kwargs):
    """Build the family registered as ``name``.

    Raises:
        N3FError: unknown name (the message lists the available ones).
    """
    if name not in _FAMILIES:
        raise N3FError(f"unknown correspondence family {name!r}; available: {', '.join(available_families())}")
    return _FAMILIES[name](**kwargs)


def _box_sdf(p: torch.Tensor, centre: tuple, half: tuple) -> torch.Tensor:
    """Signed distance (N,) of points (N, 3) to an axis-aligned box."""
    q = (p - p.new_tensor(centre)).abs() - p.new_tensor(half)
    return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)


def _sphere_sdf(p: torch.Tensor, centre: tuple, radius: float) -> torch.Tensor:
    return (p - p.new_tensor(centre)).norm(dim=-1) - radius


PART_NAMES = ("seat", "legs", "back", "marker")


@register_family("chairs")
class ChairFamily:
    """Procedural chairs with exact template maps (see module docstring). ``seed`` fixes the family's
    random matrices (mixing, bump directions, Fourier features); latents are drawn separately."""

    latent_dim = 16
    feature_dim = 32
    n_parts = len(PART_NAMES)
    part_names = PART_NAMES
    sigma_scale = 60.0
    sdf_width = 0.015
    n_bumps = 4
    fixed_point_iterations = 30

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(1000 + seed)
        self.aabb = torch.tensor([[-1.4, -1.4, -1.4], [1.4, 1.4, 1.4]])
        n_shape = 3 + 1 + 3 + 3 * self.n_bumps
        self.n_shape, self.n_texture = n_shape, 8
        mixing = torch.randn(n_shape + self.n_texture, self.latent_dim, generator=g)
        self.mixing = mixing / mixing.norm(dim=1, keepdim=True)  # each parameter ~ N(0, 1), entangled
        dirs = torch.randn(self.n_bumps, 3, generator=g)
        self.bump_freq = 2.5 * dirs / dirs.norm(dim=1, keepdim=True)  # (K, 3), |w_k| = 2.5
        self.bump_phase = 2 * math.pi * torch.rand(self.n_bumps, generator=g)
        self.fourier = 1.2 * torch.randn(12, 3, generator=g)
        self.fourier_phase = 2 * math.pi * torch.rand(12, generator=g)
        self.noise_freq = 8.0 * torch.randn(24, 3, generator=g)
        self.nuisance_freq = 2.0 * torch.randn(8, 3, generator=g)
        self.nuisance_mix = torch.randn(8, self.n_texture, generator=g) / math.sqrt(self.n_texture)
        self.noise_phase_mix = torch.randn(24, self.latent_dim, generator=g)

    # ---- latents and parameters -------------------------------------------------------------

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 16) standard-normal latents."""
        return torch.randn(n, self.latent_dim, generator=generator)

    def template_latent(self) -> torch.Tensor:
        """(16,) zeros: the prior's mean."""
        return torch.zeros(self.latent_dim)

    def _params(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        p = torch.tanh(self.mixing.to(latent) @ latent)
        scale = torch.exp(0.2 * p[0:3])
        theta = 0.35 * p[3]
        c, s = torch.cos(theta), torch.sin(theta)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rot = torch.stack([torch.stack([c, zero, s]), torch.stack([zero, one, zero]), torch.stack([-s, zero, c])])
        return {
            "A": rot * scale[None, :],  # R diag(s): det = prod(s) > 0
            "b": 0.1 * p[4:7],
            "amp": 0.03 * p[7 : 7 + 3 * self.n_bumps].reshape(self.n_bumps, 3),  # |a_k| |w_k| <= 0.13 each
            "texture": p[self.n_shape :],
        }

    def _bump(self, params: dict, y: torch.Tensor) -> torch.Tensor:
        phase = y @ self.bump_freq.to(y).T + self.bump_phase.to(y)  # (N, K)
        return torch.sin(phase) @ params["amp"]

    # ---- exact maps ---------------------------------------------------------------------------

    def from_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Instance points (N, 3) of template points (N, 3): ``A (y + bump(y)) + b``."""
        params = self._params(latent.to(points))
        return (points + self._bump(params, points)) @ params["A"].T + params["b"]

    def to_template(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Template points (N, 3) of instance points (N, 3): undo the affine map, then solve
        ``y + bump(y) = u`` by fixed-point iteration (a contraction of ratio < 0.55); gradients flow
        through the last two iterations only."""
        params = self._params(latent.to(points))
        u = (points - params["b"]) @ torch.linalg.inv(params["A"]).T
        with torch.no_grad():
            y = u.detach()
            for _ in range(self.fixed_point_iterations):
                y = u.detach() - self._bump(params, y)
        for _ in range(2):  # differentiable steps: the gradient of the fixed point to within ratio^2
            y = u - self._bump(params, y)
        return y

    # ---- template ------------------------------------------------------------------------------

    def part_sdfs(self, y: torch.Tensor) -> torch.Tensor:
        """(N, 4) signed distances of template points (N, 3) to seat, legs, back and marker."""
        legs = torch.stack([_box_sdf(y, (sx * 0.38, -0.42, sz * 0.38), (0.06, 0.34, 0.06)) for sx in (-1, 1) for sz in (-1, 1)], -1)
        return torch.stack(
            [
                _box_sdf(y, (0.0, 0.0, 0.0), (0.5, 0.08, 0.48)),
                legs.amin(-1),
                _box_sdf(y, (0.0, 0.45, -0.42), (0.5, 0.38, 0.06)),
                _sphere_sdf(y, (0.38, 0.78, -0.42), 0.13),
            ],
            -1,
        )

    def sdf(self, y: torch.Tensor) -> torch.Tensor:
        """(N,) signed distance of template points (N, 3) to the template (template units)."""
        return self.part_sdfs(y).amin(-1)

    def part_labels(self, template_points: torch.Tensor) -> torch.Tensor:
        """(N,) int64 index into ``part_names`` of the nearest part to each template point (N, 3)."""
        return self.part_sdfs(template_points).argmin(-1)

    def template_surface_points(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3) template points within 1e-4 of the surface: uniform candidates projected along the SDF gradient."""
        out, have = [], 0
        while have < n:
            y = (torch.rand(8 * n, 3, generator=generator) * 2 - 1) * 1.0
            y = y[self.sdf(y).abs() < 0.1]
            for _ in range(4):
                with torch.enable_grad():
                    y = y.detach().requires_grad_(True)
                    d = self.sdf(y)
                    (grad,) = torch.autograd.grad(d.sum(), y)
                y = y - d[:, None] * grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            y = y.detach()
            y = y[self.sdf(y).abs() < 1e-4]
            out.append(y)
            have += len(y)
        return torch.cat(out)[:n]

    def surface_points(self, latent: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3) points on the surface of the instance of ``latent``."""
        return self.from_template(latent, self.template_surface_points(n, generator))

    # ---- channels ------------------------------------------------------------------------------

    def _channels(self, y: torch.Tensor, x: torch.Tensor, latent: torch.Tensor, params: dict) -> dict[str, torch.Tensor]:
        sigma = self.sigma_scale * torch.sigmoid(-self.sdf(y) / self.sdf_width)
        t = params["texture"]
        labels = self.part_labels(y)
        part_shift = y.new_tensor([[0.0, 0.0, 0.0], [1.5, -1.0, 0.5], [-0.8, 1.2, 0.3], [2.5, 2.5, -2.5]])
        base = torch.sigmoid(1.5 * t[:3] + part_shift[labels])
        direction = torch.stack([torch.cos(2 * t[3]), torch.sin(2 * t[3]), t[4]])
        stripes = 0.75 + 0.25 * torch.sin(7.0 * y @ direction + 3 * t[5])
        rgb = base * stripes[:, None]
        phase = y @ self.fourier.to(y).T + self.fourier_phase.to(y)
        descriptor = torch.cat([torch.sin(phase), torch.cos(phase)], -1)  # (N, 24)
        noise_phase = self.noise_phase_mix.to(y) @ latent
        noise = 0.3 * torch.sin(x @ self.noise_freq.to(y).T + noise_phase)
        nuisance = 0.5 * torch.tanh(self.nuisance_mix.to(y) @ t) * torch.sin(x @ self.nuisance_freq.to(y).T + t[6])
        feature = torch.cat([descriptor + noise, nuisance], -1)
        return {"sigma": sigma, "rgb": rgb, "feature": feature}

    def field(self, latent: torch.Tensor, labels: bool = False, differentiable: bool = False):
        """The instance of ``latent`` (16,) as a field; with ``labels`` also a ``label`` channel (N, 4) one-hot;
        with ``differentiable`` gradients reach ``latent`` (for inversion), otherwise it is detached."""
        latent = latent.float() if differentiable else latent.detach().float()
        params = self._params(latent)

        def instance(points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
            y = self.to_template(latent, points)
            out = self._channels(y, points, latent.to(points), {k: v.to(points) for k, v in params.items()})
            if labels:
                out["label"] = torch.nn.functional.one_hot(self.part_labels(y), self.n_parts).to(points)
            return out

        return instance

    def template_field(self):
        """The canonical template (identity map) as a field with ``sigma``, ``rgb``, ``feature``, ``label``."""
        latent = torch.zeros(self.latent_dim)
        params = {"texture": torch.zeros(self.n_texture)}

        def template(points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self._channels(points, points, latent.to(points), {"texture": params["texture"].to(points)})
            out["label"] = torch.nn.functional.one_hot(self.part_labels(points), self.n_parts).to(points)
            return out

        return template
