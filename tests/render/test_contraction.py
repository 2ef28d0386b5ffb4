"""The contracted space for unbounded captures: the map, its march, and renders beyond the box."""

from __future__ import annotations

import pytest
import torch

from n3f.render.render import render_rays
from n3f.render.sampling import OccupancyGrid
from n3f.render.spaces import BoxSpace, ContractedSpace, contract, space_from_state, uncontract

INNER = torch.tensor([[-1.0, -0.5, -1.0], [1.0, 1.5, 0.6]])  # world box: centre (0, 0.5, -0.2), half (1, 1, 0.8)
STEP = 0.02


def test_contraction_keeps_the_cube_squeezes_the_world_into_the_shell_and_inverts():
    torch.manual_seed(0)
    inside = torch.rand(1000, 3) * 2 - 1
    assert torch.equal(contract(inside), inside)
    far = torch.randn(1000, 3) * torch.logspace(0.5, 6, 1000)[:, None]
    far = far[far.abs().amax(-1) > 1]
    z, n = contract(far), far.abs().amax(-1)
    torch.testing.assert_close(z.abs().amax(-1), 2 - 1 / n)  # in the shell 1 < |z| < 2, same direction
    torch.testing.assert_close(torch.nn.functional.normalize(z, dim=-1), torch.nn.functional.normalize(far, dim=-1))
    resolved = n < 1e4  # beyond, float32 cannot tell 2 - 1/n from 2
    torch.testing.assert_close(uncontract(z)[resolved], far[resolved], rtol=1e-3, atol=1e-5)


def test_points_fill_the_unit_cube_inside_the_box_and_the_state_round_trips():
    space = ContractedSpace(INNER)
    corners = INNER.clone()
    torch.testing.assert_close(space.points_to_space(corners), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    again = space_from_state(space.state())
    assert isinstance(again, ContractedSpace) and torch.equal(again.inner, space.inner) and again.far_scale == space.far_scale
    assert torch.equal(again.aabb, torch.tensor([[-2.0] * 3, [2.0] * 3]))


def _rays(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centre = (INNER[0] + INNER[1]) / 2
    origins = centre + (torch.rand(n, 3, generator=g) - 0.5) * (INNER[1] - INNER[0]) * 0.9  # cameras in the box
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return origins, dirs


def test_the_march_steps_evenly_in_the_box_then_evenly_in_contracted_space_out_to_far():
    space = ContractedSpace(INNER)
    o, d = _rays(300)
    _, _, t_max = space.to_space(o, d)
    ri, ts, te = space.march(o, d, t_max, None, STEP)
    assert torch.all(ri[1:] >= ri[:-1])
    same = ri[1:] == ri[:-1]
    torch.testing.assert_close(te[:-1][same], ts[1:][same], rtol=1e-4, atol=1e-6)  # intervals tile each ray
    assert torch.all(te > ts)
    mids = (ts + te) / 2
    inside = (te - ts - STEP).abs() < 1e-5
    assert inside.float().mean() > 0.3
    ends = o[ri] + te[:, None] * d[ri]
    in_box = ((ends >= INNER[0]) & (ends <= INNER[1])).all(-1)
    assert torch.all(inside[in_box]), "every sample that ends in the box is one even step long"
    # every ray reaches far, where the contracted point lies on the shell's outer face
    last = torch.ones_like(ri, dtype=torch.bool)
    last[:-1] = ri[1:] != ri[:-1]
    torch.testing.assert_close(te[last], torch.full((300,), space.far), rtol=1e-3, atol=0)
    assert (space.points(o[ri[last]], d[ri[last]], mids[last]).abs().amax(-1) > 1.99).all()
    # beyond the box, consecutive samples are about as close in contracted space as inside it
    z = space.points(o[ri], d[ri], mids)
    gap = (z[1:] - z[:-1]).norm(dim=-1)[same & ~last[1:]]  # the last sample is stretched to far
    inner_gap = STEP / float(((INNER[1] - INNER[0]) / 2).min())
    q50, q99 = torch.quantile(gap, torch.tensor([0.5, 0.99])).tolist()
    assert q50 < 1.2 * inner_gap and q99 < 4 * inner_gap, (q50, q99, inner_gap)  # rays from the box's edges see more
    # candidates per ray: about 2T / step, T about the box's size, not far / step
    assert len(ri) / 300 < 4 * float((INNER[1] - INNER[0]).norm()) / STEP


def test_jitter_shifts_samples_within_their_step_and_the_grid_keeps_only_occupied_cells():
    space = ContractedSpace(INNER)
    o, d = _rays(50, seed=1)
    _, _, t_max = space.to_space(o, d)
    jitter = torch.rand(50, generator=torch.Generator().manual_seed(2))
    ri, ts, te = space.march(o, d, t_max, None, STEP, jitter=jitter)
    first = torch.ones_like(ri, dtype=torch.bool)
    first[1:] = ri[1:] != ri[:-1]
    torch.testing.assert_close(((ts + te) / 2)[first], jitter * STEP, atol=1e-6, rtol=0)  # first samples lie in the box
    grid = OccupancyGrid(space.aabb, 32)
    grid.occupied.zero_()
    grid.occupied[16:, :, :] = True  # contracted x >= 0
    gri, gts, gte = space.march(o, d, t_max, grid, STEP, jitter=jitter)
    kept = space.points(o[gri], d[gri], (gts + gte) / 2)
    assert (kept[:, 0] >= 0).all() and len(gri) < len(ri)
    all_pts = space.points(o[ri], d[ri], (ts + te) / 2)
    assert len(gri) == int((all_pts[:, 0] >= 0).sum())


def _world_shell(radius: float, to_world):
    """A field whose world is empty out to ``radius`` around the box's centre and solid beyond;
    ``to_world`` maps the field's points (what a student sees) back to the world."""
    centre = (INNER[0] + INNER[1]) / 2

    def field(points, dirs):
        solid = (to_world(points) - centre).norm(dim=-1) > radius
        return {"sigma": solid.float() * 1e3, "rgb": torch.ones(len(points), 3)}

    return field


@pytest.mark.parametrize("radius", [2.5, 6.0])
def test_a_wall_far_beyond_the_box_renders_opaque_at_its_exact_depth(radius):
    space = ContractedSpace(INNER)
    o, d = _rays(200, seed=3)
    centre, half = (INNER[0] + INNER[1]) / 2, (INNER[1] - INNER[0]) / 2
    out = render_rays(_world_shell(radius, lambda z: uncontract(z) * half + centre), o, d, space, None, STEP, return_samples=True)
    torch.testing.assert_close(out["opacity"][:, 0], torch.ones(200), atol=1e-4, rtol=0)
    oc = o - centre
    b = (oc * d).sum(-1)
    exact = -b + (b * b - (oc * oc).sum(-1) + radius**2).sqrt()  # ray / sphere exit
    # the wall is found within the sample interval that crosses it, which lengthens with distance
    s = out["samples"]
    length = torch.zeros(200).scatter_reduce(0, s["ray_indices"], s["t_ends"] - s["t_starts"], "amax")
    err = (out["depth"][:, 0] - exact).abs()
    assert torch.all(err <= length), (err - length).max()
    # a box space ends rays at its walls: it cannot see the wall at all
    box = BoxSpace(INNER)
    boxed = render_rays(_world_shell(radius, lambda x: x), o, d, box, None, STEP)
    assert float(boxed["opacity"].max()) == 0.0
