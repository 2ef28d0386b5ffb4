"""The hash encoding: gradients, backend agreement, instant-ngp layout, checkpoint portability."""

from __future__ import annotations

import pytest
import torch

from n3f.render.encoding import (
    CPU_CONFIG,
    NGP_CONFIG,
    HashEncoding,
    HashGridConfig,
    _GridTables,
    _HashGridFunction,
    eager_hash_encoding,
    level_layout,
    tcnn_available,
)

TINY = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=6, base_resolution=2, max_resolution=16)


def test_gradcheck_float64_tiny_table():
    torch.manual_seed(0)
    rows = sum(level_layout(TINY)[2])
    table = torch.randn(rows, 2, dtype=torch.float64, requires_grad=True)
    x = torch.rand(7, 3, dtype=torch.float64)
    tables = _GridTables(TINY, x.device)
    tables.scales = tables.scales.double()
    assert torch.autograd.gradcheck(lambda t: _HashGridFunction.apply(x, t, tables), (table,), eps=1e-6, atol=1e-8)


def test_layout_follows_instant_ngp():
    scales, resolutions, sizes, offsets = level_layout(TINY)
    assert resolutions[0] == 2 and sizes[0] == 8  # 2^3 cells, dense
    assert sizes[-1] == 64  # a hashed level is capped at 2^log2_hashmap_size
    assert offsets == [0, sizes[0], sizes[0] + sizes[1]]
    # a dense level indexes x + y * res + z * res^2: a point on grid vertex g (x * scale + 0.5 = g)
    # reads row g_x + g_y * 2 + g_z * 4 of level 0 alone
    enc = HashEncoding(TINY, backend="torch")
    with torch.no_grad():
        enc.table.zero_()
        enc.table[1 + 1 * 2 + 0 * 4] = torch.tensor([3.0, -2.0])
    point = (torch.tensor([[1.0, 1.0, 0.5]]) - 0.5) / scales[0]  # vertex (1, 1, 0) exactly, z half-way to 1
    out = enc(point)
    torch.testing.assert_close(out[0, :2], torch.tensor([1.5, -1.0]))  # half the weight on (1, 1, 0)
    point = (torch.tensor([[1.0, 1.0, 0.0]]) + 0.0 - 0.5) / scales[0]
    point[0, 2] = 0.0  # z = 0 -> pos 0.5: weight split between z = 0 and z = 1
    with torch.no_grad():
        enc.table[1 + 1 * 2 + 1 * 4] = torch.tensor([3.0, -2.0])
    out = enc(point)
    torch.testing.assert_close(out[0, :2], torch.tensor([3.0, -2.0]))


# The CPU kernel has a path for 2 features per level (the usual width) and one for any other.
TINY_F1 = HashGridConfig(n_levels=3, n_features_per_level=1, log2_hashmap_size=6, base_resolution=3, max_resolution=16)
TINY_F4 = HashGridConfig(n_levels=3, n_features_per_level=4, log2_hashmap_size=6, base_resolution=3, max_resolution=16)


@pytest.mark.parametrize("config", [TINY, TINY_F1, TINY_F4, CPU_CONFIG], ids=["tiny", "tiny-f1", "tiny-f4", "cpu"])
def test_backends_agree(config):
    torch.manual_seed(1)
    a = HashEncoding(config, backend="torch")
    b = HashEncoding(config, backend="cpu")
    b.load_state_dict(a.state_dict())
    assert b.backend() == "cpu", "the fused CPU kernel should build on this machine"
    x = torch.rand(4096, 3)
    g = torch.randn(4096, config.output_dim)
    out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_b, out_a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(eager_hash_encoding(x, a.table, config), out_a, atol=1e-6, rtol=1e-5)
    out_a.backward(g)
    out_b.backward(g)
    torch.testing.assert_close(b.table.grad, a.table.grad, atol=1e-5, rtol=1e-5)


