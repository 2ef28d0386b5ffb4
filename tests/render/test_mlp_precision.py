"""The student's MLPs in bfloat16: same field to bfloat16's precision, float32 outputs, gradients
that train, and runs that record what they were fitted with."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from n3f.render.encoding import HashGridConfig
from n3f.student.field import StudentConfig, StudentField, resolve_mlp_precision

GRID = HashGridConfig(4, 2, 12, 4, 32)


def _fields():
    torch.manual_seed(0)
    box = torch.tensor([[0.0] * 3, [1.0] * 3])
    fp32 = StudentField(StudentConfig(grid=GRID, feature_dim=8, mlp_precision="fp32", backend="torch"), box)
    bf16 = StudentField(StudentConfig(grid=GRID, feature_dim=8, mlp_precision="bf16", backend="torch"), box)
    with torch.no_grad():  # a table far from zero, so the MLPs see inputs of realistic size
        fp32.encoding.table.uniform_(-1, 1)
    bf16.load_state_dict(fp32.state_dict())
    return fp32, bf16


def test_bf16_field_matches_fp32_to_bfloat16_precision():
    fp32, bf16 = _fields()
    x = torch.rand(4096, 3)
    d = torch.nn.functional.normalize(torch.randn(4096, 3), dim=-1)
    with torch.no_grad():
        a, b = fp32(x, d), bf16(x, d)
    for name in ("sigma", "rgb", "feature"):
        assert b[name].dtype == torch.float32  # outputs leave the MLPs as float32
        scale = float(a[name].abs().mean())
        err = float((a[name] - b[name]).abs().mean())
        # bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.004); three layers compound it
        assert err < 0.03 * scale, (name, err, scale)
        assert err > 0  # it really ran in bfloat16
    assert bf16.state_dict()["geometry_mlp.0.weight"].dtype == torch.float32  # master weights stay float32


def test_bf16_gradients_point_where_fp32_gradients_do():
    fp32, bf16 = _fields()
    x = torch.rand(4096, 3)
    d = torch.nn.functional.normalize(torch.randn(4096, 3), dim=-1)
    target = torch.rand(4096, 3)
    grads = []
    for field in (fp32, bf16):
        loss = ((field(x, d)["rgb"] - target) ** 2).mean()
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in field.parameters() if p.grad is not None]))
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert grads[1].dtype == torch.float32
    assert float(cosine) > 0.99


def test_auto_is_fp32_everywhere_and_bad_names_fail():
    assert resolve_mlp_precision("auto") == "fp32"  # bf16's results moved by 5.6 dB between CPUs
    assert resolve_mlp_precision("bf16") == "bf16"
    assert resolve_mlp_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        resolve_mlp_precision("fp16")


def test_old_run_configs_read_as_fp32_and_new_ones_keep_their_choice(tmp_path):
    from n3f.config import dumps_toml
    from n3f.pipeline.fit import FitConfig, read_config, write_config

    write_config(tmp_path, dataclasses.replace(FitConfig(), mlp_precision="bf16"), {})
    assert read_config(tmp_path).mlp_precision == "bf16"
    doc = {k: v for k, v in dataclasses.asdict(FitConfig()).items() if k not in ("mlp_precision", "teacher_options", "dynamic")}
    (tmp_path / "config.toml").write_text(dumps_toml({"schema_version": 1, **doc}))
    assert read_config(tmp_path).mlp_precision == "fp32"


def test_bf16_rows_are_padded_to_few_shapes_and_padding_changes_nothing():
    # oneDNN keeps a kernel per matrix shape; an unbounded set of shapes grew memory without end
    from n3f.student.field import MLP_MAX_ROWS, MLP_ROW_BUCKET, run_mlp

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    reference = copy.deepcopy(mlp)
    seen = set()
    mlp.register_forward_pre_hook(lambda module, args: seen.add(args[0].shape[0]))
    for n in (1, 5000, 8192, 8193, 30000, 65536, 70000, 200001):
        x = torch.randn(n, 8)
        out = run_mlp(mlp, x, "bf16")
        assert out.shape == (n, 3) and out.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            direct = reference(x[:7]).float()
        assert torch.allclose(out[:7], direct, rtol=0.02, atol=0.02)
    assert all(rows % MLP_ROW_BUCKET == 0 and rows <= MLP_MAX_ROWS for rows in seen), seen
    assert len(seen) <= MLP_MAX_ROWS // MLP_ROW_BUCKET
    x = torch.randn(300, 8, requires_grad=True)  # gradients reach the real rows only
    run_mlp(mlp, x, "bf16").sum().backward()
    assert x.grad.shape == (300, 8) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
