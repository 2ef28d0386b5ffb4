"""Two CPU processes over gloo (torchrun) train the demo to the parameters one process reaches on
the same global ray batches, and runs resume from one mode into the other."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from n3f.pipeline.distributed import SINGLE, DistContext, shard_range
from n3f.pipeline.fit import FitConfig, fit

REPO = Path(__file__).resolve().parents[2]
STEPS = 12

# The 2-process gradient is the sum of two half-batch gradients instead of one sum over the whole
# batch: the same terms in another float32 order, so each step's gradient differs by ~1e-7
# relative, which Adam's normalisation carries into the updates; a hash-table row whose gradient is
# near zero in both modes moves by a visibly different amount. Measured over 12 steps: 1 of 2.47M
# table entries 3.6e-5 apart, everything else within ~1e-6, no occupancy cell different. A wrong
# reduction (a sum instead of the share-weighted mean, a rank training on another batch, a lost
# grid update) moves parameters by ~lr = 1e-2 within a step (6 steps apart: 0.06).
ATOL, RTOL = 2e-4, 1e-3

SCRIPT = """
import json, sys
from pathlib import Path
from n3f.pipeline.fit import FitConfig, fit
config = FitConfig(**json.loads(sys.argv[1]))
fit(config, output=Path(sys.argv[2]), resume=Path(sys.argv[3]) if sys.argv[3] else None, quiet=True)
"""


def _config() -> FitConfig:
    return FitConfig(
        scene="demo/tabletop",
        downscale=4,
        steps=STEPS,
        target_samples=4096,
        eval_every=0,
        eval_frames=1,
        checkpoint_every=STEPS // 2,
        grid_resolution=32,
        grid_warmup=4,
        grid_update_every=4,
        seed=5,
    )


def _torchrun(tmp_path: Path, config: FitConfig, output: Path, resume: Path | None = None) -> None:
    script = tmp_path / "fit_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
    cmd += [json.dumps(dataclasses.asdict(config)), str(output), str(resume or "")]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def _state(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step-{step:07d}.pt", weights_only=False)


def _assert_same_parameters(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=ATOL, rtol=RTOL, msg=lambda m, k=key: f"{k}: {m}")
    assert torch.equal(a["generator"], b["generator"])  # both modes drew the same global batches
    occupied_a, occupied_b = a["grid"]["occupied"], b["grid"]["occupied"]
    assert (occupied_a != occupied_b).float().mean() < 1e-3


def _resumable_copy(run: Path, dest: Path) -> Path:
    """A copy of ``run`` stopped at its half-way checkpoint."""
    copy = dest / run.name
    shutil.copytree(run, copy)
    (copy / "checkpoints" / f"step-{STEPS:07d}.pt").unlink()
    return copy


def test_shards_cover_the_batch_once():
    for n in (256, 257, 1000):
        for world in (1, 2, 3):
            ranges = [shard_range(n, DistContext(r, world)) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(ranges[k][1] == ranges[k + 1][0] for k in range(world - 1))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    assert shard_range(10, SINGLE) == (0, 10)


@pytest.fixture(scope="module")
def single_run(demo_dir, tmp_path_factory) -> Path:
    return fit(_config(), output=tmp_path_factory.mktemp("single"), quiet=True)


# Each torchrun launch starts two Python processes that import torch, read the scene and render the
# held-out frames at the end: about two minutes on 2 shared CPU cores, so these run with -m slow.
@pytest.fixture(scope="module")
def two_process_run(single_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _torchrun(out, _config(), out / "runs")
    return next((out / "runs").glob("*/*/*"))


@pytest.mark.slow
def test_two_processes_reach_the_single_process_parameters(single_run, two_process_run):
    run = two_process_run
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000006.pt", "step-0000012.pt"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [STEPS, STEPS]  # rank 0 alone wrote: one train row, one eval row
    assert not (run / "renders").exists() or all(p.is_file() for p in (run / "renders").rglob("*.png"))
    _assert_same_parameters(_state(two_process_run, STEPS), _state(single_run, STEPS))
    # the tolerance has teeth: the run half-way is far outside it
    half, full = _state(two_process_run, STEPS // 2)["model"], _state(single_run, STEPS)["model"]
    with pytest.raises(AssertionError):
        for key in full:
            torch.testing.assert_close(half[key], full[key], atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_a_two_process_run_resumes_in_one_process(single_run, two_process_run, tmp_path):
    run = _resumable_copy(two_process_run, tmp_path)
    fit(_config(), resume=run, quiet=True)
    _assert_same_parameters(_state(run, STEPS), _state(single_run, STEPS))


@pytest.mark.slow
def test_a_single_process_run_resumes_in_two_processes(single_run, tmp_path):
    run = _resumable_copy(single_run, tmp_path)
    _torchrun(tmp_path, _config(), tmp_path, resume=run)
    _assert_same_parameters(_state(run, STEPS), _state(single_run, STEPS))


def test_sharded_features_gather_into_the_unsharded_cache(demo_scene, tmp_path):
    from n3f.errors import N3FError
    from n3f.pipeline.features import compute_features

    scene = demo_scene.replace(frames=demo_scene.frames[:7], name="demo_seven")
    options = {"batch_size": 2}
    assert compute_features(scene, "effnet_lite0", options, pca=8, root=tmp_path, shard=(1, 3)) is None
    folder = next((tmp_path / "demo_seven").iterdir())
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["done-1-of-3.npy", "raw-1-of-3.f16"]
    with pytest.raises(N3FError, match=r"missing 5 frame\(s\).*--shard 0/3; .*--shard 2/3") as err:
        compute_features(scene, "effnet_lite0", options, pca=8, root=tmp_path)
    assert scene.frames[0].name in str(err.value) and scene.frames[3].name not in str(err.value)
    for index in (2, 0):
        compute_features(scene, "effnet_lite0", options, pca=8, root=tmp_path, shard=(index, 3))
    gathered = compute_features(scene, "effnet_lite0", options, pca=8, root=tmp_path)
    assert gathered.meta["status"] == "complete" and not (folder / "shards").exists()
    whole = compute_features(scene, "effnet_lite0", options, pca=8, root=tmp_path / "whole")
    assert np.array_equal(np.asarray(gathered.features()), np.asarray(whole.features()))
    assert compute_features(scene, "effnet_lite0", options, pca=8, root=tmp_path, shard=(0, 3)) is None  # complete: nothing to do
    with pytest.raises(N3FError, match="--shard must be"):
        compute_features(scene, "effnet_lite0", options, pca=8, root=tmp_path / "bad", shard=(3, 3))


@pytest.mark.slow  # two CLI fits at the demo's full size (4 steps each, held-out renders at the end)
def test_fit_devices_2_matches_one_process(demo_dir, tmp_path):
    """``n3f fit --devices 2`` (which launches torchrun itself) against the same command in one process."""
    args = ["--scene", "demo/tabletop", "--steps", "4", "--samples", "4096", "--eval-every", "0", "--seed", "5", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for devices in ("1", "2"):
        out = tmp_path / f"devices{devices}"
        done = subprocess.run(
            [sys.executable, "-m", "n3f", "fit", *args, "--devices", devices, "--output", str(out)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        (runs[devices],) = out.glob("*/*/*")  # one run folder: rank 0 alone wrote
    rows = [json.loads(line) for line in (runs["2"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 4]  # one train row, one eval row
    _assert_same_parameters(_state(runs["2"], 4), _state(runs["1"], 4))
