"""Multiresolution hash encoding (instant-ngp) with interchangeable backends.

Both backends use instant-ngp's / tiny-cuda-nn's scheme exactly, so one parameter vector serves
both and a checkpoint trained with one loads into the other:

- level ``l`` has scale ``s_l = N_min * b**l - 1`` with ``b = exp((ln N_max - ln N_min) / (L - 1))``;
  a point ``x`` in [0, 1]^3 sits at ``x * s_l + 0.5`` on the level's grid, whose resolution is
  ``ceil(s_l) + 1``;
- level ``l`` owns ``min(next_multiple_of_8(resolution**3), 2**log2_T)`` table rows, levels stored
  one after the other, ``F`` features per row (row-major): the table is one ``(rows, F)`` tensor;
- a level whose grid fits its rows is indexed densely (``x + y * res + z * res**2``), otherwise
  hashed with ``x * 1 ^ y * 2654435761 ^ z * 805459861``, both modulo the level's row count;
- corners are blended with trilinear weights.

Backends:

- ``torch``: pure PyTorch, any device, with a hand-written backward (one ``index_add_`` for all
  levels) so no autograd graph of the 8 x L gathers is built. The reference.
- ``cpu``: a fused C++ kernel (OpenMP), compiled on first use (see :mod:`n3f.render.cpu_kernels`);
  the default on CPU, falling back to ``torch`` when it cannot be built.
- ``tcnn``: tiny-cuda-nn's fused CUDA kernel, the default on CUDA when importable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True)
class HashGridConfig:
    """Hash-grid hyper-parameters (instant-ngp names).

    Attributes:
        n_levels: L, number of resolution levels.
        n_features_per_level: F.
        log2_hashmap_size: log2 of T, the most rows a level may have.
        base_resolution: N_min.
        max_resolution: N_max (sets the per-level growth factor b).
    """

    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048

    @property
    def per_level_scale(self) -> float:
        """b, the growth factor between levels."""
        if self.n_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    @property
    def output_dim(self) -> int:
        """L * F."""
        return self.n_levels * self.n_features_per_level

    def tcnn_config(self) -> dict:
        """The encoding config tiny-cuda-nn expects."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
        }


NGP_CONFIG = HashGridConfig(16, 2, 19, 16, 2048)
CPU_CONFIG = HashGridConfig(12, 2, 17, 16, 1024)


def level_layout(config: HashGridConfig) -> tuple[list[float], list[int], list[int], list[int]]:
    """Per level: scale s_l, grid resolution, row count, first row (tiny-cuda-nn's layout)."""
    log2_b = math.log2(config.per_level_scale)
    scales, resolutions, sizes, offsets = [], [], [], []
    offset = 0
    for level in range(config.n_levels):
        scale = 2.0 ** (level * log2_b) * config.base_resolution - 1.0
        resolution = int(math.ceil(scale)) + 1
        rows = min(resolution**3, 2**31 - 1)
        rows = (rows + 7) // 8 * 8
        rows = min(rows, 2**config.log2_hashmap_size)
        scales.append(scale)
        resolutions.append(resolution)
        sizes.append(rows)
        offsets.append(offset)
        offset += rows
    return scales, resolutions, sizes, offsets


class _GridTables:
    """Per-device constant tensors describing the levels (built once per device)."""

    def __init__(self, config: HashGridConfig, device: torch.device):
        scales, resolutions, sizes, offsets = level_layout(config)
        self.scales = torch.tensor(scales, dtype=torch.float32, device=device)
        self.resolutions = torch.tensor(resolutions, dtype=torch.int64, device=device)
        self.sizes = torch.tensor(sizes, dtype=torch.int64, device=device)
        self.offsets = torch.tensor(offsets, dtype=torch.int64, device=device)
        self.dense = torch.tensor([r**3 <= s for r, s in zip(resolutions, sizes)], device=device)
        self.corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64, device=device)
        self.primes = torch.tensor(PRIMES, dtype=torch.int64, device=device)


def corner_indices_and_weights(x: torch.Tensor, tables: _GridTables) -> tuple[torch.Tensor, torch.Tensor]:
    """Global table rows and trilinear weights of the 8 corners of every level.

    Args:
        x: (N, 3) points in [0, 1]^3.

    Returns:
        rows: (N, L, 8) int64 rows into the (total_rows, F) table.
        weights: (N, L, 8) float32 trilinear weights (summing to 1 per level).
    """
    pos = x[:, None, :] * tables.scales[None, :, None] + 0.5  # (N, L, 3)
    grid = torch.floor(pos)
    frac = pos - grid
    grid = grid.to(torch.int64)
    corner = grid[:, :, None, :] + tables.corners[None, None]  # (N, L, 8, 3)
    res = tables.resolutions[None, :, None]
    dense_index = corner[..., 0] + corner[..., 1] * res + corner[..., 2] * res * res
    hashed = (corner[..., 0] * tables.primes[0]) ^ (corner[..., 1] * tables.primes[1]) ^ (corner[..., 2] * tables.primes[2])
    index = torch.where(tables.dense[None, :, None], dense_index, hashed & 0xFFFFFFFF)
    rows = index % tables.sizes[None, :, None] + tables.offsets[None, :, None]
    c = tables.corners.to(frac.dtype)  # (8, 3)
    w = torch.where(c[None, None] > 0, frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)  # (N, L, 8)
    return rows, w


