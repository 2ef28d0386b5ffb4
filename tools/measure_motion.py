"""How well multi-view colour consistency finds moving pixels on demo/kitchen_dynamic.

Scores every training frame with :func:`n3f.pipeline.motion.motion_scores` and compares the
scores with the exact masks (sponge id 8, hand id 9): ROC AUC, and per threshold the share of
sponge and hand pixels flagged and of static pixels flagged by mistake. Prints one JSON line per
figure and writes a picture (frame | score | exact moving mask) beside the output.

The static surface each pixel sees comes from one of:
- by default (the oracle): the same scene rendered without the sponge and the hand, exact
  depth of a perfect static field (an upper bound);
- ``--run RUN``: the surface depth a fitted run's static field renders, through the detector a
  fit runs (``FitConfig.motion_after``; :func:`n3f.pipeline.motion.render_cells` and ``score_cells``: pixels
  whose surface holds half of the ray's weight or less are unscored; cells the actor stream
  covers in a neighbour do not count as seen there). ``--span``, ``--view-step`` (which neighbour frames
  each frame is compared with, as ``FitConfig.motion_span`` and ``motion_view_step``) and
  ``--quantile`` apply to both.

``--hide-hand`` (oracle only) does for the exact depth what the fit does with its actor stream: a
neighbour whose projection lands on the hand's exact mask does not count as seeing the point.

``--keep-blobs R`` keeps, per threshold, only the flags :func:`n3f.pipeline.motion.keep_blobs`
keeps (blobs that survive an opening by a (2R + 1)-cell square, with their edges), as a fit with
``motion_sample_opening = R`` does before it draws rays.

``--grow T[,T...]`` then grows the kept flags through the connected cells scoring above T
(:func:`n3f.pipeline.motion.grow_flags`), as a fit with ``motion_grow_threshold = T`` does: one
row per threshold (``--thresholds``) and T below it (0: no growth).

``--flags RUN`` instead scores the flags a fit with the detector (``--motion-after``) keeps in its
last checkpoint (``--step N``: the one saved at step N): the cells rays are drawn from and the
cells the static field skips. ``--holding`` also renders all streams at the sponge's cells of every
second training frame and reports, per class of flags, how much of the sponge the dynamic stream
holds (and how much the actor does) and how its share of the pixel is spread (a share near one
half: it tints the table behind rather than hiding it); for a fit with ``motion_camera_fixed`` the
picture draws the ray flags the actor may hold in magenta. ``--explained`` renders the static
field alone at every cell of every training frame and reports, per class of flags and per exact
label, how far its colour is from the image: what ``FitConfig.motion_static_agrees`` would leave
unflagged at each threshold. ``--persistence`` asks whether a ray flag's static point is flagged
again in the other training frames that see it (a static surface flagged by a depth error might be
flagged in every view; the sponge's path only while the sponge is there), and ``--other-times``
whether the cells the dynamic stream holds are still held with the embeddings of other times (a
static cell it holds might be held at every time; the sponge only at its own).

``--run RUN --step N`` scores the run as saved at step N: the static field a detection at step N
used (``motion_every`` apart from ``motion_after``).

``--far-tolerance F[,F...]`` scores with each two-sided depth check (``far_tolerance`` of
:func:`n3f.pipeline.motion.motion_scores`: a neighbour whose surface lies farther than the point by
more than F of its depth does not see it; 0: off), one row per value, from one render.
``--depth-error`` (with ``--run``) also compares the static field's surface z-depth at the cells'
centres with the exact depth of the static scene, per exact label and per class of cell (flagged,
scored and not flagged, unscored).

Usage:
  python tools/measure_motion.py [--size 128x96] [--output runs/motion] [--quantile 0] [--span 24 --view-step 8] [--hide-hand]
  python tools/measure_motion.py --flags RUN [--step 1000] [--holding] [--explained] [--persistence] [--other-times] [--output runs/motion]
  python tools/measure_motion.py --run RUN [--step 1000] [--stride 2] [--quantile 0.34] [--search-radius 1] [--keep-blobs 1] [--thresholds 0.08,0.1] [--grow 0,0.05] [--far-tolerance 0,0.05] [--depth-error]
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


def _kitchen(folder: Path, width: int, height: int, static: bool = False):
    """demo/kitchen_dynamic rendered into ``folder`` at width x height, one ray per pixel centre;
    ``static``: without the sponge and the hand (its depth is a perfect static field's)."""
    from n3f.scene.dynamic import KitchenDynamicConfig, render_kitchen_dynamic
    from n3f.scene.formats.native import read_native

    exclude = ("sponge", "hand") if static else ()
    return read_native(render_kitchen_dynamic(folder, KitchenDynamicConfig(width=width, height=height, supersample=1, exclude=exclude)))


def _oracle_inputs(size: tuple[int, int], folder: Path):
    """Training frames, images and exact static-scene points of a kitchen_dynamic render."""
    from n3f.pipeline.motion import points_from_depth
    from n3f.scene.images import load_frame_depth, load_frame_image, load_frame_mask

    width, height = size
    scene = _kitchen(folder / "scene", width, height)
    static = _kitchen(folder / "static", width, height, static=True)
    train = [i for i, f in enumerate(scene.frames) if f.split == "train"]
    frames = [scene.frames[i] for i in train]
    points = [points_from_depth(static.frames[i], load_frame_depth(static.frames[i])) for i in train]
    return frames, [load_frame_image(f) for f in frames], points, [load_frame_mask(f) for f in frames]


def _at_cell_centres(frame, h: int, w: int):
    """A frame's image (h, w, 3) and exact mask (h, w) read at the centres of an h x w grid of cells."""
    from n3f.scene.images import load_frame_image, load_frame_mask

    ys = ((np.arange(h) + 0.5) * frame.height / h).astype(int)
    xs = ((np.arange(w) + 0.5) * frame.width / w).astype(int)
    return load_frame_image(frame)[ys][:, xs], load_frame_mask(frame)[ys][:, xs]


def _run_scores(
    run: Path,
    stride: int,
    radius: int,
    quantile: float,
    offsets: tuple[int, ...],
    step: int | None = None,
    far_tolerances: tuple[float, ...] = (0.0,),
):
    """A fitted run's detector scores (the fit's own :func:`render_cells` and :func:`score_cells`:
    the static field's surface depth, unsure surfaces unscored), one list of (h, w) maps per far
    tolerance; images and exact masks at the cells' centres; and the static field's z-depth there
    (h, w) with the frames it was rendered for. Training frames in video order. ``step``: the run
    as saved at that step (default: the last). The frames are rendered once for every tolerance."""
    from n3f.pipeline.fit import load_run
    from n3f.pipeline.motion import render_cells, score_cells, z_depths

    trainer = load_run(run, step=step)
    cells = render_cells(trainer, stride)
    rows = cells["rows"]
    scores = {far: score_cells(cells, (radius,), quantile, offsets, far)[radius] for far in far_tolerances}
    frames = [trainer.scene.frames[trainer.train_ids[r]] for r in rows]
    images, masks = [], []
    h, w = cells["actor"].shape[1:]
    for frame in frames:
        image, mask = _at_cell_centres(frame, h, w)
        images.append(image)
        masks.append(mask)
    depth = {"fitted": z_depths(cells["frames"], cells["points"]), "frames": frames}
    return {far: [v[r] for r in rows] for far, v in scores.items()}, images, masks, depth


def _exact_static_depth(frames: list, h: int, w: int, folder: Path) -> list[np.ndarray]:
    """Exact z-depth (h, w) at the cells' centres of demo/kitchen_dynamic's static scene (no sponge,
    no hand) for each of ``frames`` (the scene's frames, matched by image name)."""
    from n3f.scene.images import load_frame_depth

    static = _kitchen(folder, w, h, static=True)
    by_name = {Path(f.image_path).name: f for f in static.frames}
    return [load_frame_depth(by_name[Path(f.image_path).name]) for f in frames]


def _depth_error(error: np.ndarray, unscored: np.ndarray, labels: dict[str, np.ndarray], flags: np.ndarray) -> dict:
    """How far the fitted static surface's z-depth is from the exact static depth: ``error`` (n, h, w)
    ``fitted / exact - 1`` (both in the scene's normalised units), per exact label (``labels``, as
    :func:`_labels` gives them), split into cells flagged (``flags``), scored and not flagged, and
    ``unscored``: cells, quantiles 50/75/90% of the absolute error, and the share more than 5% too
    near and more than 5% too far."""
    out: dict = {}
    for label, where in labels.items():
        if label == "hand":
            continue
        out[label] = {}
        for name, part in (("flagged", flags), ("scored_unflagged", ~flags & ~unscored), ("unscored", unscored)):
            e = error[where & part]
            out[label][name] = {"cells": len(e)}
            if len(e):
                out[label][name].update(
                    quantiles_50_75_90=[round(float(q), 4) for q in np.quantile(np.abs(e), [0.5, 0.75, 0.9])],
                    near_by_5pc=round(float((e < -0.05).mean()), 3),
                    far_by_5pc=round(float((e > 0.05).mean()), 3),
                )
    return out


def _cell_centres_xy(frame, ii: np.ndarray, jj: np.ndarray, h: int, w: int):
    """(n,) columns ``ii`` and rows ``jj`` of an h x w grid of cells over ``frame`` -> (n, 2) float32
    tensor of the cells' centres in the frame's pixel coordinates (as ``render_pixels`` takes them)."""
    import torch

    return torch.tensor(np.stack([(ii + 0.5) * frame.width / w, (jj + 0.5) * frame.height / h], 1), dtype=torch.float32)


def _labels(masks: np.ndarray) -> dict[str, np.ndarray]:
    """The exact labels of (n, h, w) cell masks as bool maps: ``sponge``, ``hand`` and ``static`` (the rest)."""
    sponge, hand = masks == SPONGE, masks == HAND
    return {"sponge": sponge, "hand": hand, "static": ~(sponge | hand)}


def _frames_missing(flags: np.ndarray, sponge: np.ndarray) -> int:
    """Frames that show the sponge but flag none of it ((n, h, w) bool maps each): the transient
    streams get no rays on it there beyond the uniform ones."""
    return int((sponge.any((1, 2)) & ~(flags & sponge).any((1, 2))).sum())


def _holding(trainer, flags: dict[str, np.ndarray], masks: np.ndarray, every: int = 2) -> dict:
    """Where the dynamic stream holds the sponge against where the detector flagged it.

    Renders all streams at the sponge's cells of every ``every``-th training frame and splits
    them by their flags: cells rays are drawn from (``sampled``), cells only the static field skips
    (``gated_only``) and the rest (``unflagged``). Per class: its share of the sponge's cells, the
    share of them the dynamic stream holds (``share/dynamic`` above one half, as
    ``moving_claimed_by`` counts), the share the actor holds, the mean dynamic share and a
    histogram of it. ``trainer``: the run loaded at the flags' checkpoint."""
    if list(trainer.train_ids) != list(trainer.scene.split_indices("train")):
        raise SystemExit(
            f"{trainer.run_dir}: its training rows are not the scene's training split in order; the flags cannot be matched to frames"
        )
    _, h, w = masks.shape
    share, actor, sampled, gated = [], [], [], []
    for r in range(0, len(masks), every):
        sponge = masks[r] == SPONGE
        if not sponge.any():
            continue
        frame = trainer.scene.frames[trainer.train_ids[r]]
        jj, ii = np.nonzero(sponge)
        xy = _cell_centres_xy(frame, ii, jj, h, w)
        out = trainer.render_pixels(frame, xy, features=False, streams="all")
        share.append(out["share/dynamic"].numpy().ravel())
        actor.append(out["share/actor"].numpy().ravel())
        sampled.append(flags["sample"][r][sponge])
        gated.append(flags["gate"][r][sponge])
    if not share:
        raise SystemExit(f"{trainer.run_dir}: no training frame shows the sponge (id {SPONGE}); nothing to hold")
    share, actor, sampled, gated = (np.concatenate(x) for x in (share, actor, sampled, gated))
    bins = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    out: dict = {"cells": len(share), "held": round(float((share > 0.5).mean()), 3), "share_bins": bins}
    for name, cells in (("sampled", sampled), ("gated_only", gated & ~sampled), ("unflagged", ~gated & ~sampled)):
        part = share[cells]
        out[name] = {
            "of_sponge": round(float(cells.mean()), 3),
            "held": round(float((part > 0.5).mean()), 3) if len(part) else None,
            "actor_held": round(float((actor[cells] > 0.5).mean()), 3) if len(part) else None,
            "mean_share": round(float(part.mean()), 3) if len(part) else None,
            "share_histogram": np.histogram(part, bins=bins)[0].tolist(),
        }
    return out


def _explained(trainer, flags: dict[str, np.ndarray], masks: np.ndarray, thresholds=(0.05, 0.1, 0.15)) -> dict:
    """How far the static field's colour alone is from the image (mean absolute RGB difference,
    0-1) at the flagged cells: per class of flags (``sample``, ``gate``, and every cell), per exact
    label (sponge, static, hand), the cells and the share of them above each threshold (those
    ``motion_static_agrees`` at that threshold keeps flagged). ``trainer``: the run loaded at the
    flags' checkpoint."""
    from n3f.pipeline.motion import render_cells

    cells = render_cells(trainer, trainer.moving.stride)
    residual = np.zeros(masks.shape, dtype=np.float32)
    residual[cells["rows"]] = np.stack([np.abs(r - i).mean(-1) for r, i in zip(cells["static_rgb"], cells["images"])])
    out: dict = {"thresholds": list(thresholds)}
    labels = _labels(masks)
    for name, f in (*flags.items(), ("all", np.ones(masks.shape, dtype=bool))):
        out[name] = {}
        for label, where in labels.items():
            r = residual[f & where]
            out[name][label] = {"cells": len(r), "above": [round(float((r > t).mean()), 3) if len(r) else None for t in thresholds]}
    return out


def _persistence(trainer, flags: dict[str, np.ndarray], masks: np.ndarray) -> dict:
    """Is a ray flag on the static world flagged in every view, and one on the sponge only while
    the sponge is there? For every cell rays are drawn from (``sample``), the static surface point
    it sees is projected into every other training frame that sees it (not hidden by a nearer
    surface or the hand, as the detector counts views), and the share of those frames whose
    ``gate`` flags cover it is the flag's persistence. Per exact label: the flags, the mean number
    of frames that see their point, quantiles of the persistence and the share above 0.3 / 0.5.
    ``trainer``: the run loaded at the flags' checkpoint."""
    from n3f.pipeline.motion import ACTOR_COVERS, OCCLUSION_TOLERANCE, render_cells, seen_in, z_depths

    cells = render_cells(trainer, trainer.moving.stride)
    rows, frames, points = cells["rows"], cells["frames"], cells["points"]
    depths = z_depths(frames, points)
    labels = _labels(masks)
    found: dict[str, list] = {name: [] for name in labels}
    for i, r in enumerate(rows):
        flagged = flags["sample"][r]
        if not flagged.any():
            continue
        world = points[i][flagged]
        seen, again = np.zeros(len(world)), np.zeros(len(world))
        for j, r2 in enumerate(rows):
            if j != i:
                idx, uu, vv = seen_in(frames[j], depths[j], world, cells["actor"][r2] > ACTOR_COVERS, OCCLUSION_TOLERANCE)
                seen[idx] += 1
                again[idx] += flags["gate"][r2][vv, uu]
        for name, where in labels.items():
            on = where[r][flagged] & (seen > 0)
            found[name].append(np.stack([again[on] / seen[on], seen[on]], 1))
    out: dict = {}
    for name, parts in found.items():
        v = np.concatenate(parts) if parts else np.zeros((0, 2))
        out[name] = {"flags": len(v)}
        if len(v):
            out[name].update(
                mean_views=round(float(v[:, 1].mean()), 1),
                quantiles_10_25_50_75_90=[round(float(q), 3) for q in np.quantile(v[:, 0], [0.1, 0.25, 0.5, 0.75, 0.9])],
                **{f"above_{t}": round(float((v[:, 0] > t).mean()), 3) for t in (0.3, 0.5)},
            )
    return out


def _other_times(trainer, masks: np.ndarray, every: int = 8, apart: float = 0.3) -> dict:
    """Does the dynamic stream hold a static cell at every time, and the sponge only at its own?
    For every ``every``-th training frame, the cells whose dynamic share is above one half are
    rendered again from the same camera with the embeddings of the frames at times 0, 0.25, 0.5,
    0.75 and 1 at least ``apart`` from the frame's own (the nearest frame's embedding). Per exact
    label: the cells held, and the share of (cell, other time) pairs where the dynamic stream
    still holds the cell. ``trainer``: the loaded run."""
    import dataclasses

    _, h, w = masks.shape
    jj, ii = np.mgrid[0:h, 0:w]
    still: dict[str, list] = {"sponge": [], "static": []}
    for r in range(0, len(masks), every):
        frame = trainer.scene.frames[trainer.train_ids[r]]
        xy = _cell_centres_xy(frame, ii.ravel(), jj.ravel(), h, w)
        held = trainer.render_pixels(frame, xy, features=False, streams="all")["share/dynamic"].numpy().ravel() > 0.5
        times = [t for t in (0.0, 0.25, 0.5, 0.75, 1.0) if abs(t - frame.time) >= apart]
        if not held.any() or not times:
            continue
        labels = _labels(masks[r].ravel()[held])
        for t in times:  # an image path no frame has: the run picks the embedding of the frame nearest in time
            other = dataclasses.replace(frame, image_path=Path(f"other-time-{t}.png"), time=t)
            again = trainer.render_pixels(other, xy[held], features=False, streams="all")["share/dynamic"].numpy().ravel() > 0.5
            for name, parts in still.items():
                parts.append(again[labels[name]])
    out = {}
    for name, parts in still.items():
        v = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
        out[name] = {"held_pairs": len(v), "still_held": round(float(v.mean()), 3) if len(v) else None}
    return out


def _score_flags(
    run: Path,
    output: Path,
    step: int | None = None,
    holding: bool = False,
    explained: bool = False,
    persistence: bool = False,
    other_times: bool = False,
) -> None:
    """Print how the moving-pixel flags in ``run``'s last checkpoint (or the one at ``step``) cover
    the exact masks, and draw them over six training frames (``output/motion_flags.png``); with
    ``holding``, also how much of the sponge the dynamic stream holds in each class of flags
    (:func:`_holding`); with ``persistence`` and ``other_times``, :func:`_persistence` and
    :func:`_other_times`."""
    from PIL import Image

    from n3f.pipeline.fit import checkpoint_at, latest_checkpoint, load_run, read_checkpoint, read_config
    from n3f.scene.catalog import load_scene

    ckpt = latest_checkpoint(run) if step is None else checkpoint_at(run, step)
    if holding or explained or persistence or other_times:  # the loaded run holds the flags, and its scene serves the masks too
        trainer = load_run(run, step=step)
        moving = trainer.moving.state_dict() if trainer.moving is not None else None
        scene = trainer.scene
    else:
        trainer, moving = None, (read_checkpoint(ckpt) if ckpt is not None else {}).get("moving_pixels")
        scene = load_scene(read_config(run).scene)
    if moving is None:
        raise SystemExit(f"{run} has no checkpoint with moving-pixel flags (fit it with --motion-after)")
    flags = {k: moving[k].numpy() for k in ("sample", "gate")}
    _, h, w = flags["sample"].shape
    masks, images = [], []
    for i in scene.split_indices("train"):
        image, mask = _at_cell_centres(scene.frames[i], h, w)
        masks.append(mask)
        images.append(image)
    m = np.stack(masks)
    sponge, hand = m == SPONGE, m == HAND
    row = {"checkpoint": str(ckpt), "detected_at_step": int(moving["detected_at"])}
    for name, f in flags.items():
        row[name] = {
            "sponge": round(float(f[sponge].mean()), 3),
            "hand": round(float(f[hand].mean()), 3),
            "static": round(float(f[~(sponge | hand)].mean()), 4),
            "sponge_share": round(float(f[sponge].sum() / max(f.sum(), 1)), 3),
            "frames_missing_sponge": _frames_missing(f, sponge),
        }
    row["frames_with_sponge"] = int(sponge.any((1, 2)).sum())
    # With motion_camera_fixed the ray flags the actor may answer are drawn apart (the map needs the
    # loaded run, which works it out from the training images).
    fixed = trainer.moving.camera_fixed.numpy() if trainer is not None and trainer.config.motion_camera_fixed > 0 else None
    if fixed is not None:  # of the ray flags on each exact label, the share the actor may hold
        f = flags["sample"]
        row["sample"]["camera_fixed"] = {
            label: round(float(fixed[f & where].mean()), 3) if (f & where).any() else None for label, where in _labels(m).items()
        }
    if holding:
        row["holding"] = _holding(trainer, flags, m)
    if explained:
        row["explained"] = _explained(trainer, flags, m)
    if persistence:
        row["persistence"] = _persistence(trainer, flags, m)
    if other_times:
        row["other_times"] = _other_times(trainer, m)
    print(json.dumps({"metric": "motion_flags", **row}))
    if holding:
        held = row["holding"]
        print(f"\nthe dynamic stream holds {held['held']:.3f} of the sponge's {held['cells']} cells (every second training frame)")
        print(
            "| flags | share of the sponge | held | held by the actor | mean dynamic share | cells by dynamic share 0-.1/.3/.5/.7/.9/1 |\n"
            "|---|---:|---:|---:|---:|---|"
        )
        for name in ("sampled", "gated_only", "unflagged"):
            c = held[name]
            print(
                f"| {name} | {c['of_sponge']:.3f} | {'-' if c['held'] is None else format(c['held'], '.3f')} | "
                f"{'-' if c['actor_held'] is None else format(c['actor_held'], '.3f')} | "
                f"{'-' if c['mean_share'] is None else format(c['mean_share'], '.3f')} | {' / '.join(map(str, c['share_histogram']))} |"
            )
    if explained:
        ex = row["explained"]
        print(f"\nthe static field's colour off the image by more than {' / '.join(map(str, ex['thresholds']))} (share of the cells)")
        print("| flags | label | cells | above |\n|---|---|---:|---|")
        for name in ("sample", "gate", "all"):
            for label, c in ex[name].items():
                print(f"| {name} | {label} | {c['cells']} | {' / '.join('-' if a is None else format(a, '.3f') for a in c['above'])} |")
    if persistence:
        print("\nof the other training frames that see a ray flag's static point, the share that flag it too")
        print(
            "| label | ray flags | frames seeing each | persistence 10/25/50/75/90% | above 0.3 | above 0.5 |\n|---|---:|---:|---|---:|---:|"
        )
        for label, c in row["persistence"].items():
            if c["flags"]:
                q = " / ".join(map(str, c["quantiles_10_25_50_75_90"]))
                print(f"| {label} | {c['flags']} | {c['mean_views']} | {q} | {c['above_0.3']} | {c['above_0.5']} |")
    if other_times:
        print("\nthe cells the dynamic stream holds, rendered with the embeddings of other times (0.3 or more apart)")
        print("| label | cell x time pairs | still held |\n|---|---:|---:|")
        for label, c in row["other_times"].items():
            print(f"| {label} | {c['held_pairs']} | {'-' if c['still_held'] is None else c['still_held']} |")
    picture = []
    for k in np.linspace(0, len(images) - 1, 8).astype(int)[1:-1]:
        frame = (images[k] * 255).astype(np.uint8)
        shown = frame.copy()
        gate, sample = flags["gate"][k], flags["sample"][k]
        shown[gate] = (shown[gate] * 0.4 + np.array([0, 0, 255]) * 0.6).astype(np.uint8)
        shown[sample] = (255, 0, 0)
        if fixed is not None:
            shown[sample & fixed[k]] = (255, 0, 255)
        truth = np.zeros_like(frame)
        truth[m[k] == SPONGE], truth[m[k] == HAND] = (255, 255, 0), (0, 255, 0)
        picture.append(np.concatenate([frame, shown, truth], 1))
    output.mkdir(parents=True, exist_ok=True)
    path = output / "motion_flags.png"
    sheet = Image.fromarray(np.concatenate(picture, 0))
    sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST).save(path)  # one cell: 2 x 2 screen pixels
    magenta = ", magenta: rays drawn here that the actor may hold" if fixed is not None else ""
    print(f"picture: {path} (frame | red: rays drawn here{magenta}, blue: the static field skips | exact masks: yellow sponge, green hand)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="use this fitted run's static depth (default: exact depth of the static scene)")
    parser.add_argument("--flags", type=Path, metavar="RUN", help="score the flags in this run's last checkpoint instead")
    parser.add_argument("--step", type=int, help="with --flags or --run: the checkpoint saved at this step, not the last")
    parser.add_argument(
        "--holding", action="store_true", help="with --flags: also render how much of the flagged sponge the dynamic stream holds"
    )
    parser.add_argument(
        "--explained", action="store_true", help="with --flags: also how far the static field's colour is from the flagged cells'"
    )
    parser.add_argument(
        "--persistence", action="store_true", help="with --flags: how often each ray flag's static point is flagged in the other views"
    )
    parser.add_argument(
        "--other-times", action="store_true", help="with --flags: whether the dynamic stream still holds its cells at other times"
    )
    parser.add_argument("--size", default="128x96", help="render size for the oracle depth, WxH")
    parser.add_argument("--stride", type=int, default=2, help="with --run: score cells of stride x stride pixels")
    parser.add_argument("--span", type=int, default=24, help="compare each frame with neighbours up to this many training frames away")
    parser.add_argument("--view-step", type=int, default=8, help="... every this many training frames (24 and 8: six neighbours)")
    parser.add_argument("--quantile", type=float, default=0.0, help="quantile of the neighbours' differences")
    parser.add_argument("--hide-hand", action="store_true", help="oracle: the hand's exact mask hides what lies behind it")
    parser.add_argument("--search-radius", type=int, default=0, help="best match within this many pixels in each neighbour")
    parser.add_argument(
        "--far-tolerance",
        default="0",
        metavar="F[,F...]",
        help="a neighbour whose surface lies farther than the point by more than this share of its depth does not see it (0: off)",
    )
    parser.add_argument(
        "--keep-blobs", type=int, default=0, metavar="R", help="keep only flagged blobs (keep_blobs radius R; 0: all flags)"
    )
    parser.add_argument("--thresholds", default="0.05,0.1,0.15", help="flag cells scoring above each of these")
    parser.add_argument("--grow", default="0", metavar="T[,T...]", help="grow kept flags through cells scoring above T (0: not)")
    parser.add_argument(
        "--depth-error",
        action="store_true",
        help="with --run: also how far the static field's surface depth is from the exact static depth, flagged cells apart",
    )
    parser.add_argument("--output", type=Path, default=Path("runs/motion"))
    args = parser.parse_args()
    if args.flags is not None:
        _score_flags(args.flags, args.output, args.step, args.holding, args.explained, args.persistence, args.other_times)
        return
    if args.holding or args.explained or args.persistence or args.other_times:
        parser.error("--holding, --explained, --persistence and --other-times go with --flags RUN")
    if args.step is not None and args.run is None:
        parser.error("--step goes with --flags RUN or --run RUN")
    if args.depth_error and args.run is None:
        parser.error("--depth-error goes with --run RUN")

    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from n3f.pipeline.motion import flag_cells, motion_scores, neighbour_offsets

    try:
        offsets = neighbour_offsets(args.span, args.view_step)
    except ValueError:
        parser.error("--view-step must be at least 1 and at most --span")
    args.output.mkdir(parents=True, exist_ok=True)
    far_tolerances = tuple(float(v) for v in args.far_tolerance.split(","))
    if args.run is not None:
        scores, images, masks, depth = _run_scores(
            args.run, args.stride, args.search_radius, args.quantile, offsets, args.step, far_tolerances
        )
        at = "" if args.step is None else f" at step {args.step}"
        source = f"run {args.run}{at} (its static field's surface depth, as the fit's detector uses it)"
    else:
        width, height = (int(v) for v in args.size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            frames, images, points, masks = _oracle_inputs((width, height), Path(tmp))
        source = "exact depth of the static scene"
        hidden = [m == HAND for m in masks] if args.hide_hand else None
        scores = {
            far: motion_scores(
                frames,
                images,
                points,
                offsets=offsets,
                quantile=args.quantile,
                search_radius=args.search_radius,
                hidden=hidden,
                far_tolerance=far,
            )
            for far in far_tolerances
        }
    m = np.concatenate([x.ravel() for x in masks])
    moving, sponge, hand = np.isin(m, MOVING), m == SPONGE, m == HAND
    sponge_cells = np.stack(masks) == SPONGE
    error = None
    if args.depth_error:
        with tempfile.TemporaryDirectory() as tmp:
            exact = _exact_static_depth(depth["frames"], *sponge_cells.shape[1:], Path(tmp) / "static")
        error, labels = np.stack(depth["fitted"]) / np.stack(exact) - 1, _labels(np.stack(masks))
    rows = []
    pairs = [(t, g) for t in (float(v) for v in args.thresholds.split(",")) for g in (float(v) for v in args.grow.split(",")) if g < t]
    for far, maps in scores.items():
        s = np.concatenate([x.ravel() for x in maps])
        scored = ~np.isnan(s)
        figures = {
            "source": source,
            "quantile": args.quantile,
            "hide_hand": args.hide_hand,
            "keep_blobs": args.keep_blobs,
            "far_tolerance": far,
            "frames": len(maps),
            "scored_share": float(scored.mean()),
            "auc_moving": float(roc_auc_score(moving[scored], s[scored])),
            "auc_sponge_vs_static": float(roc_auc_score(sponge[scored & ~hand], s[scored & ~hand])),
        }
        print(json.dumps({"metric": "motion_detector", **figures}))
        unscored = np.isnan(np.stack(maps))
        stacked = np.where(unscored, 0.0, np.stack(maps))
        for threshold, grow in pairs:
            flags = flag_cells(stacked, threshold, args.keep_blobs, grow)
            flagged = flags.ravel()
            row = {
                "far_tolerance": far,
                "threshold": threshold,
                "grow": grow,
                "sponge_flagged": float(flagged[sponge].mean()),
                "hand_flagged": float(flagged[hand].mean()),
                "static_flagged": float(flagged[~moving].mean()),
                "sponge_share_of_flagged": float(flagged[sponge].sum() / max(flagged.sum(), 1)),
                "sponge_share_of_flagged_outside_the_hand": float(flagged[sponge].sum() / max((flagged & ~hand).sum(), 1)),
                "frames_missing_sponge": _frames_missing(flags, sponge_cells),
                "frames_with_sponge": int(sponge_cells.any((1, 2)).sum()),
            }
            if error is not None:
                row["depth_error"] = _depth_error(error, unscored, labels, flags)
            rows.append(row)
            print(json.dumps({"metric": "motion_detector_threshold", **row}))
    print(
        "\n| far tolerance | threshold | grown above | sponge flagged | hand flagged | static flagged | sponge share of flagged (outside the hand) | frames missing the sponge |"
        "\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['far_tolerance'] or '-'} | {r['threshold']} | {r['grow'] or '-'} | {r['sponge_flagged']:.3f} | {r['hand_flagged']:.3f} | "
            f"{r['static_flagged']:.4f} | {r['sponge_share_of_flagged']:.3f} ({r['sponge_share_of_flagged_outside_the_hand']:.3f}) | "
            f"{r['frames_missing_sponge']} of {r['frames_with_sponge']} |"
        )
    for r in rows:
        if "depth_error" in r:
            print(
                f"\nfar tolerance {r['far_tolerance']}, threshold {r['threshold']}: the static surface's z-depth against the exact static depth"
            )
            print("| label | cells | count | error 50/75/90% | >5% too near | >5% too far |\n|---|---|---:|---|---:|---:|")
            for label in ("sponge", "static"):
                for name, c in r["depth_error"][label].items():
                    if c["cells"]:
                        q = " / ".join(map(str, c["quantiles_50_75_90"]))
                        print(f"| {label} | {name} | {c['cells']} | {q} | {c['near_by_5pc']} | {c['far_by_5pc']} |")
    scores = scores[far_tolerances[0]]
    picture = []
    for k in np.linspace(0, len(scores) - 1, 4).astype(int)[1:]:
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
