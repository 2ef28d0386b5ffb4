"""`n3f correspond fit` and `eval`: the run folder, metrics.json and clear errors (exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_n3f(*args):
    return subprocess.run([sys.executable, "-m", "n3f", *args], capture_output=True, text=True, env=os.environ, timeout=300)


def test_fit_then_eval_writes_run_folder(tmp_path):
    run = tmp_path / "run"
    out = run_n3f(
        "correspond", "fit", "--family", "chairs", "--steps", "20", "--batch", "1", "--points", "128", "--output", str(run), "--quiet"
    )
    assert out.returncode == 0, out.stderr
    assert (run / "config.toml").is_file() and (run / "metrics.jsonl").is_file()
    assert (run / "checkpoints" / "step-0000020.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left behind
    out = run_n3f(
        "correspond",
        "eval",
        "--run",
        str(run),
        "--instances",
        "2",
        "--views",
        "1",
        "--size",
        "16",
        "--picture-size",
        "16",
        "--no-invert",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"learned", "identity", "feature_nn", "oracle"} <= set(metrics)
    for row in (metrics[k] for k in ("learned", "identity", "feature_nn", "oracle")):
        assert {"pck@0.05", "pck@0.1", "miou", "miou_masked", "cycle_error"} <= set(row)
    assert metrics["oracle"]["pck@0.1"] == 1.0
    assert "| oracle |" in (run / "metrics.md").read_text()
    assert {p.name for p in (run / "eval").iterdir()} == {"labels.png", "coordinates.png", "texture.png"}
    again = run_n3f("correspond", "fit", "--steps", "1", "--output", str(run), "--quiet")
    assert again.returncode == 2 and "never overwrites" in again.stderr
    again = run_n3f("correspond", "eval", "--run", str(run), "--quiet")
    assert again.returncode == 2 and "never overwrites" in again.stderr


def test_unknown_family_and_missing_run_exit_2(tmp_path):
    out = run_n3f("correspond", "fit", "--family", "sofas", "--output", str(tmp_path / "x"))
    assert out.returncode == 2 and "available: chairs" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()
    out = run_n3f("correspond", "eval", "--run", str(tmp_path / "missing"))
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
