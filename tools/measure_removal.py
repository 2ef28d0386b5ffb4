"""Measure object removal on the demo scene against the scene rendered without the object.

For each object (or --object NAME), the run's held-out frames that show it are rendered with the
object removed (a query on its central patch, the default selection: the segment's cut inside its padded box) and compared on the object's pixels
with the exact render of the demo without it; the unedited render is scored the same way, and the
other pixels of the removed render against the original images. Prints one JSON line per object.

Usage: python tools/measure_removal.py --run RUN [--object mug_red]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from n3f.pipeline.edit_check import removal_check
    from n3f.pipeline.fit import load_run
    from n3f.pipeline.maps import student_maps

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--object", default="", help="one object name (default: every object)")
    args = parser.parse_args()
    trainer = load_run(args.run)
    maps = student_maps(trainer, 4)
    names = [args.object] if args.object else [o["name"] for o in trainer.scene.objects]
    for name in names:
        print(json.dumps({"metric": "removal_psnr", "run": str(args.run), **removal_check(trainer, maps, name)}), flush=True)


if __name__ == "__main__":
    main()
