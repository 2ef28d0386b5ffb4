"""Peak memory of `n3f features` and of the fit against the number of frames, and fit rays/s of
1 vs 2 processes.

The "video" is built from the demo: its 96 frames at ``--size`` (default 64x48: cheap frames, so
5,000 of them fit a 2-core machine's time; 256x192, the demo's own size, makes frames held in RAM
show: 737 MB of uint8 pixels at 5,000 frames) repeated along the sequence with their cameras, one
frame in 50 held out. Each measurement runs in a fresh child process and reports
its own peak resident memory (``ru_maxrss``; file pages of the memory maps that the process has
touched count too). The fit's figure covers loading the data, building the model and
``--fit-steps`` training steps (no evaluation).

    python tools/bench_scale.py                       # 100, 1000, 5000 frames
    python tools/bench_scale.py --frames 100 1000     # what fits in the time you have
    python tools/bench_scale.py --size 256x192        # full-size frames

Prints one JSON object a line: per frame count, the peak private memory (``RssAnon``, sampled)
and the peak resident set (``ru_maxrss``, which also counts touched pages of the memory-mapped
frames and features, reclaimable page cache) of each command; then their ratios between the
largest and smallest frame counts, ``memory_ratio_<max>_vs_<min>`` (private memory, the larger of
the two commands) and ``rays_per_s`` of 1 and 2 processes (torchrun, gloo) at the largest count.
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
SIZE = (64, 48)  # set by --size


def make_video(folder: Path, n_frames: int) -> Path:
    """An n3f scene folder of ``n_frames`` frames of ``SIZE`` cycling through the demo's views."""
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


class AnonPeak:
    """Peak private (anonymous) resident memory of this process, sampled from /proc every 20 ms.

    ``ru_maxrss`` also counts the file pages of the memory maps that the process has touched: page
    cache that the kernel drops under pressure, and that grows with the frames a fit samples from.
    ``RssAnon`` is the memory the process itself holds (arrays, tensors, the model)."""

    def __init__(self) -> None:
        import threading

        self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def _now() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._now())


def child(args) -> None:
    """One measurement in this process: ``features`` or ``fit`` of ``args.scene``."""
    import torch

    torch.set_num_threads(1)
    anon = AnonPeak()
    from n3f.pipeline import distributed
    from n3f.pipeline.features import compute_features
    from n3f.pipeline.fit import FitConfig, Trainer
    from n3f.scene.catalog import load_scene

    ctx, _ = distributed.init_from_env("cpu")
    scene = load_scene(args.scene)
    cache = compute_features(scene, "effnet_lite0", {"batch_size": 16}, pca=16)
    if args.child == "features":
        print(json.dumps({"peak_mib": _peak_mib(), "peak_anon_mib": anon.stop()}))
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
    peak, peak_anon = (v / ctx.world_size for v in distributed.allreduce_sum([_peak_mib(), anon.stop()], ctx))
    if ctx.is_main:
        print(json.dumps({"peak_mib": peak, "peak_anon_mib": peak_anon, "rays_per_s": rays / seconds}))


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
    parser.add_argument("--size", default="64x48", help="frame size WxH")
    parser.add_argument("--work", type=Path, default=None, help="where the videos and caches go (default: a temporary folder)")
    parser.add_argument("--child", choices=["features", "fit"], help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    global SIZE
    SIZE = tuple(int(v) for v in args.size.split("x"))
    work = args.work or Path(tempfile.mkdtemp(prefix="n3f-bench-scale-"))
    work = work / f"{SIZE[0]}x{SIZE[1]}"
    os.environ.setdefault("N3F_CACHE", str(work / "cache"))
    me = [sys.executable, str(Path(__file__).resolve())]
    peaks = {}
    for n in sorted(args.frames):
        scene = make_video(work / f"video{n}", n)
        feats = _run([*me, "--child", "features", "--scene", str(scene)])
        fit = _run([*me, "--child", "fit", "--scene", str(scene), "--fit-steps", str(args.fit_steps)])
        peaks[n] = {"features": feats, "fit": fit}
        row = {"frames": n, "size": list(SIZE)}
        for what in ("features", "fit"):
            row[f"{what}_peak_anon_mib"] = round(peaks[n][what]["peak_anon_mib"], 1)
            row[f"{what}_peak_rss_mib"] = round(peaks[n][what]["peak_mib"], 1)
        print(json.dumps(row), flush=True)
    lo, hi = min(peaks), max(peaks)
    ratios = {}
    for what in ("features", "fit"):
        for key, suffix in (("peak_anon_mib", ""), ("peak_mib", "_rss")):
            ratios[f"{what}{suffix}"] = peaks[hi][what][key] / peaks[lo][what][key]
            print(json.dumps({"metric": f"memory_ratio_{hi}_vs_{lo}_{what}{suffix}", "value": round(ratios[f"{what}{suffix}"], 3)}))
    # the headline: private memory, the larger of the two commands' ratios
    print(json.dumps({"metric": f"memory_ratio_{hi}_vs_{lo}", "value": round(max(ratios["features"], ratios["fit"]), 3)}))
    scene = str(work / f"video{hi}")
    one = _run([*me, "--child", "fit", "--scene", scene, "--fit-steps", str(args.fit_steps)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    two = _run([*torchrun, str(Path(__file__).resolve()), "--child", "fit", "--scene", scene, "--fit-steps", str(args.fit_steps)])
    print(
        json.dumps({"metric": "rays_per_s", "frames": hi, "processes_1": round(one["rays_per_s"]), "processes_2": round(two["rays_per_s"])})
    )


if __name__ == "__main__":
    main()
