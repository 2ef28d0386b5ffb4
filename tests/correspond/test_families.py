"""The chairs family: exact invertible maps, channels, registry errors, entangled latents."""

from __future__ import annotations

import pytest
import torch

from n3f.correspond.families import available_families, create_family
from n3f.correspond.generator import Generator, ProceduralGenerator
from n3f.errors import N3FError


def test_registry_lists_and_rejects(family):
    assert "chairs" in available_families()
    assert isinstance(family, Generator) and isinstance(family, ProceduralGenerator)
    with pytest.raises(N3FError, match="available: .*chairs"):
        create_family("sofas")


def test_forward_and_inverse_maps_invert_each_other(family):
    latents = family.sample_latents(8, generator=torch.Generator().manual_seed(3)) * 1.5  # also beyond the usual range
    y = torch.rand(2000, 3) * 2 - 1
    for z in latents:
        assert torch.linalg.det(family._params(z)["A"]) > 0
        x = family.from_template(z, y)
        assert (family.to_template(z, x) - y).abs().max() < 1e-5
        assert (family.from_template(z, family.to_template(z, y)) - y).abs().max() < 1e-5
        assert (x - y).abs().max() > 0.05  # the map is not the identity


def test_instance_channels_come_from_the_template(family):
    z = family.sample_latents(1, generator=torch.Generator().manual_seed(1))[0]
    y = family.template_surface_points(300, generator=torch.Generator().manual_seed(2))
    assert family.sdf(y).abs().max() < 1e-4
    x = family.from_template(z, y)
    out = family.field(z, labels=True)(x, x)
    assert out["sigma"].shape == (300,) and out["rgb"].shape == (300, 3) and out["feature"].shape == (300, family.feature_dim)
    torch.testing.assert_close(out["sigma"], torch.full((300,), family.sigma_scale / 2), atol=0.5, rtol=0)  # on the surface
    torch.testing.assert_close(out["label"].argmax(-1), family.part_labels(y))
    template = family.field(family.template_latent())
    descriptor = template(family.from_template(family.template_latent(), y), y)["feature"][:, :24]
    assert (out["feature"][:, :24] - descriptor).abs().mean() < 0.3  # same descriptor up to the noise


def test_latent_entangles_shape_and_texture(family):
    for dim in range(family.latent_dim):
        e = torch.zeros(family.latent_dim)
        e[dim] = 1.0
        p0, p1 = family._params(torch.zeros(family.latent_dim)), family._params(e)
        assert (p1["A"] - p0["A"]).abs().max() + (p1["amp"] - p0["amp"]).abs().max() > 1e-3
        assert (p1["texture"] - p0["texture"]).abs().max() > 1e-3
