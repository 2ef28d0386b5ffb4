"""Measure how much of a fitted field's rendering weight is fog, on a scene with exact depth (the demo).

For every 8th pixel of the held-out frames, the packed samples of the rendered ray are binned by
their distance over the true distance to the surface (from the exact depth); the shares of the
total weight per bin are printed, and the share of pixels whose volume-rendered (expected) depth
and surface depth (``--composite surface`` of the maps) lie within 5% of the truth. Prints one
JSON line per figure.

Usage: python tools/measure_fog.py --run RUN [--frames 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BINS = [0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 100.0]


def main() -> None:
    import numpy as np
    import torch

    from n3f.pipeline.fit import load_run
    from n3f.pipeline.maps import SURFACE_WINDOW_STEPS, map_pixels
    from n3f.render.rays import pixel_rays
    from n3f.render.render import render_rays
    from n3f.scene.images import load_frame_depth

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--frames", type=int, default=4, help="held-out frames measured")
    args = parser.parse_args()
    trainer = load_run(args.run)
    scene = trainer.scene
    ids = scene.split_indices("test")[: args.frames]
    hist = np.zeros(len(BINS) - 1)
    near = {"volume": [], "surface": []}
    for i in ids:
        frame = scene.frames[i]
        xy, _, _ = map_pixels(frame.width, frame.height, 8)
        truth_z = load_frame_depth(frame)
        if truth_z is None:
            raise SystemExit(f"{scene.name} has no exact depth; this measurement needs the demo scene")
        px = (xy.numpy() - 0.5).astype(int)
        K = frame.K
        ray_len = np.sqrt(((xy[:, 0].numpy() - K[0, 2]) / K[0, 0]) ** 2 + ((xy[:, 1].numpy() - K[1, 2]) / K[1, 1]) ** 2 + 1)
        truth = truth_z[px[:, 1], px[:, 0]] * ray_len
        o, d = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy)
        with torch.no_grad():
            out = render_rays(
                trainer.field_fn(False),
                o,
                d,
                trainer.space,
                trainer.grid,
                trainer.step_size,
                density_fn=trainer.model.density,
                return_samples=True,
                surface_window=SURFACE_WINDOW_STEPS * trainer.step_size,
            )
        s = out["samples"]
        rel = ((s["t_starts"] + s["t_ends"]) / 2).numpy() / truth[s["ray_indices"].numpy()]
        hist += np.histogram(rel, BINS, weights=s["weights"].numpy())[0] / len(xy)
        near["volume"].append(np.abs(out["depth"][:, 0].numpy() / truth - 1) < 0.05)
        near["surface"].append(np.abs(out["surface/depth"][:, 0].numpy() / truth - 1) < 0.05)
    hist /= len(ids)
    for lo, hi, share in zip(BINS[:-1], BINS[1:], hist):
        print(json.dumps({"metric": "weight_share", "distance_over_true": [lo, hi], "value": round(float(share), 4)}))
    for name, hits in near.items():
        print(json.dumps({"metric": "depth_within_5pct", "composite": name, "value": round(float(np.concatenate(hits).mean()), 4)}))


if __name__ == "__main__":
    main()
