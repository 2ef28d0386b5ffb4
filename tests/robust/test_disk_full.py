"""A disk that fills up mid-fit: a clear error (exit 2, the file named), earlier results intact.

The disk is simulated with ``resource.setrlimit(RLIMIT_FSIZE)`` in the child (no file may grow past
1 MiB; SIGXFSZ is ignored so the write fails with EFBIG, as on a full disk it fails with ENOSPC).
A resumed fit then cannot write its next checkpoint (tens of MiB): it must say so and leave the
earlier checkpoint loadable and no temporary file behind.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 1 << 20


def _small_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def _set(config: Path, key: str, change) -> int:
    """Change an integer ``key = value`` line of a run's config.toml; the old value."""
    lines = config.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
    old = int(lines[index].split("=")[1])
    lines[index] = f"{key} = {change(old)}"
    config.write_text("\n".join(lines) + "\n")
    return old


@pytest.mark.slow  # 50 s on 2 shared cores (a child process loads the run to write one checkpoint)
def test_checkpoint_on_a_full_disk_fails_cleanly(fitted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    config = run / "config.toml"
    steps = _set(config, "steps", lambda s: s + 20)
    _set(config, "checkpoint_every", lambda _: 1)  # the first resumed step writes a checkpoint, before any evaluation
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "n3f", "fit", "--resume", str(run), "--quiet"],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_small_disk,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "cannot write" in result.stderr and f"step-{steps + 1:07d}.pt" in result.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # no temporary file left
    state = torch.load(run / "checkpoints" / before[-1], weights_only=False)
    assert state["step"] == steps


_FULL_DISK = """
mount -t tmpfs -o size="$1"k tmpfs "$0" && cp -r "$2" "$0/run" || exit 97
"$3" -m n3f fit --resume "$0/run" --quiet 2> "$4/stderr.txt"
echo $? > "$4/rc"
cp -r "$0/run" "$4/after"
"""


@pytest.mark.slow  # like the test above
def test_checkpoint_on_a_real_full_tmpfs_fails_cleanly(fitted_run, tmp_path, unshare_mount):
    """The same on a real full disk: the run copied onto a tmpfs with 1 MiB to spare (in a private
    mount namespace), so the next checkpoint (tens of MiB) fails with ENOSPC."""
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    config = run / "config.toml"
    steps = _set(config, "steps", lambda s: s + 20)
    _set(config, "checkpoint_every", lambda _: 1)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    size_kib = sum(p.stat().st_size for p in run.rglob("*") if p.is_file()) // 1024 + 4 * 64 + 1024  # + inodes' blocks + 1 MiB
    mount_point, report = tmp_path / "disk", tmp_path / "report"
    mount_point.mkdir()
    report.mkdir()
    result = subprocess.run(
        [*unshare_mount, "sh", "-c", _FULL_DISK, str(mount_point), str(size_kib), str(run), sys.executable, str(report)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stderr = (report / "stderr.txt").read_text()
    assert (report / "rc").read_text().strip() == "2", stderr[-2000:]
    assert "Traceback" not in stderr and "No space left on device" in stderr and "the disk is full" in stderr, stderr[-2000:]
    after = report / "after"
    assert sorted(p.name for p in (after / "checkpoints").iterdir()) == before  # no temporary file left
    state = torch.load(after / "checkpoints" / before[-1], weights_only=False)
    assert state["step"] == steps
