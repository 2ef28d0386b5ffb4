"""Rays from pixels: pinhole cameras in OpenCV axes, with COLMAP distortion undone.

Pixel coordinates follow COLMAP (the centre of the top-left pixel is at (0.5, 0.5)).
"""

from __future__ import annotations

import numpy as np
import torch


def undistort_pixels(xy: np.ndarray, K: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Normalised camera coordinates (x/z, y/z) of distorted pixels.

    Args:
        xy: (N, 2) pixel coordinates.
        K: (3, 3) intrinsics.
        coefficients: OpenCV (k1, k2, p1, p2).

    Returns:
        (N, 2) float64 undistorted normalised coordinates (iterative inversion by OpenCV).
    """
    import cv2

    # OpenCV's pixel convention puts the top-left pixel centre at (0, 0): shift by half a pixel.
    pts = (np.asarray(xy, dtype=np.float64) - 0.5).reshape(-1, 1, 2)
    K0 = K.copy()
    K0[0, 2] -= 0.5
    K0[1, 2] -= 0.5
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
    coefficients = np.asarray(coefficients, dtype=np.float64)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4
        out = cv2.undistortPointsIter(pts, K0, coefficients, None, None, criteria)
    else:  # OpenCV 5 folded the iteration criteria into undistortPoints
        out = cv2.undistortPoints(pts, K0, coefficients, None, None, None, criteria)
    return out.reshape(-1, 2)


def pixel_rays(
    K: torch.Tensor, c2w: torch.Tensor, xy: torch.Tensor, distortion: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays through pixels of one camera.

    Args:
        K: (3, 3) intrinsics; c2w: (4, 4) OpenCV camera-to-world.
        xy: (N, 2) pixel coordinates.
        distortion: optional OpenCV (k1, k2, p1, p2) coefficients to undo.

    Returns:
        origins (N, 3) and unit directions (N, 3), float32, on ``xy``'s device.
    """
    if distortion is not None and np.any(distortion):
        normalised = torch.from_numpy(undistort_pixels(xy.cpu().numpy(), K.cpu().numpy(), distortion)).to(xy.device, torch.float32)
    else:
        K = K.to(xy.device, torch.float32)
        normalised = torch.stack([(xy[:, 0] - K[0, 2]) / K[0, 0], (xy[:, 1] - K[1, 2]) / K[1, 1]], -1)
    cam = torch.cat([normalised, torch.ones_like(normalised[:, :1])], -1)
    c2w = c2w.to(xy.device, torch.float32)
    dirs = cam @ c2w[:3, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(dirs).contiguous(), dirs


def pixel_grid(width: int, height: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H * W, 2) pixel-centre coordinates of a whole image, row-major."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5], -1).float()


def ray_aabb_intersect(origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through a box.

    Args:
        origins, dirs: (N, 3); aabb: (2, 3) [min, max].

    Returns:
        t_near (N,) clamped at 0 and t_far (N,); rays that miss have t_far < t_near.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far
