"""Oracle experiments for the three-stream fit of demo/kitchen_dynamic: hand the trainer the exact
sponge masks, to learn which part of the method keeps the dynamic stream from claiming the sponge.

- ``--gate``: the static field gets no gradient from the sponge's pixels (the exact masks as the
  ``static_gate`` of :func:`n3f.student.render_streams.render_streams`), so it cannot take the
  sponge in; the transient streams still learn from those pixels.
- ``--sample S``: a share ``S`` of each step's rays is drawn uniformly from the sponge's pixels of
  the training frames (in place of the error map's draws; uniform draws for the rest).

- ``--exact-depth`` (with ``--set motion_after=N``): the fit's own moving-pixel detector
  (:mod:`n3f.pipeline.motion`) runs on the exact depth of the static scene (no sponge, no hand)
  in place of the static field's surface depth, every cell scored; the actor stream still says
  what the hand hides. It bounds what a perfect static geometry would give the detector.

None is a method (a real capture has no masks or exact depth); they bound what a perfect detector of moving
pixels, or a perfect sampler, would give. The fit is an ordinary run folder; score it with
``python tools/measure_dynamic.py --streams-only RUN`` and ``python tools/probe_sponge.py RUN``.

Usage:
  python tools/oracle_dynamic.py --output runs/oracle [--gate] [--sample 0.25] [--steps 1000] [--set KEY=VALUE ...]
  python tools/oracle_dynamic.py --output runs/oracle --exact-depth --set motion_after=500 [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sponge_masks(trainer):
    """(n_train_frames, H, W) bool tensor: the sponge's pixels in each training frame (by row)."""
    import torch

    from n3f.scene.dynamic import DYNAMIC, stream_labels
    from n3f.scene.images import load_frame_mask

    dynamic = trainer.scene.metadata["dynamic"]
    return torch.stack(
        [torch.from_numpy(stream_labels(load_frame_mask(trainer.scene.frames[i]), dynamic) == DYNAMIC) for i in trainer.train_ids]
    )


def _exact_depth_cells(render_cells, folder: Path):
    """``render_cells`` of :mod:`n3f.pipeline.motion` with each cell's world point taken from the
    exact depth of the static scene rendered at the cells' grid into ``folder`` (once per grid
    size), and every cell's surface share 1 (scored)."""
    import numpy as np
    from measure_motion import _kitchen

    from n3f.pipeline.motion import points_from_depth
    from n3f.scene.images import load_frame_depth

    static: dict = {}

    def cells_of(trainer, stride, progress=None):
        cells = render_cells(trainer, stride, progress)
        h, w = cells["actor"].shape[1:]
        if (w, h) not in static:
            scene = _kitchen(folder / f"static-{w}x{h}", w, h, static=True)
            static[w, h] = {Path(f.image_path).name: f for f in scene.frames}
        names = [Path(trainer.scene.frames[trainer.train_ids[r]].image_path).name for r in cells["rows"]]
        cells["points"] = [points_from_depth(f, load_frame_depth(static[w, h][n])) for f, n in zip(cells["frames"], names)]
        cells["surface"] = np.ones_like(cells["surface"])
        return cells

    return cells_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--gate", action="store_true", help="keep the static field's gradient off the sponge's pixels")
    parser.add_argument("--sample", type=float, default=0.0, help="share of rays drawn from the sponge's pixels")
    parser.add_argument("--exact-depth", action="store_true", help="the moving-pixel detector uses the static scene's exact depth")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="FitConfig field")
    args = parser.parse_args()
    if not 0 <= args.sample <= 1:
        parser.error("--sample is a share of the rays, in [0, 1]")

    import torch
    from measure_dynamic import SCENE, _options

    import n3f.pipeline.error_map as error_map
    import n3f.pipeline.fit as fit_module

    state: dict = {}
    trainer_init, batch_rays = fit_module.Trainer.__init__, fit_module.batch_rays

    def init(self, *a, **k):
        trainer_init(self, *a, **k)
        state["masks"] = _sponge_masks(self)
        state["pixels"] = state["masks"].nonzero()  # (n, 3): training-frame row, y, x

    def recorded_batch_rays(data, frame, xy):
        state["frame"], state["xy"] = frame, xy.long()
        return batch_rays(data, frame, xy)

    def static_gate(self, target_rgb):
        frame, xy = state["frame"], state["xy"]
        sponge = state["masks"][frame, xy[:, 1], xy[:, 0]]
        return lambda alone: (~sponge).to(target_rgb.dtype)

    def draw(self, n, generator):
        pick = state["pixels"][torch.randint(0, len(state["pixels"]), (n,), generator=generator)]
        return pick[:, 0], pick[:, 2], pick[:, 1]  # frame rows, px, py

    fit_module.Trainer.__init__ = init
    fit_module.batch_rays = recorded_batch_rays
    if args.gate:
        fit_module.Trainer._static_gate = static_gate
    options = _options(args.set)
    if args.exact_depth and options.get("motion_after", 0) <= 0:
        parser.error("--exact-depth replaces the depth of the moving-pixel detector: set motion_after (--set motion_after=500)")
    if args.sample > 0:
        error_map.ErrorMap.draw = draw
        options["error_sampling"] = args.sample
    config = fit_module.FitConfig(scene=SCENE, steps=args.steps, eval_every=0, dynamic=True, **options)
    with tempfile.TemporaryDirectory(prefix="n3f-exact-depth-") as tmp:
        if args.exact_depth:
            import n3f.pipeline.motion as motion

            motion.render_cells = _exact_depth_cells(motion.render_cells, Path(tmp))
        print(fit_module.fit(config, output=args.output, quiet=False))


if __name__ == "__main__":
    main()