class _HashGridFunction(torch.autograd.Function):
    """Gather-and-blend forward; backward scatters into the table gradient with one index_add_."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, tables: _GridTables) -> torch.Tensor:
        rows, w = corner_indices_and_weights(x, tables)
        n, L, _ = rows.shape
        gathered = table[rows.reshape(-1)].reshape(n, L, 8, -1)
        out = (gathered * w[..., None]).sum(2).reshape(n, -1)
        ctx.save_for_backward(rows, w)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        rows, w = ctx.saved_tensors
        n, L, _ = rows.shape
        F = ctx.table_shape[1]
        contrib = w[..., None] * grad_out.reshape(n, L, 1, F)
        grad_table = torch.zeros(ctx.table_shape, dtype=grad_out.dtype, device=grad_out.device)
        grad_table.index_add_(0, rows.reshape(-1), contrib.reshape(-1, F))
        return None, grad_table, None


class _FusedCPUFunction(torch.autograd.Function):
    """The fused C++ kernel: recomputes corners in backward instead of storing them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, tables: _GridTables, module) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.tables, ctx.module, ctx.n_rows = tables, module, table.shape[0]
        return module.forward(x, table.detach(), tables.scales, tables.resolutions, tables.sizes, tables.offsets)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        t = ctx.tables
        grad = ctx.module.backward(grad_out, x, ctx.n_rows, t.scales, t.resolutions, t.sizes, t.offsets)
        return None, grad, None, None


class HashEncoding(torch.nn.Module):
    """Multiresolution hash encoding of points in [0, 1]^3.

    Args:
        config: grid hyper-parameters.
        backend: ``auto`` (tcnn on CUDA when importable; the fused ``cpu`` kernel on CPU when it
            builds; else ``torch``), ``torch``, ``cpu`` or ``tcnn``.

    Input (N, 3) float in [0, 1]^3 -> output (N, L * F) float32. The parameter ``table``
    ((total_rows, F), initialised uniform in [-1e-4, 1e-4] as instant-ngp does) is the same for
    every backend.
    """

    def __init__(self, config: HashGridConfig = CPU_CONFIG, backend: str = "auto"):
        super().__init__()
        self.config = config
        rows = sum(level_layout(config)[2])
        self.table = torch.nn.Parameter(torch.empty(rows, config.n_features_per_level).uniform_(-1e-4, 1e-4))
        if backend not in ("auto", "torch", "cpu", "tcnn"):
            raise ValueError(f"backend must be auto, torch, cpu or tcnn, got {backend!r}")
        self.requested_backend = backend
        self._tables: dict[torch.device, _GridTables] = {}
        # tiny-cuda-nn's module, made on first use; kept out of the module tree (a plain dict), so
        # its own parameter vector never enters state_dict() or parameters(): self.table is the one
        self._tcnn_module: dict = {}

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def backend(self) -> str:
        """The backend the next forward will use."""
        from n3f.render import cpu_kernels

        wanted = self.requested_backend
        on_cuda = self.table.device.type == "cuda"
        if wanted == "torch":
            return "torch"
        if wanted == "tcnn" or (wanted == "auto" and on_cuda):
            if on_cuda and tcnn_available():
                return "tcnn"
            if wanted == "tcnn":
                raise RuntimeError("the tcnn backend needs tinycudann and a CUDA device; install it (see README) or use backend='torch'")
            return "torch"
        if on_cuda:
            raise RuntimeError("the cpu backend runs on CPU tensors only; use backend='auto' on CUDA")
        if cpu_kernels.hashgrid_module() is not None:
            return "cpu"
        if wanted == "cpu":
            raise RuntimeError(f"the fused CPU kernel could not be built: {cpu_kernels.failure()}")
        return "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backend = self.backend()
        if backend == "tcnn":
            return self._forward_tcnn(x)
        tables = self._tables.get(x.device)
        if tables is None:
            tables = self._tables[x.device] = _GridTables(self.config, x.device)
        x = x.float().contiguous()
        if backend == "cpu":
            from n3f.render.cpu_kernels import hashgrid_module

            return _FusedCPUFunction.apply(x, self.table, tables, hashgrid_module())
        return _HashGridFunction.apply(x, self.table, tables)

    def _forward_tcnn(self, x: torch.Tensor) -> torch.Tensor:
        # tiny-cuda-nn's own autograd function, fed with *our* table so gradients land on
        # self.table (the layout is the same; see the module docstring). Mirrors
        # tinycudann.Module.forward, including its batch padding. Checked on CUDA by
        # tests/render/test_encoding.py (skipped without tinycudann).
        import tinycudann as tcnn
        from tinycudann.modules import _C, _module_function

        module = self._tcnn_module.get(x.device)
        if module is None:
            module = self._tcnn_module[x.device] = tcnn.Encoding(3, self.config.tcnn_config(), dtype=torch.float32)
        n = x.shape[0]
        granularity = int(_C.batch_size_granularity())
        padded = (n + granularity - 1) // granularity * granularity
        x_padded = x if n == padded else torch.nn.functional.pad(x, [0, 0, 0, padded - n])
        out = _module_function.apply(
            module.native_tcnn_module, x_padded.float().contiguous(), self.table.reshape(-1).contiguous(), module.loss_scale
        )
        return out[:n, : self.output_dim].float()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


def tcnn_available() -> bool:
    """Whether tinycudann imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:
        return False
    return True


def eager_hash_encoding(x: torch.Tensor, table: torch.Tensor, config: HashGridConfig) -> torch.Tensor:
    """Reference: the same encoding in plain eager PyTorch (all eight corners gathered with
    autograd-tracked advanced indexing). Used by tests and as the benchmark baseline."""
    tables = _GridTables(config, x.device)
    rows, w = corner_indices_and_weights(x, tables)
    n, L, _ = rows.shape
    return (table[rows] * w[..., None]).sum(2).reshape(n, -1)
