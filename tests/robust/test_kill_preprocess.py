"""SIGKILL ``n3f preprocess`` twice (as soon as it starts writing, then during structure from motion)
and run it a third time: no kill leaves a scene folder that reads as valid, the structure-from-motion
child dies with its parent instead of running on, and the third run restarts cleanly, removes what
the killed runs left and produces a scene that loads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from n3f.scene.catalog import load_scene

REPO = Path(__file__).resolve().parents[2]


def _preprocess(photos: Path, out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "n3f", "preprocess", "--images", str(photos), "--out", str(out), "--quiet", "--threads", "1"]
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie waiting for init to reap it has stopped


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"n3f preprocess ended before {what}: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> list[int]:
    children = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to follow the child process")
def test_killed_preprocess_restarts_cleanly(demo_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((demo_dir / "images").iterdir())[:16]:
        shutil.copy(image, photos / image.name)
    out = tmp_path / "scene"

    def partials() -> list[Path]:
        return sorted(tmp_path.glob(".scene.partial-*"))

    first = _preprocess(photos, out)  # killed as soon as its temporary folder exists
    _wait_for(lambda: partials(), "its temporary folder appeared", first)
    _kill(first)

    second = _preprocess(photos, out)  # killed while the structure-from-motion child works
    _wait_for(lambda: _children(second.pid) and any(p.rglob("database.db") for p in partials()), "SfM started", second)
    children = _kill(second)
    assert children, "the SfM stage runs in a child process"
    time.sleep(2.0)  # the kernel kills the child at once; SfM itself needs longer than this to finish
    assert not any(_running(c) for c in children), "the SfM child kept running after its parent was killed"

    assert not out.exists(), "a killed preprocess must not leave the scene folder"
    assert len(partials()) >= 1  # what the kills left behind, until the next run

    third = _preprocess(photos, out)
    stdout, stderr = third.communicate(timeout=600)
    assert third.returncode == 0, stderr.decode()[-2000:]
    assert "registered: 16 of 16 images" in stdout.decode()
    assert partials() == [], "the rerun removes the temporary folders of killed runs"
    assert len(load_scene(out)) == 16
