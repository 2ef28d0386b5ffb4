"""The space rays are marched in: a bounded box, or NDC for forward-facing captures.

A space maps world rays (origins, unit directions) to rays in its own coordinates (where the field
lives and the occupancy grid is laid out), gives the box to march through and turns marched
distances back into world depth along the ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class BoxSpace:
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
class NDCSpace:
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


def space_from_state(state: dict):
    """Rebuild a space from :meth:`state` (checkpoints store it)."""
    if state["kind"] == "box":
        return BoxSpace(torch.tensor(state["aabb"]))
    return NDCSpace(
        torch.tensor(state["ref_c2w"]), state["focal"], state["width"], state["height"], state["near"], torch.tensor(state["aabb"])
    )
