"""SIGKILL ``n3f fit`` at random moments and resume it with ``n3f fit --resume``, again and again.

Kill moments rotate through: during a training step (a random delay after the metrics log grows),
during a checkpoint write (as soon as a temporary ``.step-*`` file appears in ``checkpoints/``) and
during an evaluation (as soon as a new ``renders/step-*`` folder appears). After every kill each
checkpoint on disk must load, and the resumed run must end with exactly the metrics log of an
uninterrupted run (CPU, one thread). The first run starts through the Python API (the CLI has no
``--checkpoint-every``); every resume is the real ``python -m n3f fit --resume RUN`` command.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = dict(
    scene="demo/tabletop",
    downscale=4,
    steps=30,
    target_samples=4096,
    eval_every=10,
    eval_frames=2,
    checkpoint_every=5,
    grid_resolution=48,
    grid_warmup=16,
    seed=3,
)
START = "import json, sys; from pathlib import Path; from n3f.pipeline.fit import FitConfig, fit; fit(FitConfig(**json.loads(sys.argv[1])), output=Path(sys.argv[2]), quiet=True)"
MOMENTS = ("step", "checkpoint", "evaluation")
CHILD_LIMIT_S = 300


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _start_command(output: Path) -> list[str]:
    return [sys.executable, "-c", START, json.dumps(CONFIG), str(output)]


def _resume_command(run: Path) -> list[str]:
    return [sys.executable, "-m", "n3f", "fit", "--resume", str(run), "--quiet"]


def _run_dir(output: Path) -> Path | None:
    runs = list(output.glob("*/*/*"))
    return runs[0] if runs else None


def _log_size(run: Path | None) -> int:
    path = run / "metrics.jsonl" if run else None
    return path.stat().st_size if path and path.is_file() else 0


def _moment_reached(moment: str, run: Path | None, seen_renders: set[str], log_start: int, due: float) -> bool:
    """Whether the child is now at the kill moment asked for."""
    if run is None:
        return False
    if moment == "checkpoint":
        return any(p.name.startswith(".step-") for p in (run / "checkpoints").glob(".step-*"))
    if moment == "evaluation":
        return any(p.name not in seen_renders for p in (run / "renders").glob("step-*"))
    return _log_size(run) > log_start and time.monotonic() >= due


def kill_at(command: list[str], output: Path, moment: str, rng: random.Random) -> bool:
    """Run ``command``, SIGKILL it at ``moment``; True if killed, False if it finished first.

    Raises:
        AssertionError: the child failed on its own, or ran past CHILD_LIMIT_S.
    """
    run = _run_dir(output)
    seen_renders = {p.name for p in (run / "renders").glob("step-*")} if run else set()
    log_start, armed = _log_size(run), None
    child = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + CHILD_LIMIT_S
    try:
        while child.poll() is None:
            assert time.monotonic() < deadline, f"{command} ran past {CHILD_LIMIT_S} s"
            run = run or _run_dir(output)
            if armed is None and _log_size(run) > log_start:
                armed = time.monotonic() + rng.uniform(0.0, 1.0)  # random moment within the next steps
            if _moment_reached(moment, run, seen_renders, log_start, armed or float("inf")):
                child.send_signal(signal.SIGKILL)
                child.wait()
                return True
            time.sleep(0.002)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    out, err = child.communicate()
    assert child.returncode == 0, err.decode()[-2000:]
    return False


def _checkpoints_load(run: Path) -> int:
    paths = sorted((run / "checkpoints").glob("step-*.pt"))
    for path in paths:
        torch.load(path, weights_only=False, map_location="cpu")  # raises on a torn file
    return len(paths)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference_run(demo_dir, tmp_path_factory) -> Path:
    """The same fit, uninterrupted, in a child process with the same environment."""
    output = tmp_path_factory.mktemp("reference")
    subprocess.run(_start_command(output), cwd=REPO, env=_env(), check=True, capture_output=True, timeout=CHILD_LIMIT_S)
    return _run_dir(output)


def kill_and_resume(output: Path, kills: int, seed: int) -> tuple[Path, list[str]]:
    """Kill the fit ``kills`` times (resuming after each), then let it finish; the moments hit."""
    rng = random.Random(seed)
    hit: list[str] = []
    command = _start_command(output)
    attempts = 0
    while len(hit) < kills:
        attempts += 1
        assert attempts <= 4 * kills, f"could not place {kills} kills; hit {hit}"
        moment = MOMENTS[len(hit) % len(MOMENTS)]
        if kill_at(command, output, moment, rng):
            hit.append(moment)
            run = _run_dir(output)
            if run is not None and (run / "checkpoints").is_dir():
                _checkpoints_load(run)
        else:  # it finished before the moment came: start over in a fresh folder
            for path in sorted(output.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            command = _start_command(output)
            continue
        run = _run_dir(output)
        command = _resume_command(run) if run is not None and (run / "config.toml").is_file() else _start_command(output)
    finished = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, timeout=CHILD_LIMIT_S)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    return _run_dir(output), hit


def _assert_same_run(run: Path, reference: Path) -> None:
    assert _checkpoints_load(run) >= 1
    assert _metrics(run) == _metrics(reference)
    a = torch.load(run / "checkpoints" / "step-0000030.pt", weights_only=False)["model"]
    b = torch.load(reference / "checkpoints" / "step-0000030.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_row_torn_by_a_kill_is_dropped_on_resume(tmp_path):
    from n3f.pipeline.fit import _truncate_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 5, "a": 1}\n{"step": 10, "a": 2}\n{"step": 15, "a"')  # killed mid-append
    _truncate_metrics(log, 10)
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"step": 5, "a": 1}, {"step": 10, "a": 2}]


@pytest.mark.slow  # about 150 s on 2 shared cores (each child process loads the scene, cache and model)
def test_three_kills_end_with_the_uninterrupted_metrics(reference_run, tmp_path):
    run, hit = kill_and_resume(tmp_path, kills=3, seed=1)
    assert hit == ["step", "checkpoint", "evaluation"]
    _assert_same_run(run, reference_run)


@pytest.mark.slow
def test_ten_kills_in_a_row_end_with_the_uninterrupted_metrics(reference_run, tmp_path):
    run, hit = kill_and_resume(tmp_path, kills=10, seed=2)
    assert len(hit) == 10
    _assert_same_run(run, reference_run)
    print(f"\nkills survived: {len(hit)} ({', '.join(hit)})")
