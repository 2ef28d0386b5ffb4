"""Benchmark the student field on the CPU against plain eager PyTorch of the same configuration.

For instant-ngp's hash grid (16 levels, 2^19 rows, 2 features) and the CPU default (12 levels,
2^17 rows), measures forward+backward samples per second of

- ``encoding``: the hash encoding alone (n3f's default backend vs. gathering all eight corners
  with autograd-tracked indexing);
- ``step``: one full training step of the student field: encoding, geometry MLP, colour and
  feature heads, loss, backward and optimiser: n3f's field and optimisers (instant-ngp's Adam
  that skips zero-gradient table entries, fused on the CPU) vs. the same field whose encoding is
  the eager one, with torch's dense Adam and float32 MLPs. n3f's step is measured twice: with
  its MLPs in float32 (``"mlp": "fp32"``, the default) and, on a CPU with bfloat16 kernels, in
  bfloat16 (``"mlp": "bf16"``, ``--mlp-precision bf16``); elsewhere only the float32 row is printed.

Points are uniform in the unit cube (the worst case for cache locality). Prints one JSON line per
figure: ``{"metric": "speedup_vs_eager", "part": ..., "config": ..., "value": ...}``.

Usage: python tools/bench_field.py [--samples 65536] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import median_time  # noqa: E402

from n3f.render.encoding import CPU_CONFIG, NGP_CONFIG, eager_hash_encoding  # noqa: E402
from n3f.student.field import StudentConfig, StudentField, cpu_has_bf16  # noqa: E402
from n3f.student.optim import student_optimizers  # noqa: E402


class EagerEncoding(torch.nn.Module):
    """The reference: same table and layout, encoded by eager_hash_encoding."""

    def __init__(self, table: torch.Tensor, config):
        super().__init__()
        self.table = torch.nn.Parameter(table.detach().clone())
        self.config = config

    def forward(self, x):
        return eager_hash_encoding(x, self.table, self.config)


def bench(config_name: str, config, n: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.rand(n, 3)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    box = torch.tensor([[0.0] * 3, [1.0] * 3])
    field_mlp = "bf16" if cpu_has_bf16() else "fp32"
    field = StudentField(StudentConfig(grid=config, feature_dim=64, backend="auto", mlp_precision=field_mlp), box)
    backend = field.encoding.backend()
    fp32_field = StudentField(StudentConfig(grid=config, feature_dim=64, backend="auto", mlp_precision="fp32"), box)
    fp32_field.load_state_dict(field.state_dict())
    eager_field = StudentField(StudentConfig(grid=config, feature_dim=64, backend="torch", mlp_precision="fp32"), box)
    eager_field.load_state_dict(field.state_dict())
    eager_field.encoding = EagerEncoding(field.encoding.table, config)
    g = torch.randn(n, config.output_dim)

    def encoding(module):
        def run():
            module.table.grad = None
            module(x).backward(g)

        return run

    rgb_target, feat_target = torch.rand(n, 3), torch.randn(n, 64)

    def step(model, optimizers):
        def run():
            out = model(x, dirs)
            loss = (
                ((out["rgb"] - rgb_target) ** 2).mean() + 0.04 * ((out["feature"] - feat_target) ** 2).mean() + out["sigma"].mean() * 1e-3
            )
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimizers:
                opt.step()

        return run

    rows = []
    eager_step = step(eager_field, [torch.optim.Adam(eager_field.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)])
    cases = [("encoding", "-", encoding(field.encoding), encoding(eager_field.encoding))]
    cases.append(("step", "fp32", step(fp32_field, student_optimizers(fp32_field, 1e-2)), eager_step))
    if field_mlp != "fp32":
        cases.append(("step", field_mlp, step(field, student_optimizers(field, 1e-2)), eager_step))
    for part, mlp, ours, eager in cases:
        t_ours, t_eager = median_time(ours, repeats), median_time(eager, repeats)
        rows.append(
            {
                "metric": "speedup_vs_eager",
                "part": part,
                "config": config_name,
                "mlp": mlp,
                "value": round(t_eager / t_ours, 2),
                "unit": "x",
                "ours_msamples_per_s": round(n / t_ours / 1e6, 3),
                "eager_msamples_per_s": round(n / t_eager / 1e6, 3),
                "backend": backend,
                "samples": n,
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1 << 16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, config in (("ngp", NGP_CONFIG), ("cpu", CPU_CONFIG)):
        for row in bench(name, config, args.samples, args.repeats):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
