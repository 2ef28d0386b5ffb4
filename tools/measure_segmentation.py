"""3D segmentation of a fitted demo run, per object: the cut among the points near the click (the
default of :func:`n3f.pipeline.pointcloud.segment`) beside the cut over the whole scene.

For each object with an exact box, each of ``--refs`` reference patches (as ``n3f evaluate`` picks
them) is queried; the segment's IoU, precision and recall against the points inside the object's
box are printed, one JSON line per object and cut, then the means.

    python tools/measure_segmentation.py --run RUN [--refs 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--refs", type=int, default=3, help="reference patches per object")
    parser.add_argument("--stride", type=int, default=4, help="map stride (as n3f evaluate)")
    args = parser.parse_args()

    from n3f.pipeline.evaluate import box_points, reference_patches, scored_frames
    from n3f.pipeline.fit import load_run
    from n3f.pipeline.maps import student_maps
    from n3f.pipeline.pointcloud import scene_points, segment
    from n3f.pipeline.query import QueryEngine
    from n3f.pipeline.query_report import point_similarity

    trainer = load_run(args.run)
    maps = student_maps(trainer, args.stride)
    scene = trainer.scene
    _, candidates = scored_frames(scene)
    engine = QueryEngine(trainer, maps)
    points = scene_points(scene, maps)
    cuts = {"near the click": {}, "whole scene": {"neighbourhood": np.inf}}
    means = {name: [] for name in cuts}
    for obj in scene.objects:
        if "box" not in obj:
            continue
        truth = box_points(points, scene, np.asarray(obj["box"]))
        for name, options in cuts.items():
            scores = []
            for patch in reference_patches(scene, int(obj["id"]), args.refs, 8, frames=candidates):
                sim = point_similarity(points, engine.vector(patch, "student"))
                chosen, _ = segment(points, sim, anchor=engine.anchor(patch), **options)
                hit = (chosen & truth).sum()
                scores.append((hit / max((chosen | truth).sum(), 1), hit / max(chosen.sum(), 1), hit / max(truth.sum(), 1)))
            iou, precision, recall = np.mean(scores, axis=0)
            means[name].append(iou)
            row = {"object": obj["name"], "cut": name, "iou": round(iou, 3), "precision": round(precision, 3), "recall": round(recall, 3)}
            print(json.dumps(row), flush=True)
    for name, values in means.items():
        print(json.dumps({"metric": "mean_iou", "cut": name, "value": round(float(np.mean(values)), 3), "refs": args.refs}))


if __name__ == "__main__":
    main()
