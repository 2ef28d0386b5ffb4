"""Where a demo/kitchen_dynamic fit keeps the moving sponge: densities inside its exact box.

For every tenth training frame, 4,000 points uniform in the upper half of the sponge's world box at
that frame's time (``n3f.scene.dynamic.sponge_world_box``, mapped into the normalised world; the
lower half would reach into the table top's density), and the same points 0.1 normalised units
higher (free air above the table). Prints, per frame, the mean density
of the static field at both, and of the dynamic stream with this frame's embedding and with the
embedding of the training frame half the video away (where the sponge is elsewhere). A dynamic
stream that has learned the sponge is dense in its own frame and not in the other.

``--reference RUN`` adds the static density of another run in the same boxes: a fit of
``demo/tabletop`` (the same room and normalisation, no sponge ever) says how dense a static field of
that many steps is just above the table top anyway. Without it the first column is easily misread
as the sponge smeared into the static field: a 1,000-step fit's table surface is that thick.

Usage:
  python tools/probe_sponge.py RUN [--reference TABLETOP_RUN]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a three-stream run of demo/kitchen_dynamic")
    parser.add_argument("--reference", type=Path, help="a run of demo/tabletop (no sponge) for the static density in the same boxes")
    args = parser.parse_args()

    import torch

    from n3f.pipeline.fit import load_run
    from n3f.scene.dynamic import sponge_world_box
    from n3f.scene.normalise import transform_points

    trainer = load_run(args.run)
    scene, ids = trainer.scene, trainer.train_ids
    if trainer.transient is None or not scene.metadata.get("dynamic"):
        raise SystemExit(f"{args.run} is not a three-stream run of demo/kitchen_dynamic")
    reference = load_run(args.reference) if args.reference else None
    if reference is not None and not torch.allclose(
        torch.as_tensor(reference.scene.normalisation, dtype=torch.float64), torch.as_tensor(scene.normalisation, dtype=torch.float64)
    ):
        raise SystemExit(f"{args.reference} is normalised differently from {args.run}: its densities at the same points mean nothing here")
    generator = torch.Generator().manual_seed(0)
    extra = " static, reference run |" if reference is not None else ""
    print(
        f"| frame | static, upper half of the sponge box |{extra} static, 0.1 above | dynamic, this frame | dynamic, frame half a video away |"
    )
    print("|---:|---:|" + ("---:|" if reference is not None else "") + "---:|---:|---:|")
    for k in range(0, len(ids), 10):
        i, j = ids[k], ids[(k + len(ids) // 2) % len(ids)]
        box = torch.tensor(transform_points(scene.normalisation, sponge_world_box(scene.frames[i].time)), dtype=torch.float32)
        box[0, 2] = box.mean(0)[2]  # the upper half
        points = box[0] + (box[1] - box[0]) * torch.rand(4000, 3, generator=generator)
        above = points + torch.tensor([0.0, 0.0, 0.1])
        with torch.no_grad():
            static, air = trainer.model.density(points).mean(), trainer.model.density(above).mean()
            here, other = (trainer.transient.dynamic_fields(points, torch.full((4000,), f), features=False)["sigma"].mean() for f in (i, j))
            ref = f" {reference.model.density(points).mean():.2f} |" if reference is not None else ""
        print(f"| {i} | {static:.2f} |{ref} {air:.2f} | {here:.3f} | {other:.3f} (frame {j}) |")


if __name__ == "__main__":
    main()
