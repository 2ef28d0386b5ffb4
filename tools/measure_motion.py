"""How well multi-view colour consistency finds moving pixels on demo/kitchen_dynamic.

Scores every training frame with :func:`n3f.pipeline.motion.motion_scores` and compares the
scores with the exact masks (sponge id 8, hand id 9): ROC AUC, and per threshold the share of
sponge and hand pixels flagged and of static pixels flagged by mistake. Prints one JSON line per
figure and writes a picture (frame | score | exact moving mask) beside the output.

The static surface each pixel sees comes from one of:
- ``--depth oracle`` (default): the same scene rendered without the sponge and the hand, exact
  depth of a perfect static field (an upper bound);
- ``--run RUN``: the depth a fitted run's static field renders (what a fit would have).

Usage:
  python tools/measure_motion.py [--size 128x96] [--output runs/motion] [--quantile 0] [--offsets -24,-16,-8,8,16,24]
  python tools/measure_motion.py --run RUN [--stride 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MOVING, SPONGE, HAND = (8, 9), 8, 9


def _oracle_inputs(size: tuple[int, int], folder: Path):
    """Training frames, images and exact static-scene points of a kitchen_dynamic render."""
    from n3f.pipeline.motion import points_from_depth
    from n3f.scene.dynamic import KitchenDynamicConfig, render_kitchen_dynamic
    from n3f.scene.formats.native import read_native
    from n3f.scene.images import load_frame_depth, load_frame_image, load_frame_mask

    width, height = size
    options = dict(width=width, height=height, supersample=1)
    scene = read_native(render_kitchen_dynamic(folder / "scene", KitchenDynamicConfig(**options)))
    static = read_native(render_kitchen_dynamic(folder / "static", KitchenDynamicConfig(**options, exclude=("sponge", "hand"))))
    train = [i for i, f in enumerate(scene.frames) if f.split == "train"]
    frames = [scene.frames[i] for i in train]
    points = [points_from_depth(static.frames[i], load_frame_depth(static.frames[i])) for i in train]
    return frames, [load_frame_image(f) for f in frames], points, [load_frame_mask(f) for f in frames]


def _run_inputs(run: Path, stride: int):
    """Training frames (downscaled by ``stride``), images and the run's static-field points."""
    import torch

    from n3f.pipeline.fit import load_run
    from n3f.render.rays import pixel_rays
    from n3f.scene.images import load_frame_image, load_frame_mask
    from n3f.scene.normalise import downscale_frame

    trainer = load_run(run)
    frames, images, points, masks = [], [], [], []
    for i in trainer.train_ids:
        full = trainer.scene.frames[i]
        frame = downscale_frame(full, stride) if stride > 1 else full
        H, W = frame.height, frame.width
        jj, ii = np.mgrid[0:H, 0:W]
        xy = torch.tensor(np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1) * stride, dtype=torch.float32)
        with torch.no_grad():
            out = trainer.render_pixels(full, xy, features=False)
        o, d = pixel_rays(torch.tensor(full.K), torch.tensor(full.c2w), xy)
        points.append((o + out["depth"].reshape(-1, 1) * d).numpy().reshape(H, W, 3))
        image = load_frame_image(full)
        images.append(image[stride // 2 :: stride, stride // 2 :: stride][:H, :W])
        masks.append(load_frame_mask(full)[stride // 2 :: stride, stride // 2 :: stride][:H, :W])
        frames.append(frame)
    return frames, images, points, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="use this fitted run's static depth (default: exact depth of the static scene)")
    parser.add_argument("--size", default="128x96", help="render size for the oracle depth, WxH")
    parser.add_argument("--stride", type=int, default=2, help="with --run: score every stride-th pixel")
    parser.add_argument("--offsets", default="-24,-16,-8,8,16,24", help="neighbouring training frames compared")
    parser.add_argument("--quantile", type=float, default=0.0, help="quantile of the neighbours' differences")
    parser.add_argument("--output", type=Path, default=Path("runs/motion"))
    args = parser.parse_args()

    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from n3f.pipeline.motion import motion_scores

    args.output.mkdir(parents=True, exist_ok=True)
    if args.run is not None:
        frames, images, points, masks = _run_inputs(args.run, args.stride)
        source = f"run {args.run}"
    else:
        width, height = (int(v) for v in args.size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            frames, images, points, masks = _oracle_inputs((width, height), Path(tmp))
        source = "exact depth of the static scene"
    offsets = tuple(int(v) for v in args.offsets.split(","))
    scores = motion_scores(frames, images, points, offsets=offsets, quantile=args.quantile)
    s = np.concatenate([x.ravel() for x in scores])
    m = np.concatenate([x.ravel() for x in masks])
    scored = ~np.isnan(s)
    moving, sponge, hand = np.isin(m, MOVING), m == SPONGE, m == HAND
    figures = {
        "source": source,
        "frames": len(frames),
        "scored_share": float(scored.mean()),
        "auc_moving": float(roc_auc_score(moving[scored], s[scored])),
        "auc_sponge_vs_static": float(roc_auc_score(sponge[scored & ~hand], s[scored & ~hand])),
    }
    print(json.dumps({"metric": "motion_detector", **figures}))
    rows = []
    for threshold in (0.05, 0.1, 0.15):
        flagged = scored & (s > threshold)
        row = {
            "threshold": threshold,
            "sponge_flagged": float(flagged[sponge].mean()),
            "hand_flagged": float(flagged[hand].mean()),
            "static_flagged": float(flagged[~moving].mean()),
            "sponge_share_of_flagged": float(flagged[sponge].sum() / max(flagged.sum(), 1)),
            "sponge_share_of_flagged_outside_the_hand": float(flagged[sponge].sum() / max((flagged & ~hand).sum(), 1)),
        }
        rows.append(row)
        print(json.dumps({"metric": "motion_detector_threshold", **row}))
    print(
        "\n| threshold | sponge flagged | hand flagged | static flagged | sponge share of flagged (outside the hand) |"
        "\n|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['threshold']} | {r['sponge_flagged']:.3f} | {r['hand_flagged']:.3f} | {r['static_flagged']:.4f} | "
            f"{r['sponge_share_of_flagged']:.3f} ({r['sponge_share_of_flagged_outside_the_hand']:.3f}) |"
        )
    picture = []
    for k in np.linspace(0, len(frames) - 1, 4).astype(int)[1:]:
        score = (np.clip(np.nan_to_num(scores[k], nan=0.0) / 0.3, 0, 1) * 255).astype(np.uint8)
        unscored = (np.isnan(scores[k]) * 110).astype(np.uint8)
        mask = (np.isin(masks[k], MOVING) * 255).astype(np.uint8)
        picture.append(
            np.concatenate([(images[k] * 255).astype(np.uint8), np.stack([score, score, unscored], -1), np.stack([mask] * 3, -1)], 1)
        )
    path = args.output / "motion_scores.png"
    Image.fromarray(np.concatenate(picture, 0)).save(path)
    print(f"\npicture: {path} (frame | score, yellow = inconsistent, blue = unscored | exact moving mask)")


if __name__ == "__main__":
    main()
