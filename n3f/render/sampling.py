"""Sampling points along rays: an occupancy grid that skips empty space, and stratified sampling.

``OccupancyGrid`` follows nerfacc's ``OccGridEstimator`` (a binary grid over a box, refreshed from
the field's density with an exponential moving average and a threshold), written in PyTorch so it
runs on the CPU too (nerfacc's marcher needs CUDA). ``march`` returns samples in the packed layout
of :mod:`n3f.render.volume`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from n3f.render.rays import ray_aabb_intersect


class OccupancyGrid(torch.nn.Module):
    """A binary occupancy grid over an axis-aligned box.

    Args:
        aabb: (2, 3) box [min, max] in the space rays are marched in.
        resolution: cells per axis.

    Buffers: ``density`` (R, R, R) running maximum-decayed density, ``occupied`` (R, R, R) bool.
    Starts fully occupied, so nothing is skipped before the first update.
    """

    def __init__(self, aabb: torch.Tensor, resolution: int = 128):
        super().__init__()
        self.resolution = int(resolution)
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        R = self.resolution
        self.register_buffer("density", torch.zeros(R, R, R))
        self.register_buffer("occupied", torch.ones(R, R, R, dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def cell_of(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index (N,) of points (N, 3) and whether they lie inside the box (N,)."""
        u = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u < 1)).all(-1)
        ijk = (u.clamp(0, 1 - 1e-6) * self.resolution).long()
        R = self.resolution
        return (ijk[:, 0] * R + ijk[:, 1]) * R + ijk[:, 2], inside

    def is_occupied(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the point is inside the box and its cell is occupied."""
        idx, inside = self.cell_of(points)
        return inside & self.occupied.reshape(-1)[idx]

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
        decay: float = 0.95,
        threshold: float = 0.01,
        fraction: float = 1.0,
        chunk: int = 1 << 16,
        relative: bool = True,
        refresh_occupied: bool = False,
    ) -> None:
        """Refresh the grid from the field.

        Each refreshed cell is probed at a random point inside it; its running density becomes
        ``max(decay * old, new)``; a cell is occupied when its density exceeds
        ``min(threshold, mean density)`` (nerfacc's rule) or, with ``relative=False``, ``threshold``.

        Args:
            density_fn: (N, 3) points -> (N,) densities.
            generator: random source (for reproducible runs).
            fraction: share of cells refreshed (all of them for the first updates).
            refresh_occupied: also refresh every occupied cell (nerfacc refreshes a share of the
                occupied cells; refreshing them all carves empty space in few updates).
        """
        R = self.resolution
        total = R**3
        device = self.density.device
        if fraction >= 1.0 or self.updates < 4:
            cells = torch.arange(total, device=device)
        else:
            pick = _rand(total, generator, device) < fraction
            if refresh_occupied:
                pick |= self.occupied.reshape(-1)
            cells = torch.nonzero(pick).squeeze(1)
        ijk = torch.stack([cells // (R * R), (cells // R) % R, cells % R], -1).float()
        jitter = _rand(ijk.shape, generator, device)
        points = self.aabb[0] + (ijk + jitter) / R * (self.aabb[1] - self.aabb[0])
        flat = self.density.view(-1)
        for start in range(0, len(cells), chunk):
            sl = slice(start, start + chunk)
            new = density_fn(points[sl]).reshape(-1).float()
            flat[cells[sl]] = torch.maximum(flat[cells[sl]] * decay, new)
        limit = torch.clamp(self.density.mean(), max=threshold) if relative else torch.tensor(threshold)
        self.occupied.copy_(self.density > limit)
        self.updates += 1

    def occupied_fraction(self) -> float:
        """Share of cells currently marked occupied."""
        return float(self.occupied.float().mean())


def _rand(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers on ``device`` drawn from ``generator`` on its own device (a CPU
    generator drives CUDA runs too, so a run's random stream does not depend on the device)."""
    if generator is None or generator.device == torch.device(device):
        return torch.rand(shape, generator=generator, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def march(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: OccupancyGrid | None,
    aabb: torch.Tensor,
    step: float,
    near: float = 0.0,
    far: float = 1e10,
    jitter: torch.Tensor | None = None,
    max_samples_per_ray: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """March rays through the box in steps of ``step``, keeping samples in occupied cells.

    Args:
        origins, dirs: (n_rays, 3) rays (unit directions).
        grid: occupancy grid, or None to keep every sample inside the box.
        aabb: (2, 3) box to march through.
        step: distance between samples.
        near, far: limits on t.
        jitter: optional (n_rays,) offsets in [0, 1) of the first sample (stratified training).
        max_samples_per_ray: cap on candidate samples per ray.

    Returns:
        ray_indices (n,), t_starts (n,), t_ends (n,): packed samples ordered by ray then t.
    """
    t_near, t_far = ray_aabb_intersect(origins, dirs, aabb)
    t_near = t_near.clamp_min(near)
    t_far = t_far.clamp_max(far)
    hit = t_far > t_near
    n_steps = torch.where(hit, torch.ceil((t_far - t_near) / step), torch.zeros_like(t_far)).clamp_max(max_samples_per_ray).long()
    k_max = int(n_steps.max()) if len(n_steps) else 0
    if k_max == 0:
        empty = torch.zeros(0, device=origins.device)
        return empty.long(), empty, empty
    kernels = _march_kernels(origins, grid)
    if kernels is not None:  # the fused kernel: same samples, without the (n_rays, k_max) candidates in memory
        offset = torch.full_like(t_near, 0.5) if jitter is None else jitter.to(t_near.dtype)
        ray_indices, t_mid = kernels.march_occupied(origins, dirs, t_near, t_far, n_steps, offset, float(step), grid.occupied, grid.aabb)
        return ray_indices, t_mid - step / 2, t_mid + step / 2
    k = torch.arange(k_max, device=origins.device)
    valid = k[None, :] < n_steps[:, None]
    ray_indices, ks = torch.nonzero(valid, as_tuple=True)
    offset = 0.5 if jitter is None else jitter[ray_indices]
    t_mid = t_near[ray_indices] + (ks.float() + offset) * step
    keep = t_mid < t_far[ray_indices]
    if grid is not None:
        points = origins[ray_indices] + t_mid[:, None] * dirs[ray_indices]
        keep &= grid.is_occupied(points)
    ray_indices, t_mid = ray_indices[keep], t_mid[keep]
    return ray_indices, t_mid - step / 2, t_mid + step / 2


def _march_kernels(origins: torch.Tensor, grid: OccupancyGrid | None):
    """The fused CPU kernels when they apply to this march (a grid, float32 CPU tensors), else None."""
    if grid is None or origins.device.type != "cpu" or origins.dtype != torch.float32 or not _USE_MARCH_KERNEL:
        return None
    from n3f.render.cpu_kernels import hashgrid_module

    return hashgrid_module()


# Tests switch this off to compare the kernel with the PyTorch form it replaces.
_USE_MARCH_KERNEL = True


def stratified(
    t_near: torch.Tensor, t_far: torch.Tensor, n_samples: int, jitter: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly spaced (optionally jittered) samples between per-ray bounds, batched layout.

    Args:
        t_near, t_far: (n_rays,).
        jitter: optional (n_rays, n_samples) in [0, 1).

    Returns:
        t_starts, t_ends: (n_rays, n_samples).
    """
    edges = torch.linspace(0, 1, n_samples + 1, device=t_near.device)
    t = t_near[:, None] + (t_far - t_near)[:, None] * edges[None]
    starts, ends = t[:, :-1], t[:, 1:]
    if jitter is not None:
        width = ends - starts
        mids = starts + width * jitter
        return mids - width / 2, mids + width / 2
    return starts, ends


def merge_packed(
    *sample_sets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge several packed sample sets of the same rays into one, ordered by ray then distance.

    Each set may come from its own sampler (e.g. the occupancy-grid marcher and a stratified
    sampler near the camera); intervals of different sets may overlap. Compositing the merged set
    with additive densities integrates each set's density over its own intervals.

    Args:
        sample_sets: ``(ray_indices (n_k,), t_starts (n_k,), t_ends (n_k,))`` per set.

    Returns:
        ray_indices, t_starts, t_ends (n,), and ``source`` (n,): each merged sample's index into
        the concatenation of the sets (so per-sample values computed set by set can be reordered
        with ``torch.cat(values)[source]``).
    """
    ray_indices = torch.cat([s[0] for s in sample_sets])
    t_starts = torch.cat([s[1] for s in sample_sets])
    t_ends = torch.cat([s[2] for s in sample_sets])
    if len(ray_indices) == 0:
        return ray_indices, t_starts, t_ends, torch.zeros(0, dtype=torch.long, device=ray_indices.device)
    mids = ((t_starts + t_ends) / 2).double()
    span = float(mids.max() - mids.min()) + 1.0
    key = ray_indices.double() * span + (mids - mids.min())
    source = torch.argsort(key, stable=True)
    return ray_indices[source], t_starts[source], t_ends[source], source
