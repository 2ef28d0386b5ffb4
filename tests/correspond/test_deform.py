"""DeformedField: rendering through a deformation equals rendering the moved field."""

from __future__ import annotations

import torch

from n3f.render.deform import DeformedField
from n3f.render.render import render_rays
from n3f.render.spaces import BoxSpace


def sphere(centre):
    centre = torch.tensor(centre)

    def field(points, dirs):
        inside = ((points - centre).norm(dim=-1) < 0.3).float()
        return {"sigma": 50 * inside, "rgb": points.clamp(0, 1)}

    return field


def test_deformed_field_evaluates_wrapped_field_at_deformed_points():
    shift = torch.tensor([0.2, -0.1, 0.05])
    wrapped = DeformedField(sphere([0.0, 0.0, 0.0]), lambda p: p - shift, coordinates_channel="template_coords")
    p = torch.rand(100, 3) - 0.5
    out = wrapped(p, p)
    ref = sphere([0.0, 0.0, 0.0])(p - shift, p)
    torch.testing.assert_close(out["sigma"], ref["sigma"])
    torch.testing.assert_close(out["rgb"], ref["rgb"])
    torch.testing.assert_close(out["template_coords"], p - shift)


def test_rendering_a_translation_equals_rendering_the_translated_field():
    shift = [0.25, 0.0, 0.0]
    origins = torch.tensor([[x, 0.0, -2.0] for x in torch.linspace(-0.6, 0.6, 25).tolist()])
    dirs = torch.tensor([[0.0, 0.0, 1.0]]).expand_as(origins)
    space = BoxSpace(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    moved = render_rays(DeformedField(sphere([0.0, 0.0, 0.0]), lambda p: p - torch.tensor(shift)), origins, dirs, space, None, 0.01)
    direct = render_rays(sphere(shift), origins, dirs, space, None, 0.01)
    torch.testing.assert_close(moved["opacity"], direct["opacity"])
    centre = (moved["opacity"][:, 0] * origins[:, 0]).sum() / moved["opacity"][:, 0].sum()
    assert abs(centre - 0.25) < 0.03  # the sphere did move to +x
