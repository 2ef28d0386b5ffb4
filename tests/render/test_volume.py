"""Compositing against nerfacc's CPU-capable (batched) functions, and packed == batched."""

from __future__ import annotations

import pytest
import torch

from n3f.render.volume import accumulate_along_rays, composite, render_weight_from_density

nerfacc = pytest.importorskip("nerfacc", reason="nerfacc is the reference for compositing")


def _random_rays(n_rays=64, n_samples=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    deltas = torch.rand(n_rays, n_samples, generator=g) * 0.05 + 1e-3
    ends = torch.cumsum(deltas, -1)
    starts = ends - deltas
    sigmas = torch.rand(n_rays, n_samples, generator=g) * torch.rand(n_rays, 1, generator=g) * 50
    values = torch.rand(n_rays, n_samples, 5, generator=g)
    return starts.double(), ends.double(), sigmas.double(), values.double()


def test_weights_match_nerfacc_batched():
    starts, ends, sigmas, values = _random_rays()
    ours = render_weight_from_density(starts, ends, sigmas)
    ref_w, ref_t, ref_a = nerfacc.render_weight_from_density(starts, ends, sigmas)
    for a, b in zip(ours, (ref_w, ref_t, ref_a)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_accumulate_matches_nerfacc_batched():
    starts, ends, sigmas, values = _random_rays(seed=1)
    w, _, _ = render_weight_from_density(starts, ends, sigmas)
    torch.testing.assert_close(accumulate_along_rays(w, values), nerfacc.accumulate_along_rays(w, values), atol=1e-6, rtol=0)
    torch.testing.assert_close(accumulate_along_rays(w), nerfacc.accumulate_along_rays(w, None), atol=1e-6, rtol=0)


def test_packed_equals_batched_including_gradients():
    starts, ends, sigmas, values = _random_rays(n_rays=17, n_samples=9, seed=2)
    n_rays, n_samples = sigmas.shape
    sig_b = sigmas.clone().requires_grad_(True)
    w_b, _, _ = render_weight_from_density(starts, ends, sig_b)
    out_b = accumulate_along_rays(w_b, values)
    ray_indices = torch.arange(n_rays).repeat_interleave(n_samples)
    sig_p = sigmas.reshape(-1).clone().requires_grad_(True)
    w_p, _, _ = render_weight_from_density(starts.reshape(-1), ends.reshape(-1), sig_p, ray_indices)
    out_p = accumulate_along_rays(w_p, values.reshape(-1, 5), ray_indices, n_rays)
    torch.testing.assert_close(out_p, out_b, atol=1e-9, rtol=0)
    out_b.sum().backward()
    out_p.sum().backward()
    torch.testing.assert_close(sig_p.grad.reshape(n_rays, n_samples), sig_b.grad, atol=1e-9, rtol=0)


def test_composite_channels_depth_and_detach():
    starts = torch.tensor([[0.0, 1.0, 2.0]])
    ends = starts + 1.0
    sigmas = torch.tensor([[0.0, 1e4, 0.0]], requires_grad=True)  # an opaque wall in the second interval
    w, _, _ = render_weight_from_density(starts, ends, sigmas)
    feats = torch.tensor([[[1.0], [2.0], [3.0]]])
    out = composite(w, {"rgb": feats.expand(1, 3, 3), "feature": feats}, (starts + ends) / 2, detach_weights=("feature",))
    torch.testing.assert_close(out["opacity"], torch.ones(1, 1))
    torch.testing.assert_close(out["depth"], torch.tensor([[1.5]]))
    torch.testing.assert_close(out["feature"], torch.tensor([[2.0]]))
    assert not out["feature"].requires_grad  # detached: the feature loss cannot move geometry
    assert out["rgb"].requires_grad


def test_distortion_loss_equals_the_double_sum():
    from n3f.render.volume import distortion_loss

    g = torch.Generator().manual_seed(0)
    counts = [5, 1, 0, 9]
    ray_indices = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    edges = [torch.sort(torch.rand(c + 1, generator=g, dtype=torch.float64) * 3).values for c in counts]  # samples in t order
    starts, ends = torch.cat([e[:-1] for e in edges]), torch.cat([e[1:] for e in edges])
    w = torch.rand(len(starts), generator=g, dtype=torch.float64)
    got = distortion_loss(w, starts, ends, ray_indices, len(counts))
    mids = (starts + ends) / 2
    for r in range(len(counts)):
        m = ray_indices == r
        wr, mr = w[m], mids[m]
        brute = (wr[:, None] * wr[None] * (mr[:, None] - mr[None]).abs()).sum() + (wr**2 * (ends[m] - starts[m])).sum() / 3
        assert torch.allclose(got[r], brute, atol=1e-12)


def test_surface_composite_keeps_only_the_most_visible_surface():
    from n3f.render.volume import render_weight_from_density, surface_composite

    # ray 0: thin fog (sigma 1) everywhere, a surface at t in [2.0, 2.1) (sigma 200) with value 5;
    # ray 1: no samples at all.
    t = torch.arange(0.0, 3.0, 0.01, dtype=torch.float64)
    t_starts, t_ends = t, t + 0.01
    sigma = torch.where((t >= 2.0) & (t < 2.1), 200.0, 1.0).double()
    value = torch.where((t >= 2.0) & (t < 2.1), 5.0, -3.0).double()[:, None]
    ray = torch.zeros(len(t), dtype=torch.long)
    w, _, _ = render_weight_from_density(t_starts, t_ends, sigma, ray)
    mids = t + 0.005
    out = surface_composite(w, {"v": value}, mids, ray, 2, window=0.1)
    # brute force: mode sample, then the renormalised window around it
    mode = int(torch.argmax(w))
    keep = (mids - mids[mode]).abs() <= 0.1
    ref = (w[keep, None] * value[keep]).sum(0) / w[keep].sum()
    assert abs(float(out["v"][0, 0]) - float(ref[0])) < 1e-12
    assert abs(float(out["depth"][0, 0]) - float((w[keep] * mids[keep]).sum() / w[keep].sum())) < 1e-12
    assert 1.9 < float(out["depth"][0, 0]) < 2.1
    assert float(out["share"][0, 0]) == pytest.approx(float(w[keep].sum() / w.sum()), rel=1e-12)
    # the plain composite is dragged towards the fog; the surface one is not
    plain = (w[:, None] * value).sum(0) / w.sum()
    assert float(plain[0]) < 2.0 < float(out["v"][0, 0])
    assert float(out["share"][1, 0]) == 0.0 and float(out["v"][1, 0]) == 0.0


def test_near_gradient_scaling_changes_gradients_not_values():
    from n3f.render.render import render_rays
    from n3f.render.spaces import BoxSpace

    torch.manual_seed(0)
    weight = torch.randn(3, 4, requires_grad=True)

    def field(points, dirs):
        h = points @ weight[:, :3]
        return {"sigma": torch.nn.functional.softplus(h[:, 0]) * 5, "rgb": torch.sigmoid(h[:, 1:])}

    space = BoxSpace(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    o = torch.zeros(8, 3)
    d = torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)
    outs, grads = [], []
    for dist in (None, 0.5, 1e-9):
        out = render_rays(field, o, d, space, None, 0.01, near_gradient_distance=dist)
        (g,) = torch.autograd.grad(out["rgb"].sum() + out["depth"].sum(), weight)
        outs.append(out["rgb"].detach())
        grads.append(g)
    assert torch.equal(outs[0], outs[1])  # forward untouched
    assert not torch.allclose(grads[0], grads[1])  # near samples pass on less gradient
    assert torch.allclose(grads[0], grads[2])  # a vanishing distance scales nothing


def _code_field(weight):
    """A field of density and a 5-d code, both smooth functions of the point."""

    def field(points, dirs):
        h = torch.tanh(points @ weight)
        return {"sigma": torch.nn.functional.softplus(h[:, 0]) * 20, "code": h[:, 1:]}

    return field


def test_per_ray_decoding_equals_per_sample_rendering_for_an_affine_decoder():
    from n3f.render.render import render_rays
    from n3f.render.spaces import BoxSpace

    torch.manual_seed(0)
    weight = torch.randn(3, 6, requires_grad=True)
    affine = torch.nn.Linear(5, 7)
    field = _code_field(weight)

    def decoded(points, dirs):
        out = field(points, dirs)
        return {"sigma": out["sigma"], "code": affine(out["code"])}

    space = BoxSpace(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    o = torch.zeros(64, 3)
    o[32:] = 5.0  # outside the box: no samples, opacity 0
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    kw = dict(detach_weights=("code",), surface_window=0.05)
    per_sample = render_rays(decoded, o, d, space, None, 0.01, **kw)
    per_ray = render_rays(field, o, d, space, None, 0.01, decoders={"code": affine}, **kw)
    assert per_ray["code"].shape == (64, 7)
    opacity = per_ray["opacity"].detach()
    assert float(opacity[:32].min()) > 0.5 and float(opacity[32:].abs().max()) == 0.0
    torch.testing.assert_close(per_ray["code"], per_sample["code"], atol=1e-5, rtol=1e-5)
    assert float(per_ray["code"].detach()[32:].abs().max()) == 0.0  # an empty ray decodes to nothing, not to the bias
    # surface composites are normalised: there an affine decoder applies to the window's mean code
    torch.testing.assert_close(per_ray["surface/code"][:32], per_sample["surface/code"][:32], atol=1e-5, rtol=1e-5)
    # gradients reach the decoder and, through the detached weights, only the codes
    (g_ray,) = torch.autograd.grad(per_ray["code"].sum(), weight)
    (g_sample,) = torch.autograd.grad(per_sample["code"].sum(), weight)
    torch.testing.assert_close(g_ray, g_sample, atol=1e-4, rtol=1e-4)


def test_per_ray_decoding_differs_from_per_sample_for_a_nonlinear_decoder_and_refuses_a_background():
    from n3f.render.render import render_rays
    from n3f.render.spaces import BoxSpace

    torch.manual_seed(1)
    weight = torch.randn(3, 6)
    field = _code_field(weight)
    square = lambda c: c.square()  # noqa: E731
    space = BoxSpace(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    o = torch.zeros(16, 3)
    d = torch.nn.functional.normalize(torch.randn(16, 3), dim=-1)
    per_ray = render_rays(field, o, d, space, None, 0.01, decoders={"code": square})
    plain = render_rays(field, o, d, space, None, 0.01)
    # by definition: opacity * decoder(mean code)
    torch.testing.assert_close(per_ray["code"], plain["opacity"] * (plain["code"] / plain["opacity"]).square())
    with pytest.raises(ValueError, match="composited over black"):
        render_rays(field, o, d, space, None, 0.01, decoders={"code": square}, background={"code": torch.ones(5)})
