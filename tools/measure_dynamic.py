"""Static-only student against the three-stream student on demo/kitchen_dynamic, in one run.

Fits both students with the same options and steps (or takes two existing runs), evaluates each
with `n3f evaluate`'s code (retrieval mAP of the static objects on the static field, held-out PSNR of
the static field on the static pixels, and for the three-stream run the IoU of each stream's
claimed pixels with the exact masks), prints one JSON line per figure and a Markdown table, and
writes a picture of held-out frames (truth | static-only | three-stream static field | all streams |
stream shares as red = actor, green = dynamic, blue = static) beside the runs.

Usage:
  python tools/measure_dynamic.py --steps 1000 [--output runs/dynamic-proof] [--set error_sampling=0.5 ...]
  python tools/measure_dynamic.py --runs STATIC_RUN DYNAMIC_RUN
  python tools/measure_dynamic.py --streams-only RUN [RUN ...] [--picture]

``--set KEY=VALUE`` changes a FitConfig field of the three-stream fit (the static-only fit keeps
the defaults). ``--streams-only`` scores runs on the stream figures alone (static-pixel PSNR and the
stream IoUs, a few minutes each), without retrieval maps; with ``--picture`` it also writes each
run's ``streams.png`` (the picture above, without the static-only column).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCENE = "demo/kitchen_dynamic"


def _fit(dynamic: bool, steps: int, output: Path, options: dict | None = None) -> Path:
    from n3f.pipeline.fit import FitConfig, fit

    config = FitConfig(scene=SCENE, steps=steps, eval_every=0, dynamic=dynamic, **(options or {}))
    return fit(config, output=output / ("dynamic" if dynamic else "static"), quiet=False)


def _evaluate(run: Path) -> tuple[object, dict]:
    from n3f.pipeline.evaluate import evaluate_run, write_evaluation
    from n3f.pipeline.fit import load_run
    from n3f.pipeline.maps import student_maps
    from n3f.progress import make_progress

    trainer = load_run(run)
    track = make_progress(False)
    result = evaluate_run(trainer, student_maps(trainer, 4, progress=track), progress=track)
    write_evaluation(run, result)
    return trainer, result


def _options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings -> FitConfig overrides (values read as Python literals, else strings)."""
    import ast
    import dataclasses

    from n3f.pipeline.fit import FitConfig

    known, out = {f.name for f in dataclasses.fields(FitConfig)}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--set takes KEY=VALUE with KEY a FitConfig field (got {pair!r})")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _streams_only(runs: list[Path], picture: bool = False) -> None:
    """Print the static-pixel PSNR and stream IoUs of each run, as `n3f evaluate` scores them; with
    ``picture``, also write ``streams.png`` into each run folder (:func:`_picture`, without the
    static-only column)."""
    from n3f.pipeline.evaluate import scored_frames
    from n3f.pipeline.fit import load_run
    from n3f.pipeline.streams_eval import evaluate_streams
    from n3f.progress import make_progress

    for run in runs:
        trainer = load_run(run)
        result = evaluate_streams(trainer, scored_frames(trainer.scene)[0], progress=make_progress(False))
        row = {
            "run": str(run),
            "step": trainer.step,
            "static_pixel_psnr": result["static_pixel_psnr"],
            "stream_iou": result.get("iou"),
            "moving_claimed_by": result.get("moving_claimed_by"),
        }
        print(json.dumps({"metric": "dynamic_streams", **row}), flush=True)
        if picture and trainer.transient is not None:
            _picture(None, trainer, run / "streams.png", trainer.scene.split_indices("test")[1:4])
            print(f"picture: {run / 'streams.png'}")


