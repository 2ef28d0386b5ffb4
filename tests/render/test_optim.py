"""instant-ngp's hash-table Adam: equals torch's Adam where gradients are non-zero, skips zeros."""

from __future__ import annotations

import torch

from n3f.student.optim import HashTableAdam


def test_matches_torch_adam_on_dense_gradients_and_skips_zeros():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(1000, 2))
    b = torch.nn.Parameter(a.detach().clone())
    ours = HashTableAdam([a], lr=1e-2)
    ref = torch.optim.Adam([b], lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    for _ in range(5):
        g = torch.randn(1000, 2)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    before = a.detach().clone()
    g = torch.randn(1000, 2)
    g[:500] = 0
    a.grad = g
    ours.step()
    assert torch.equal(a[:500], before[:500])  # untouched rows keep their parameters
    assert not torch.equal(a[500:], before[500:])
    # the state dict has torch's Adam layout
    assert set(ours.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
