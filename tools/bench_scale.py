"""Peak memory of `n3f features` and of the fit against the number of frames, and fit rays/s of
1 vs 2 processes.

The "video" is built from the demo: its 96 frames downscaled to 64x48 (cheap low-res frames, so
5,000 frames fit on a laptop's disk and a 2-core machine's time) repeated along the sequence with
their cameras, one frame in 50 held out. Each measurement runs in a fresh child process and reports
its own peak resident memory (``ru_maxrss``; file pages of the memory maps that the process has
touched count too). The fit's figure covers loading the data, building the model and
``--fit-steps`` training steps (no evaluation).

    python tools/bench_scale.py                       # 100, 1000, 5000 frames
    python tools/bench_scale.py --frames 100 1000     # what fits in the time you have

Prints one JSON object a line; the last lines are ``memory_ratio_<max>_vs_<min>`` (fit and
features) and ``rays_per_s`` of 1 and 2 processes (torchrun, gloo) at the largest frame count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 48)


def make_video(folder: Path, n_frames: int) -> Path:
    """An n3f scene folder of ``n_frames`` 64x48 frames cycling through the demo's views."""
    import dataclasses

    import cv2
    import numpy as np

    from n3f.scene.catalog import load_scene
    from n3f.scene.formats.native import write_scene_json

    demo = load_scene("demo/tabletop")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    small = folder / "source"
    small.mkdir(exist_ok=True)
    for k, frame in enumerate(demo.frames):
        path = small / f"{k:04d}.png"
        if not path.is_file():
            cv2.imwrite(str(path), cv2.resize(cv2.imread(str(frame.image_path)), SIZE, interpolation=cv2.INTER_AREA))
    scale = np.diag([SIZE[0] / demo.frames[0].width, SIZE[1] / demo.frames[0].height, 1.0])
    frames = []
    for i in range(n_frames):
        k = i % len(demo.frames)
        path = folder / "images" / f"{i:05d}.png"
        if not path.exists():
            os.link(small / f"{k:04d}.png", path)
        frames.append(
            dataclasses.replace(
                demo.frames[k],
                image_path=path,
                K=scale @ demo.frames[k].K,
                width=SIZE[0],
                height=SIZE[1],
                split="test" if i % 50 == 25 else "train",
                mask_path=None,
                depth_path=None,
                frame_id=i,
            )
        )
    write_scene_json(folder, demo.replace(frames=frames, name=f"video{n_frames}"), content_box=np.asarray(demo.aabb))
    return folder


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """One measurement in this process: ``features`` or ``fit`` of ``args.scene``."""
    import torch

    torch.set_num_threads(1)
    from n3f.pipeline import distributed
    from n3f.pipeline.features import compute_features
    from n3f.pipeline.fit import FitConfig, Trainer
    from n3f.scene.catalog import load_scene

    ctx, _ = distributed.init_from_env("cpu")
    scene = load_scene(args.scene)
    cache = compute_features(scene, "effnet_lite0", {"batch_size": 16}, pca=16)
    if args.child == "features":
        print(json.dumps({"peak_mib": _peak_mib()}))
        return
    config = FitConfig(scene=args.scene, pca=16, target_samples=1 << 14, grid_resolution=48, grid_warmup=4, seed=0)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(config, scene, cache, Path(run))
        trainer.train_step()  # warm-up (kernels, first pages)
        distributed.barrier(ctx)
        start, rays = time.perf_counter(), 0
        for _ in range(args.fit_steps):
            rays += trainer.train_step()["rays"]
        seconds = time.perf_counter() - start
    peak = distributed.allreduce_sum([_peak_mib()], ctx)[0] / ctx.world_size
    if ctx.is_main:
        print(json.dumps({"peak_mib": peak, "rays_per_s": rays / seconds}))


def _run(cmd: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--fit-steps", type=int, default=20)
    parser.add_argument("--work", type=Path, default=None, help="where the videos and caches go (default: a temporary folder)")
    parser.add_argument("--child", choices=["features", "fit"], help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="n3f-bench-scale-"))
    os.environ.setdefault("N3F_CACHE", str(work / "cache"))
    me = [sys.executable, str(Path(__file__).resolve())]
    peaks = {}
    for n in sorted(args.frames):
        scene = make_video(work / f"video{n}", n)
        feats = _run([*me, "--child", "features", "--scene", str(scene)])
        fit = _run([*me, "--child", "fit", "--scene", str(scene), "--fit-steps", str(args.fit_steps)])
        peaks[n] = (feats["peak_mib"], fit["peak_mib"])
        print(
            json.dumps({"frames": n, "features_peak_mib": round(feats["peak_mib"], 1), "fit_peak_mib": round(fit["peak_mib"], 1)}),
            flush=True,
        )
    lo, hi = min(peaks), max(peaks)
    for k, what in enumerate(("features", "fit")):
        print(json.dumps({"metric": f"memory_ratio_{hi}_vs_{lo}_{what}", "value": round(peaks[hi][k] / peaks[lo][k], 3)}))
    print(json.dumps({"metric": f"memory_ratio_{hi}_vs_{lo}", "value": round(max(peaks[hi][k] / peaks[lo][k] for k in (0, 1)), 3)}))
    scene = str(work / f"video{hi}")
    one = _run([*me, "--child", "fit", "--scene", scene, "--fit-steps", str(args.fit_steps)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    two = _run([*torchrun, str(Path(__file__).resolve()), "--child", "fit", "--scene", scene, "--fit-steps", str(args.fit_steps)])
    print(
        json.dumps({"metric": "rays_per_s", "frames": hi, "processes_1": round(one["rays_per_s"]), "processes_2": round(two["rays_per_s"])})
    )


if __name__ == "__main__":
    main()