def _picture(static_trainer, dynamic_trainer, path: Path, frames: list[int]) -> None:
    """Held-out ``frames`` (scene indices), one row each: truth | the static-only student (left out
    when ``static_trainer`` is None) | the three-stream student's static field | all its streams |
    stream shares (red actor, green dynamic, blue static); written to ``path`` as a PNG."""
    import cv2
    import numpy as np
    import torch

    from n3f.io import atomic_write_bytes
    from n3f.render.rays import pixel_grid
    from n3f.scene.images import load_frame_image

    rows = []
    for i in frames:
        frame = dynamic_trainer.scene.frames[i]
        H, W = frame.height, frame.width
        xy = pixel_grid(W, H)

        def image(rgb, H=H, W=W):
            return (rgb.clamp(0, 1).reshape(H, W, 3).numpy() * 255 + 0.5).astype(np.uint8)

        truth = (load_frame_image(frame) * 255 + 0.5).astype(np.uint8)
        only = [] if static_trainer is None else [image(static_trainer.render_pixels(frame, xy, features=False)["rgb"])]
        static = image(dynamic_trainer.render_pixels(frame, xy, features=False)["rgb"])
        r = dynamic_trainer.render_pixels(frame, xy, features=False, streams="all")
        shares = image(torch.stack([r["share/actor"], r["share/dynamic"], r["share/static"]], -1))
        rows.append(np.concatenate([truth, *only, static, image(r["rgb"]), shares], 1))
    atomic_write_bytes(path, cv2.imencode(".png", np.concatenate(rows, 0)[:, :, ::-1])[1].tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="steps of each fit")
    parser.add_argument("--output", type=Path, default=Path("runs/dynamic-proof"))
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("STATIC_RUN", "DYNAMIC_RUN"), help="evaluate these runs instead of fitting")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="FitConfig field of the three-stream fit")
    parser.add_argument("--streams-only", nargs="+", type=Path, metavar="RUN", help="score these runs' streams only")
    parser.add_argument("--picture", action="store_true", help="with --streams-only: write streams.png into each run folder")
    args = parser.parse_args()
    if args.streams_only:
        return _streams_only(args.streams_only, args.picture)
    options = _options(args.set)
    runs = args.runs or [_fit(False, args.steps, args.output), _fit(True, args.steps, args.output, options)]
    (static_trainer, static), (dynamic_trainer, dynamic) = _evaluate(runs[0]), _evaluate(runs[1])
    if dynamic_trainer.transient is None or static_trainer.transient is not None:
        raise SystemExit("give the static-only run first and the three-stream run second")
    lines = []
    for name, result in (("static_only", static), ("three_streams", dynamic)):
        row = {
            "student": name,
            "run": str(runs[0] if name == "static_only" else runs[1]),
            "step": result["step"],
            "static_pixel_psnr": result["streams"]["static_pixel_psnr"],
            "retrieval_mAP_static_objects": result["retrieval"]["student"]["mAP"],
            "teacher_mAP": result["retrieval"]["teacher"]["mAP"],
            **({"stream_iou": result["streams"]["iou"]} if "iou" in result["streams"] else {}),
        }
        lines.append(row)
        print(json.dumps({"metric": "dynamic_scene", **row}), flush=True)
    held = dynamic_trainer.scene.split_indices("test")
    picture = runs[1].parent / "streams.png"
    _picture(static_trainer, dynamic_trainer, picture, held[1:4])
    iou = dynamic["streams"]["iou"]
    print()
    print("| student | static-pixel PSNR (held-out) | retrieval mAP, static objects |")
    print("|---|---:|---:|")
    for row in lines:
        print(f"| {row['student']} | {row['static_pixel_psnr']:.2f} dB | {row['retrieval_mAP_static_objects']:.3f} |")
    print()
    print("| stream IoU | held-out frames | training frames |")
    print("|---|---:|---:|")
    for name in ("dynamic", "actor", "transient"):
        print(f"| {name} | {iou['held_out'][name]:.3f} | {iou['train'][name]:.3f} |")
    print(f"\npicture: {picture}")


if __name__ == "__main__":
    main()
