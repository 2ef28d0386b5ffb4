"""Benchmark the teachers against timm's bare forward pass, and the memory of `n3f features`.

Prints one JSON object per line:

- ``{"metric": "overhead_vs_timm", "teacher": ..., "value": t_teacher / t_timm, "fps": ..., "timm_fps": ...}``
  per teacher, at the demo resolution (256x192), worst last. ``t_teacher`` is a full teacher call
  (resize check, normalisation, dense features in the teacher's layout); ``t_timm`` is
  ``model.forward_features`` on the same prepared input in the same run. DINO teachers use random
  weights (speed does not depend on them); effnet_lite0 its real weights.
- ``{"metric": "peak_rss_features", "frames": N, "value": MB, ...}`` for `n3f features` on a
  video-sized scene of 100 and 1,000 frames (distinct files linking the demo's 96 images
  cyclically), beside the size the raw features would take if held in RAM.

Usage: python tools/bench_teachers.py [--teachers a,b] [--repeats 3] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from benchutil import median_time  # noqa: E402


def bench_overhead(names: list[str], repeats: int, batch: int) -> list[dict]:
    import teachers

    torch.manual_seed(0)
    images = torch.rand(batch, 3, 192, 256)
    rows = []
    for name in names:
        teacher = teachers.create(name, pretrained=(name == "effnet_lite0"))
        network = teacher.model if hasattr(teacher, "model") else teacher.net
        x = teacher.prepare(images)
        with torch.inference_mode():
            t_ours = median_time(lambda teacher=teacher: teacher(images), repeats)
            t_timm = median_time(lambda network=network, x=x: network.forward_features(x), repeats)
        rows.append(
            {
                "metric": "overhead_vs_timm",
                "teacher": name,
                "value": round(t_ours / t_timm, 3),
                "unit": "x",
                "fps": round(batch / t_ours, 2),
                "timm_fps": round(batch / t_timm, 2),
                "resolution": "256x192",
                "batch": batch,
                "threads": torch.get_num_threads(),
            }
        )
        print(f"# {name}: {batch / t_ours:.2f} fps vs timm {batch / t_timm:.2f} fps", file=sys.stderr)
    return sorted(rows, key=lambda r: r["value"])


def make_video_scene(folder: Path, n_frames: int) -> Path:
    """A native scene folder of ``n_frames`` distinct image files linking the demo's frames cyclically."""
    from n3f.scene.catalog import ensure_procedural, find_recipe
    from n3f.scene.formats.native import read_native, write_scene_json

    demo = read_native(ensure_procedural(find_recipe("demo/tabletop")))
    (folder / "images").mkdir(parents=True)
    frames = []
    for i in range(n_frames):
        src = demo.frames[i % len(demo)]
        dst = folder / "images" / f"{i:05d}.png"
        os.symlink(src.image_path.resolve(), dst)
        frame = __import__("dataclasses").replace(src, image_path=dst, mask_path=None, depth_path=None, frame_id=i)
        frame.c2w = demo.original_c2w(src)
        frames.append(frame)
    write_scene_json(folder, demo.replace(frames=frames, objects=[], name=f"video{n_frames}"))
    return folder


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory (MB) of ``cmd``, measured by a fresh parent that runs only it."""
    probe = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def bench_memory(frame_counts: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in frame_counts:
            scene = make_video_scene(Path(tmp) / f"video{n}", n)
            start = time.perf_counter()
            cmd = [
                sys.executable,
                "-m",
                "n3f",
                "features",
                "--scene",
                str(scene),
                "--teacher",
                "effnet_lite0",
                "--output",
                str(Path(tmp) / "cache"),
                "--quiet",
            ]
            peak_mb = peak_rss_mb(cmd)
            seconds = time.perf_counter() - start
            raw_mb = n * 24 * 32 * 152 * 4 / 2**20
            rows.append(
                {
                    "metric": "peak_rss_features",
                    "frames": n,
                    "value": round(peak_mb, 1),
                    "unit": "MB",
                    "teacher": "effnet_lite0",
                    "seconds": round(seconds, 1),
                    "raw_features_in_ram_mb": round(raw_mb, 1),
                    "note": "ru_maxrss of the n3f features process",
                }
            )
    return rows


def main() -> None:
    import teachers

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", default=",".join(teachers.available()))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("N3F_DATA", str(Path(tempfile.gettempdir()) / "n3f-bench-data"))
    if not args.skip_memory:
        for row in bench_memory([100, 1000]):
            print(json.dumps(row), flush=True)
    for row in bench_overhead(args.teachers.split(","), args.repeats, args.batch):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
