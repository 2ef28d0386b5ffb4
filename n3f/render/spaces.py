"""The space rays are marched in: a bounded box, NDC for forward-facing captures, or a contracted
world for unbounded captures.

A space maps world rays (origins, unit directions) to rays in its own coordinates, marches them
(samples in the packed layout of :mod:`n3f.render.volume`), places the samples' points in the
coordinates where the field lives and the occupancy grid is laid out (``aabb``), and turns marched
distances back into world depth along the ray.

The box and NDC spaces are linear: rays stay straight and are marched in even steps. The
contracted space keeps world rays and world distances; its points are contracted, so straight
rays bend in field coordinates, and its march lengthens steps beyond the box (see
:class:`ContractedSpace`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from n3f.render.rays import ray_aabb_intersect
from n3f.render.sampling import OccupancyGrid, march


class _LinearSpace:
    """March and place samples for spaces where rays stay straight (box, NDC)."""

    aabb: torch.Tensor

    @property
    def step_box(self) -> torch.Tensor:
        """(2, 3) box whose diagonal sets the march step (``diagonal / march_steps``)."""
        return self.aabb

    def march(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        t_max: torch.Tensor,
        grid: OccupancyGrid | None,
        step: float,
        near: float = 0.0,
        jitter: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Samples of rays already in this space (from :meth:`to_space`), in even steps of ``step``
        through ``aabb``, in occupied cells, before ``t_max``. Returns packed ``ray_indices``,
        ``t_starts``, ``t_ends`` (n,)."""
        far = float(t_max.max()) if len(t_max) else 1e10
        ray_indices, t_starts, t_ends = march(origins, dirs, grid, self.aabb.to(origins), step, near=near, far=far, jitter=jitter)
        if len(ray_indices):
            keep = t_starts < t_max[ray_indices]
            ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
        return ray_indices, t_starts, t_ends

    def points(self, origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(n, 3) points in this space at distances ``t`` (n,) along rays (n, 3) in this space."""
        return origins + t[:, None] * dirs


@dataclass
class BoxSpace(_LinearSpace):
    """World coordinates inside an axis-aligned box (scenes whose content is bounded)."""

    aabb: torch.Tensor  # (2, 3)

    def to_space(self, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rays in this space and the largest t to march to (here: no limit)."""
        return origins, dirs, torch.full_like(origins[:, 0], 1e10)

    def world_depth(self, origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """World distance along the ray of space distance ``t``."""
        return t

    def points_to_space(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) points in this space (here: unchanged)."""
        return points

    def state(self) -> dict:
        return {"kind": "box", "aabb": self.aabb.tolist()}


@dataclass
class NDCSpace(_LinearSpace):
    """Normalised device coordinates of a reference camera (NeRF's LLFF setting).

    World rays are expressed in the reference camera (the average of the capture's cameras), then
    mapped so that depths from ``near`` to infinity fill z in [-1, 1]. x and y span [-1, 1] over
    the reference image.
    """

    ref_c2w: torch.Tensor  # (4, 4) OpenCV
    focal: float
    width: int
    height: int
    near: float
    aabb: torch.Tensor  # (2, 3) box in NDC to march through

    @classmethod
    def from_frames(cls, frames, margin: float = 0.2) -> NDCSpace:
        """Reference camera = mean centre and mean orientation of ``frames``; near = 0.9 x the
        smallest near bound (or 0.1 of the camera spread when bounds are missing)."""
        centres = np.stack([f.camera_centre for f in frames])
        forward = np.mean([f.c2w[:3, 2] for f in frames], axis=0)
        forward /= np.linalg.norm(forward)
        down = np.mean([f.c2w[:3, 1] for f in frames], axis=0)
        right = np.cross(down, forward)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, centres.mean(0)
        nears = [f.near for f in frames if f.near]
        near = 0.9 * min(nears) if nears else 0.1 * float(np.ptp(centres, axis=0).max() or 1.0)
        f0 = frames[0]
        box = torch.tensor([[-1 - margin, -1 - margin, -1.0], [1 + margin, 1 + margin, 1.0]])
        return cls(torch.tensor(c2w, dtype=torch.float32), float(f0.K[0, 0]), f0.width, f0.height, float(near), box)

    def _gl(self, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        R, t = self.ref_c2w[:3, :3].to(origins), self.ref_c2w[:3, 3].to(origins)
        o = (origins - t) @ R
        d = dirs @ R
        flip = torch.tensor([1.0, -1.0, -1.0], device=o.device)  # OpenCV -> OpenGL camera axes
        return o * flip, d * flip

    def to_space(self, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        o, d = self._gl(origins, dirs)
        near = self.near
        t = -(near + o[:, 2]) / d[:, 2]
        o = o + t[:, None] * d
        ax, ay = -2 * self.focal / self.width, -2 * self.focal / self.height
        o_ndc = torch.stack([ax * o[:, 0] / o[:, 2], ay * o[:, 1] / o[:, 2], 1 + 2 * near / o[:, 2]], -1)
        d_ndc = torch.stack(
            [ax * (d[:, 0] / d[:, 2] - o[:, 0] / o[:, 2]), ay * (d[:, 1] / d[:, 2] - o[:, 1] / o[:, 2]), -2 * near / o[:, 2]], -1
        )
        length = d_ndc.norm(dim=-1)
        return o_ndc, d_ndc / length[:, None], length  # t in [0, length] covers near .. infinity

    def points_to_space(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points (in front of the reference camera) -> (N, 3) NDC points."""
        R, t = self.ref_c2w[:3, :3].to(points), self.ref_c2w[:3, 3].to(points)
        flip = torch.tensor([1.0, -1.0, -1.0], device=points.device)
        o = ((points - t) @ R) * flip
        ax, ay = -2 * self.focal / self.width, -2 * self.focal / self.height
        return torch.stack([ax * o[:, 0] / o[:, 2], ay * o[:, 1] / o[:, 2], 1 + 2 * self.near / o[:, 2]], -1)

    def world_depth(self, origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Depth along the reference camera's axis of NDC distance ``t`` (inf at z_ndc = 1)."""
        o_ndc, d_ndc, _ = self.to_space(origins, dirs)
        z_ndc = o_ndc[:, 2] + t.reshape(-1) * d_ndc[:, 2]
        return (2 * self.near / (1 - z_ndc).clamp_min(1e-6)).reshape(t.shape)

    def state(self) -> dict:
        return {
            "kind": "ndc",
            "ref_c2w": self.ref_c2w.tolist(),
            "focal": self.focal,
            "width": self.width,
            "height": self.height,
            "near": self.near,
            "aabb": self.aabb.tolist(),
        }


def contract(y: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's contraction with the L-infinity norm (nerfstudio's ``SceneContraction(order=inf)``):
    (N, 3) points -> (N, 3) points in [-2, 2]^3; the cube [-1, 1]^3 is left as it is, a point at
    norm ``n > 1`` goes to ``(2 - 1 / n) * y / n``."""
    n = y.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    return torch.where(n <= 1, y, (2 - 1 / n) * y / n)


def uncontract(z: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`contract`: (N, 3) points in (-2, 2)^3 -> (N, 3) points."""
    n = z.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    return torch.where(n <= 1, z, z / (n * (2 - n)).clamp_min(1e-12))


@dataclass
class ContractedSpace:
    """An unbounded world: the box ``inner`` at full resolution, everything beyond it squeezed
    into a shell around it (mip-NeRF 360 style, for captures whose background is far away).

    Field coordinates are ``contract((x - centre) / half)`` with the box's centre and per-axis
    half extents, so the box fills [-1, 1]^3 unchanged and infinity lies on the faces of
    ``aabb`` = [-2, 2]^3.

    Rays stay in the world and ``t`` is world distance. The march (:meth:`march`) steps evenly
    (``step``, world units) to ``T``, the farther of where the ray leaves the box and the box's
    largest half extent, then evenly in disparity (``u = 2T - T^2 / t``), mip-NeRF 360's spacing,
    so steps grow as ``t^2`` and each ray needs about ``2T / step`` candidates to reach ``far``
    (``far_scale`` half extents). Past the box a step spans about as much contracted distance
    as a step inside it (on random rays from inside the box: the median alike, the 99th
    percentile under 4 times; ``tests/render/test_contraction.py``).
    """

    inner: torch.Tensor  # (2, 3) world box that stays uncontracted
    far_scale: float = 1000.0

    def __post_init__(self):
        self.inner = torch.as_tensor(self.inner, dtype=torch.float32).reshape(2, 3)
        self.aabb = torch.tensor([[-2.0] * 3, [2.0] * 3])

    @property
    def step_box(self) -> torch.Tensor:
        return self.inner

    @property
    def far(self) -> float:
        """World distance at which rays stop (``far_scale`` largest half extents)."""
        return self.far_scale * float((self.inner[1] - self.inner[0]).max()) / 2

    def to_space(self, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """World rays, unchanged, and the largest t to march to (:attr:`far`)."""
        return origins, dirs, torch.full_like(origins[:, 0], self.far)

    def points_to_space(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) contracted points in [-2, 2]^3."""
        inner = self.inner.to(points)
        centre, half = (inner[0] + inner[1]) / 2, (inner[1] - inner[0]) / 2
        return contract((points - centre) / half)

    def points(self, origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(n, 3) contracted points at world distances ``t`` (n,) along world rays (n, 3)."""
        return self.points_to_space(origins + t[:, None] * dirs)

    def world_depth(self, origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """World distance along the ray of distance ``t`` (the same: this space marches in the world)."""
        return t

    def march(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        t_max: torch.Tensor,
        grid: OccupancyGrid | None,
        step: float,
        near: float = 0.0,
        jitter: torch.Tensor | None = None,
        max_samples_per_ray: int = 1024,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Samples of world rays, even to ``T`` then even in disparity (see the class docstring),
        in occupied cells, from ``near`` to ``t_max`` (n_rays,). ``jitter`` (n_rays,) in [0, 1)
        shifts each ray's samples (stratified training). Returns packed ``ray_indices``,
        ``t_starts``, ``t_ends`` (n,), ordered by ray then distance; intervals lengthen with
        distance."""
        inner = self.inner.to(origins)
        half = float((inner[1] - inner[0]).max()) / 2
        _, t_exit = ray_aabb_intersect(origins, dirs, inner)
        T = t_exit.clamp_min(half)
        t_far = t_max.clamp(min=near, max=self.far)
        u_near = _to_disparity(torch.full_like(T, near), T)
        u_far = _to_disparity(t_far, T)
        n_steps = torch.ceil((u_far - u_near) / step).clamp(0, max_samples_per_ray).long()
        k_max = int(n_steps.max()) if len(n_steps) else 0
        k = torch.arange(k_max, device=origins.device)
        ray_indices, ks = torch.nonzero(k[None, :] < n_steps[:, None], as_tuple=True)
        offset = 0.5 if jitter is None else jitter.to(origins.dtype)[ray_indices]
        u_mid = u_near[ray_indices] + (ks.to(origins.dtype) + offset) * step
        keep = u_mid < u_far[ray_indices]
        ray_indices, u_mid = ray_indices[keep], u_mid[keep]
        T_s, u_hi = T[ray_indices], u_far[ray_indices]
        # each ray's last sample reaches far: beyond the box half a step in u is a deep shell
        last = torch.ones_like(ray_indices, dtype=torch.bool)
        last[:-1] = ray_indices[1:] != ray_indices[:-1]
        u_end = torch.where(last, u_hi, torch.minimum(u_mid + step / 2, u_hi))
        if grid is not None and len(ray_indices):
            t_mid = _from_disparity(u_mid, T_s)
            occupied = grid.is_occupied(self.points(origins[ray_indices], dirs[ray_indices], t_mid))
            ray_indices, u_mid, u_end, T_s = (x[occupied] for x in (ray_indices, u_mid, u_end, T_s))
        # as in the linear march, a sample spans half a step either side of its middle
        return ray_indices, _from_disparity(u_mid - step / 2, T_s), _from_disparity(u_end, T_s)

    def state(self) -> dict:
        return {"kind": "contracted", "inner": self.inner.tolist(), "far_scale": self.far_scale}


def _to_disparity(t: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The march's parameter u of distance t: t up to T, then ``2T - T^2 / t`` (below 2T)."""
    return torch.where(t <= T, t, 2 * T - T * T / t.clamp_min(1e-12))


def _from_disparity(u: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_to_disparity` (u < 2T)."""
    return torch.where(u <= T, u, T * T / (2 * T - u).clamp_min(1e-12))


def space_from_state(state: dict):
    """Rebuild a space from :meth:`state` (checkpoints store it)."""
    if state["kind"] == "box":
        return BoxSpace(torch.tensor(state["aabb"]))
    if state["kind"] == "contracted":
        return ContractedSpace(torch.tensor(state["inner"]), state["far_scale"])
    return NDCSpace(
        torch.tensor(state["ref_c2w"]), state["focal"], state["width"], state["height"], state["near"], torch.tensor(state["aabb"])
    )
