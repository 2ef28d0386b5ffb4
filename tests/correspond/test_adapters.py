"""A user's NeRF-GAN through the adapter: protocol, renderable field, and a few fit steps."""

from __future__ import annotations

import torch

from n3f.correspond.adapters import NeRFGANAdapter, TinyNeRFGenerator
from n3f.correspond.generator import Generator
from n3f.correspond.train import CorrespondConfig, fit_correspondence, load_model


def make_adapter():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return NeRFGANAdapter(TinyNeRFGenerator(latent_dim=8, feature_dim=16), 8, 16, aabb, keys={"sigma": "density", "feature": "features"})


def test_adapter_is_a_generator_with_differentiable_channels():
    gen = make_adapter()
    assert isinstance(gen, Generator)
    z = gen.sample_latents(2, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 8)
    p = torch.zeros(5, 3, requires_grad=True)
    out = gen.field(z[0])(p, p)
    assert out["sigma"].shape == (5,) and out["rgb"].shape == (5, 3) and out["feature"].shape == (5, 16)
    assert (out["sigma"] > 25).all()  # the origin is inside the blob
    out["feature"].sum().backward()
    assert p.grad.abs().sum() > 0 and all(q.grad is None for q in gen.module.parameters())


def test_fit_runs_on_an_adapted_generator(tmp_path):
    run = fit_correspondence(
        CorrespondConfig(family="tiny-gan", steps=6, batch=1, points=64), tmp_path / "run", quiet=True, generator=make_adapter()
    )
    model = load_model(run)
    assert model.config.latent_dim == 8
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines and '"step": 6' in lines[-1]
    moved = model.to_template(torch.zeros(8), torch.rand(10, 3))
    assert torch.isfinite(moved).all()
