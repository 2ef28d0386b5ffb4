"""CLI arguments that do not fit: an unknown teacher, a run whose config.toml or checkpoint no longer
matches. Each ends with one message, exit code 2 and no traceback (frames and boxes out of range are
in tests/pipeline/test_query.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _n3f(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "n3f", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _assert_user_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for word in words:
        assert word in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("command", ["features", "fit"])
def test_unknown_teacher(command):
    _assert_user_error(_n3f(command, "--scene", "demo/tabletop", "--teacher", "dino_vitz99", "--quiet"), "unknown teacher", "dino_vits8")


def _damaged_run(fitted_run: Path, tmp_path: Path, damage) -> Path:
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    damage(run)
    return run


def _edit_grid(run: Path) -> None:
    config = run / "config.toml"
    lines = [("grid_resolution = 64" if line.startswith("grid_resolution =") else line) for line in config.read_text().splitlines()]
    config.write_text("\n".join(lines) + "\n")


def _tear_checkpoint(run: Path) -> None:
    last = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    last.write_bytes(last.read_bytes()[:1000])


def _other_teacher(run: Path) -> None:
    last = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(last, weights_only=False)
    state["teacher"] = "dino_vitb8-elsewhere"
    torch.save(state, last)


@pytest.mark.parametrize(
    "damage, words",
    [
        (_edit_grid, ("does not fit this run's config", "step-")),
        (_tear_checkpoint, ("cannot be read", "step-")),
        (_other_teacher, ("dino_vitb8-elsewhere", "feature cache")),
    ],
    ids=["config-edited", "torn-checkpoint", "checkpoint-of-another-teacher"],
)
def test_mismatched_run_and_checkpoint(fitted_run, tmp_path, damage, words):
    run = _damaged_run(fitted_run, tmp_path, damage)
    _assert_user_error(_n3f("query", "--run", str(run), "--frame", "1", "--point", "3,3", "--quiet"), *words)
