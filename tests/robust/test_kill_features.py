"""SIGKILL ``n3f features`` mid-way (after its first batches are on disk), then rerun it: the rerun
resumes, and the finished cache equals one computed without interruption. While killed, the
cache must never read as complete (``FeatureCache.open`` refuses it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from n3f.errors import N3FError
from n3f.pipeline.features import FeatureCache

REPO = Path(__file__).resolve().parents[2]
ARGS = ["-m", "n3f", "features", "--scene", "demo/tabletop", "--teacher", "effnet_lite0", "--pca", "8", "--batch-size", "2", "--quiet"]


def _features(output: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *ARGS, "--output", str(output)], cwd=REPO, env=env, stderr=subprocess.PIPE)


def _cache_folder(output: Path) -> Path:
    return next(output.glob("*/effnet_lite0-*"))


@pytest.mark.slow  # three child processes, each loading the scene and the teacher
def test_killed_features_resume_to_the_uninterrupted_cache(demo_dir, tmp_path):
    reference = tmp_path / "reference"
    assert _features(reference).wait(timeout=300) == 0
    output = tmp_path / "killed"
    child = _features(output)
    deadline = time.monotonic() + 300
    while not list(output.glob("*/*/done.npy")):  # the first batch is on disk
        assert child.poll() is None, "n3f features finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    folder = _cache_folder(output)
    with pytest.raises(N3FError, match="incomplete"):
        FeatureCache.open(folder)
    done = np.load(folder / "done.npy")
    assert 0 < done.sum() < len(done)
    rerun = _features(output)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()[-2000:]
    a, b = FeatureCache.open(folder), FeatureCache.open(_cache_folder(reference))
    assert np.array_equal(np.asarray(a.features()), np.asarray(b.features()))
    assert a.meta["frames_per_second"] is not None and not (folder / "done.npy").exists()
