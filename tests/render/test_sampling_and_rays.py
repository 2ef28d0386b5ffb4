"""Occupancy grid on an analytic density, marching, rays (with distortion) and NDC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n3f.render.rays import pixel_grid, pixel_rays, ray_aabb_intersect, undistort_pixels
from n3f.render.sampling import OccupancyGrid, march, stratified
from n3f.render.spaces import NDCSpace

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def ball_density(points: torch.Tensor) -> torch.Tensor:
    """100 inside a ball of radius 0.4 at (0.2, 0, 0), 0 elsewhere."""
    return 100.0 * ((points - torch.tensor([0.2, 0.0, 0.0])).norm(dim=-1) < 0.4).float()


def test_grid_marks_empty_space_empty():
    grid = OccupancyGrid(BOX, resolution=32)
    grid.update(ball_density, generator=torch.Generator().manual_seed(0), decay=0.0, threshold=1.0, relative=False)
    R = 32
    centres = (torch.stack(torch.meshgrid(*[torch.arange(R)] * 3, indexing="ij"), -1).reshape(-1, 3).float() + 0.5) / R * 2 - 1
    dist = (centres - torch.tensor([0.2, 0.0, 0.0])).norm(dim=-1)
    occ = grid.occupied.reshape(-1)
    half_diag = (3**0.5) / R
    assert not occ[dist > 0.4 + half_diag].any(), "a cell entirely outside the ball is marked occupied"
    assert occ[dist < 0.4 - half_diag].all(), "a cell entirely inside the ball is marked empty"
    assert 0.01 < grid.occupied_fraction() < 0.05


def test_march_keeps_only_occupied_samples():
    grid = OccupancyGrid(BOX, resolution=32)
    grid.update(ball_density, generator=torch.Generator().manual_seed(0), decay=0.0, threshold=1.0, relative=False)
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 0.9, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    rays, t0, t1 = march(origins, dirs, grid, BOX, step=0.01)
    assert set(rays.tolist()) == {0}  # the second ray misses the ball
    x = origins[0, 0] + (t0 + t1) / 2
    assert x.min() > -0.2 - 2 / 32 - 0.01 and x.max() < 0.6 + 2 / 32 + 0.01
    assert torch.all(t1 - t0 > 0) and torch.all(torch.diff(t0) > 0)
    # without a grid every step inside the box is kept
    rays, t0, _ = march(origins[:1], dirs[:1], None, BOX, step=0.01)
    assert len(t0) == 200


@pytest.mark.parametrize("jittered", [False, True], ids=["centres", "jittered"])
def test_the_fused_march_kernel_gives_exactly_the_samples_of_the_pytorch_march(monkeypatch, jittered):
    import n3f.render.sampling as sampling
    from n3f.render.cpu_kernels import hashgrid_module

    assert hashgrid_module() is not None, "the fused CPU kernels should build on this machine"
    g = torch.Generator().manual_seed(4)
    grid = OccupancyGrid(BOX * 1.1, resolution=24)  # a grid box unlike the march box
    grid.occupied.copy_(torch.rand(24, 24, 24, generator=g) < 0.3)
    origins = torch.randn(500, 3, generator=g)  # inside and outside the box, some rays missing it
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    jitter = torch.rand(500, generator=g) if jittered else None
    kw = dict(near=0.05, far=4.0, jitter=jitter, max_samples_per_ray=150)
    fused = march(origins, dirs, grid, BOX, 0.013, **kw)
    monkeypatch.setattr(sampling, "_USE_MARCH_KERNEL", False)
    plain = march(origins, dirs, grid, BOX, 0.013, **kw)
    assert len(plain[0]) > 1000 and len(set(plain[0].tolist())) > 100
    for a, b in zip(fused, plain):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_stratified_covers_bounds():
    t0, t1 = stratified(torch.tensor([1.0]), torch.tensor([3.0]), 4)
    torch.testing.assert_close(t0, torch.tensor([[1.0, 1.5, 2.0, 2.5]]))
    torch.testing.assert_close(t1, torch.tensor([[1.5, 2.0, 2.5, 3.0]]))


def test_ray_aabb():
    t0, t1 = ray_aabb_intersect(torch.tensor([[-3.0, 0, 0]]), torch.tensor([[1.0, 0, 0]]), BOX)
    assert float(t0) == 2.0 and float(t1) == 4.0


def test_pixel_rays_reproject_to_their_pixels():
    K = torch.tensor([[200.0, 0, 64], [0, 210.0, 50], [0, 0, 1]])
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.1, -0.2, 0.3])
    xy = pixel_grid(128, 100)[::37]
    o, d = pixel_rays(K, c2w, xy)
    pts = o + 2.5 * d
    cam = pts - c2w[:3, 3]
    uv = (cam @ K.T)[:, :2] / cam[:, 2:3]
    torch.testing.assert_close(uv, xy, atol=1e-3, rtol=0)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(len(d)))


def test_distortion_is_undone():
    import cv2

    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    coeffs = np.array([-0.12, 0.03, 0.001, -0.002])
    pts = np.array([[0.2, -0.1, 1.0], [-0.3, 0.25, 1.0], [0.0, 0.0, 1.0]])
    # OpenCV's pixel origin is the top-left pixel centre; ours is its corner (COLMAP): shift by 0.5
    projected = (
        cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]), coeffs)[0].reshape(-1, 2)
        + 0.5
    )
    normalised = undistort_pixels(projected, K, coeffs)
    np.testing.assert_allclose(normalised, pts[:, :2], atol=1e-6)
    o, d = pixel_rays(torch.tensor(K, dtype=torch.float32), torch.eye(4), torch.tensor(projected, dtype=torch.float32), coeffs)
    np.testing.assert_allclose((d[:, :2] / d[:, 2:]).numpy(), pts[:, :2], atol=1e-5)


def test_ndc_keeps_rays_straight_and_depth_round_trips():
    from dataclasses import dataclass

    @dataclass
    class F:
        c2w: np.ndarray
        K: np.ndarray
        width: int = 120
        height: int = 90
        near: float = 0.5

        @property
        def camera_centre(self):
            return self.c2w[:3, 3]

    frames = [F(np.eye(4), np.array([[100.0, 0, 60], [0, 100.0, 45], [0, 0, 1]]))]
    space = NDCSpace.from_frames(frames)
    origins = torch.zeros(3, 3)
    dirs = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [0.1, -0.05, 1.0], [-0.2, 0.1, 1.0]]), dim=-1)
    o, d, length = space.to_space(origins, dirs)
    assert torch.allclose(o[:, 2], torch.full((3,), -1.0), atol=1e-5)  # starts on the near plane
    # a world point at depth z lands on the NDC ray at the matching t, and world_depth inverts it
    for z in (0.6, 2.0, 10.0):
        t_world = z / dirs[:, 2]
        p = origins + t_world[:, None] * dirs
        p_ndc_z = 1 - 2 * space.near / p[:, 2]
        t_ndc = (p_ndc_z - o[:, 2]) / d[:, 2]
        torch.testing.assert_close(space.world_depth(origins, dirs, t_ndc), torch.full((3,), z), rtol=1e-4, atol=1e-4)
        # points_to_space puts the world point on that NDC ray at that t
        torch.testing.assert_close(space.points_to_space(p), o + t_ndc[:, None] * d, rtol=1e-4, atol=1e-4)
