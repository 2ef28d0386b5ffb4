"""Measure feature view consistency of a fitted run on a scene with exact depth (the demo).

For held-out frame pairs a few views apart, pixel pairs that see the same surface point (from the
exact depth, occlusion-checked) are compared: mean cosine of the teacher's features and of the
student's rendered features. Prints one JSON line per figure.

Usage: python tools/measure_consistency.py --run RUN [--gap 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from n3f.pipeline.consistency import view_consistency
    from n3f.pipeline.fit import load_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--gap", type=int, default=2, help="frames between the two views of a pair")
    args = parser.parse_args()
    trainer = load_run(args.run)
    ids = trainer.scene.split_indices("test")
    pairs = [(i, (i + args.gap) % len(trainer.scene)) for i in ids]
    result = view_consistency(trainer, pairs)
    for who in ("teacher", "student"):
        print(
            json.dumps(
                {
                    "metric": "view_consistency_cosine",
                    "who": who,
                    "value": round(result[who], 4),
                    "pixel_pairs": result["pairs"],
                    "frame_gap": args.gap,
                    "run": str(args.run),
                    "teacher": trainer.cache.teacher,
                }
            )
        )


if __name__ == "__main__":
    main()