def test_cpu_backward_is_deterministic():
    enc = HashEncoding(CPU_CONFIG, backend="cpu")
    x = torch.rand(20000, 3)
    grads = []
    for _ in range(2):
        enc.table.grad = None
        enc(x).sum().backward()
        grads.append(enc.table.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_checkpoint_trained_with_one_backend_loads_into_the_other(tmp_path):
    torch.manual_seed(2)
    trained = HashEncoding(TINY, backend="cpu")
    opt = torch.optim.Adam(trained.parameters(), lr=0.1)
    x = torch.rand(256, 3)
    for _ in range(5):
        opt.zero_grad()
        (trained(x) ** 2).sum().backward()
        opt.step()
    torch.save(trained.state_dict(), tmp_path / "enc.pt")
    other = HashEncoding(TINY, backend="torch")
    other.load_state_dict(torch.load(tmp_path / "enc.pt"))
    torch.testing.assert_close(other(x), trained(x), atol=1e-6, rtol=1e-5)


needs_tcnn = pytest.mark.skipif(
    not tcnn_available(), reason="tinycudann with CUDA is not available here; the tcnn backend is checked where it exists"
)


# tiny-cuda-nn is built with --use_fast_math: its level scales come from exp2f's approximation,
# so a point's position in its cell differs from ours by an amount that grows with the level's
# scale; trilinear interpolation is continuous across cells, so outputs and gradients differ by a
# small amount, largest at the finest level. Measured on an H200 (2^18 points, table in [-1, 1],
# instant-ngp's configuration): at most 2.4e-6 at the coarsest level, 4.8e-3 at the finest.
TCNN_TOLERANCE = 1e-2


def _close_to_tcnn(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """``actual`` within ``TCNN_TOLERANCE`` of ``expected``, relative to the largest value."""
    scale = float(expected.detach().abs().max())
    err = (actual.detach() - expected.detach()).abs() / scale
    print(f"tcnn vs torch: max {float(err.max()):.2e}, mean {float(err.mean()):.2e} (relative to {scale:.3g})")
    assert float(err.max()) <= TCNN_TOLERANCE


@needs_tcnn
@pytest.mark.parametrize("config", [CPU_CONFIG, NGP_CONFIG], ids=["cpu", "ngp"])
def test_tcnn_agrees_with_torch_forward_and_backward(config):
    torch.manual_seed(3)
    a = HashEncoding(config, backend="torch").cuda()
    b = HashEncoding(config, backend="tcnn").cuda()
    with torch.no_grad():
        a.table.uniform_(-1, 1)  # instant-ngp's start (1e-4) is too small to tell layouts apart
    b.load_state_dict(a.state_dict())
    x = torch.rand(1 << 16, 3, device="cuda")
    g = torch.randn(1 << 16, config.output_dim, device="cuda")
    out_a, out_b = a(x), b(x)
    assert b.backend() == "tcnn" and out_b.dtype == torch.float32
    _close_to_tcnn(out_b, out_a)
    out_a.backward(g)
    out_b.backward(g)
    _close_to_tcnn(b.table.grad, a.table.grad)
    assert list(b.state_dict()) == ["table"]  # tiny-cuda-nn's own parameters stay out of checkpoints


@needs_tcnn
def test_a_table_trained_with_tcnn_loads_into_the_cpu_and_torch_backends(tmp_path):
    torch.manual_seed(4)
    trained = HashEncoding(CPU_CONFIG, backend="tcnn").cuda()
    opt = torch.optim.Adam(trained.parameters(), lr=0.05)
    x = torch.rand(8192, 3, device="cuda")
    target = torch.randn(8192, CPU_CONFIG.output_dim, device="cuda")
    for _ in range(20):
        opt.zero_grad()
        ((trained(x) - target) ** 2).mean().backward()
        opt.step()
    torch.save(trained.state_dict(), tmp_path / "enc.pt")
    expected = trained(x).detach().cpu()
    for backend in ("cpu", "torch"):
        other = HashEncoding(CPU_CONFIG, backend=backend)
        other.load_state_dict(torch.load(tmp_path / "enc.pt", map_location="cpu"))
        _close_to_tcnn(other(x.cpu()), expected)
