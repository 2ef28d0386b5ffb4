"""Retrieval mAP of the teacher's cached features using only their first k PCA channels.

Shows where the information that tells objects apart lives: N3F's retrieval protocol of
``n3f evaluate`` (reference patches from training frames, every held-out pixel ranked, AP against
the object's mask), teacher only, for k = 4, 8, 16, 32 and all channels. Prints one JSON line per k.

Usage: python tools/measure_teacher_channels.py [--scene demo/tabletop] [--pca 64]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np
    import torch

    from n3f.pipeline.evaluate import average_precision, reference_patches
    from n3f.pipeline.features import compute_features
    from n3f.pipeline.fit import sample_features
    from n3f.pipeline.maps import upsample_map
    from n3f.scene.catalog import load_scene
    from n3f.scene.images import load_frame_mask

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default="demo/tabletop")
    parser.add_argument("--pca", type=int, default=64)
    args = parser.parse_args()
    scene = load_scene(args.scene)
    cache = compute_features(scene, None, {"device": "cpu"}, pca=args.pca, seed=0)
    feats, geometry = np.asarray(cache.features(), np.float32), cache.meta["geometry"]
    held = scene.split_indices("test")
    W, H = scene.frames[0].width, scene.frames[0].height
    masks = {i: load_frame_mask(scene.frames[i]) for i in held}
    refs = [(o["id"], p) for o in scene.objects for p in reference_patches(scene, o["id"], 3)]
    std = feats.reshape(-1, feats.shape[-1]).std(0)
    for k in [k for k in (4, 8, 16, 32) if k < feats.shape[-1]] + [feats.shape[-1]]:
        f = feats[..., :k] / np.maximum(np.linalg.norm(feats[..., :k], axis=-1, keepdims=True), 1e-8)
        aps = []
        for oid, patch in refs:
            xy = patch.pixels()
            v = sample_features(torch.from_numpy(f[patch.frame : patch.frame + 1]), torch.zeros(len(xy), dtype=torch.long), xy, geometry)
            v = v.numpy().mean(0)
            v /= np.linalg.norm(v)
            labels = np.concatenate([(masks[i] == oid).ravel() for i in held])
            scores = np.concatenate([upsample_map(f[i] @ v, geometry, W, H).ravel() for i in held])
            aps.append(average_precision(scores, labels))
        print(
            json.dumps(
                {
                    "metric": "teacher_mAP",
                    "channels": k,
                    "channel_std": round(float(std[k - 1]), 4),
                    "value": round(float(np.nanmean(aps)), 4),
                }
            )
        )


if __name__ == "__main__":
    main()
