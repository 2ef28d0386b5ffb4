"""The student field: hash grid -> geometry MLP -> density and a geometry code; a view-dependent
colour head (spherical harmonics of the direction); a view-independent feature head.

Points enter in the march space (see :mod:`n3f.render.spaces`) and are mapped to [0, 1]^3 by the
field's box before the hash encoding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
from torch import nn

from n3f.render.encoding import CPU_CONFIG, HashEncoding, HashGridConfig
from n3f.render.sh import spherical_harmonics


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped at exp(15) (instant-ngp's density activation)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) with a clamped gradient, for densities."""
    return _TruncExp.apply(x)


@dataclass(frozen=True)
class StudentConfig:
    """Student architecture.

    Attributes:
        grid: hash-grid hyper-parameters.
        hidden: width of every MLP.
        code_dim: size of the geometry code shared by the colour and feature heads.
        sh_degree: spherical-harmonics degree of the direction encoding.
        feature_dim: output channels of the feature head (the cached teacher features' size).
        backend: hash-grid backend (``auto``, ``torch``, ``cpu``, ``tcnn``).
        density_bias: added to the density pre-activation (``sigma = exp(h + bias)``); instant-ngp
            uses -1. Lower values start the field nearly transparent.
        mlp_precision: number format of the MLPs' matrix products: ``fp32``, ``bf16`` (weights kept
            in float32, products in bfloat16 as torch's autocast does; tinycudann runs its MLPs in
            fp16 for the same reason), or ``auto``: fp32. bf16 makes a CPU step about 1.8x faster
            where oneDNN has bfloat16 kernels, but what a fit ends at moved by up to 5.6 dB between
            machines (README command 1: 23.33 dB on one CPU, 18.98 dB on another, float32 24.57
            dB on both), so it is opt-in. The hash encoding, activations of density and colour,
            and compositing stay float32.
        feature_rendering: how rendered features are made. ``sample`` (N3F): the feature head
            runs on every sample and the features are composited. ``ray``: the geometry codes are
            composited and the head runs once per ray on the ray's mean code (deferred decoding,
            :func:`n3f.render.volume.decode_composited`); on demo/tabletop it made a CPU step about
            15% faster at the same held-out PSNR and feature cosine (README). Features at a 3D
            point are ``feature_head(code(point))`` either way.
    """

    grid: HashGridConfig = CPU_CONFIG
    hidden: int = 64
    code_dim: int = 31
    sh_degree: int = 4
    feature_dim: int = 64
    backend: str = "auto"
    density_bias: float = -1.0
    mlp_precision: str = "auto"
    feature_rendering: str = "sample"

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StudentConfig:
        d = dict(d)
        d["grid"] = HashGridConfig(**d["grid"])
        return cls(**d)


MLP_PRECISIONS = ("auto", "fp32", "bf16")
FEATURE_RENDERINGS = ("sample", "ray")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU's oneDNN runs bfloat16 matrix products natively (AVX-512 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_mlp_precision(precision: str) -> str:
    """``fp32`` or ``bf16``: what ``precision`` (see :class:`StudentConfig`) means. ``auto`` is
    ``fp32`` on every device: bfloat16 results moved by several dB between CPUs (README)."""
    if precision not in MLP_PRECISIONS:
        raise ValueError(f"unknown mlp_precision {precision!r}; use one of {', '.join(MLP_PRECISIONS)}")
    if precision == "auto":
        return "fp32"
    return precision


# oneDNN, which runs bfloat16 products on the CPU, builds and keeps a kernel for every matrix shape
# it meets: with a sample count that changes every step, memory grew by about 3 MiB a call (4 GB
# in a 3,000-step fit). Padding the rows to a multiple of MLP_ROW_BUCKET and splitting at
# MLP_MAX_ROWS bounds the shapes to a few per layer; rows are independent, so padding changes nothing.
MLP_ROW_BUCKET = 8192
MLP_MAX_ROWS = 65536


def run_mlp(mlp: nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """``mlp(x)`` for ``x`` of shape (N, C_in) at ``precision`` (see :class:`StudentConfig`).

    Returns (N, C_out) float32. In bf16 the rows are padded to a multiple of ``MLP_ROW_BUCKET`` and
    run in pieces of at most ``MLP_MAX_ROWS`` rows, so that oneDNN meets few distinct shapes.
    """
    if resolve_mlp_precision(precision) != "bf16":
        return mlp(x)
    n = x.shape[0]
    pad = (-n) % MLP_ROW_BUCKET
    if pad:
        x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        out = torch.cat([mlp(piece) for piece in x.split(MLP_MAX_ROWS)]) if x.shape[0] > MLP_MAX_ROWS else mlp(x)
    return out[:n].float()


def _mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


class StudentField(nn.Module):
    """Density, colour and features at points.

    Args:
        config: architecture.
        aabb: (2, 3) box of the march space mapped onto the hash grid's [0, 1]^3.
    """

    def __init__(self, config: StudentConfig, aabb: torch.Tensor):
        super().__init__()
        self.config = config
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.encoding = HashEncoding(config.grid, backend=config.backend)
        self.geometry_mlp = _mlp(config.grid.output_dim, config.hidden, 1 + config.code_dim, 1)
        self.colour_head = _mlp(config.code_dim + config.sh_degree**2, config.hidden, 3, 2)
        self.feature_head = _mlp(config.code_dim, config.hidden, config.feature_dim, 2)

    def _geometry(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = ((points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).clamp(0.0, 1.0)
        h = run_mlp(self.geometry_mlp, self.encoding(u), self.config.mlp_precision)
        return trunc_exp(h[:, 0] + self.config.density_bias), h[:, 1:]

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) densities (per unit of march-space distance)."""
        return self._geometry(points)[0]

    def decode_features(self, code: torch.Tensor) -> torch.Tensor:
        """(N, code_dim) geometry codes -> (N, feature_dim) features (the feature head)."""
        return run_mlp(self.feature_head, code, self.config.mlp_precision)

    def render_decoders(self, features: bool = True) -> dict | None:
        """The ``decoders`` argument of :func:`n3f.render.render.render_rays` for a field called
        with ``decode_features=False`` (None when features are rendered per sample)."""
        return {"feature": self.decode_features} if features and self.config.feature_rendering == "ray" else None

    def forward(
        self, points: torch.Tensor, dirs: torch.Tensor, features: bool = True, colour: bool = True, decode_features: bool = True
    ) -> dict[str, torch.Tensor]:
        """Evaluate the field.

        Args:
            points: (N, 3) sample positions; dirs: (N, 3) unit viewing directions.
            features, colour: which heads to run.
            decode_features: False returns the geometry code (N, code_dim) as ``feature``, for
                renderers that decode per ray (:meth:`render_decoders`).

        Returns:
            ``sigma`` (N,), and ``rgb`` (N, 3) in [0, 1] and ``feature`` (N, feature_dim) if asked.
        """
        sigma, code = self._geometry(points)
        out = {"sigma": sigma}
        precision = self.config.mlp_precision
        if colour:
            view = torch.cat([code, spherical_harmonics(dirs, self.config.sh_degree)], -1)
            out["rgb"] = torch.sigmoid(run_mlp(self.colour_head, view, precision))
        if features:
            out["feature"] = self.decode_features(code) if decode_features else code
        return out
