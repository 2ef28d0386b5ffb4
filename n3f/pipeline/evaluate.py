"""Honest evaluation of a fitted run on a scene with object masks (N3F's protocol).

2D object retrieval: for every object and each of several reference (training) frames, query
with a patch at the object's centre (the mask pixel farthest from its border), rank every pixel
of every held-out frame by similarity, and take the average precision against that object's mask;
mAP is the mean over references and objects. Teacher and student run the same protocol.

Only held-out frames with a mask are scored. Scenes annotated with a foreground mask rather than
instance ids (EPIC-Diff: ``metadata["mask_kind"] == "foreground"``) have one object, the
foreground, and follow NeuralDiff's rule that a frame whose mask is empty is not annotated, so it
is not scored. Their annotations exist on test frames only, so when no training frame has a mask
the references are picked among the scored frames instead, and each reference's own frame is left
out of its ranking (leave-one-out), so a query never finds itself.

3D segmentation: the scene's point cloud from the field, segmented with the student's query from
the first reference (Otsu threshold + the DBSCAN cluster at the clicked point), scored by IoU against the points
that lie inside the object's exact 3D box (scenes that record boxes, like the demo).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from n3f.errors import N3FError


def object_ids(scene) -> list[int]:
    """Ids of the scene's annotated objects (from its records, else from the masks)."""
    return [int(o["id"]) for o in scene.objects if "id" in o]


def object_mask(scene, index: int) -> np.ndarray | None:
    """The mask of frame ``index`` as evaluation reads it, or None: (H, W) int32 instance ids, or
    0/1 for scenes whose masks are foreground annotations (``metadata["mask_kind"]``)."""
    from n3f.scene.images import load_frame_mask

    return load_frame_mask(scene.frames[index], foreground=scene.metadata.get("mask_kind") == "foreground")


def scored_frames(scene) -> tuple[list[int], list[int]]:
    """(scored, reference candidates): held-out (test, then val) frames with a mask, and the
    training frames with a mask, or the scored frames themselves when no training frame has one
    (foreground-annotated scenes: empty annotations are dropped from both; this reads the masks)."""
    held = [i for i in scene.split_indices("test") + scene.split_indices("val") if scene.frames[i].mask_path is not None]
    train = [i for i in scene.split_indices("train") if scene.frames[i].mask_path is not None]
    if scene.metadata.get("mask_kind") == "foreground":
        held = [i for i in held if object_mask(scene, i).any()]
        train = [i for i in train if object_mask(scene, i).any()]
    return held, (train or held)


def reference_patches(scene, object_id: int, n_refs: int = 3, size: int = 8, frames: list[int] | None = None) -> list:
    """Query patches for an object: ``n_refs`` frames spread over those where it is most visible,
    each with a ``size``-pixel box at the mask pixel farthest from the mask's border.

    Args:
        frames: candidate frame indices (default: the training frames).
    """
    import cv2

    from n3f.pipeline.query import Patch, point_box

    seen = []
    for i in scene.split_indices("train") if frames is None else frames:
        mask = object_mask(scene, i)
        if mask is None:
            continue
        m = (mask == object_id).astype(np.uint8)
        if m.sum() == 0:
            continue
        dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        seen.append((i, float(dist[y, x]), x, y))
    if not seen:
        return []
    best = max(s[1] for s in seen)
    good = [s for s in seen if s[1] >= 0.5 * best]
    picks = [good[int(k)] for k in np.linspace(0, len(good) - 1, min(n_refs, len(good))).round()]
    patches = []
    for i, radius, x, y in picks:
        side = int(max(1, min(size, 2 * radius - 1)))  # stay inside the mask
        f = scene.frames[i]
        patches.append(Patch(i, point_box(x + 0.5, y + 0.5, side, f.width, f.height)))
    return patches


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of ``scores`` ranking ``labels`` (bool), as scikit-learn defines it."""
    from sklearn.metrics import average_precision_score

    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels.reshape(-1), scores.reshape(-1)))


def box_points(points, scene, box_world: np.ndarray, lift: float = 0.02, up_axis: int = 2) -> np.ndarray:
    """(N,) bool: points inside an object's world box (2, 3), its floor raised by ``lift`` of its
    height so the surface the object stands on is not counted (``up_axis``: the demo is z-up)."""
    world = scene.to_original(points.positions.astype(np.float64))
    lo, hi = np.array(box_world[0], float), np.array(box_world[1], float)
    lo[up_axis] += lift * (hi[up_axis] - lo[up_axis])
    return np.all((world >= lo) & (world <= hi), axis=1)


def evaluate_run(trainer, maps, n_refs: int = 3, patch: int = 8, progress=None) -> dict:
    """Retrieval mAP (teacher and student), held-out PSNR and 3D segmentation IoU.

    Raises:
        N3FError: the scene has no object masks.
    """
    from n3f.pipeline.pointcloud import scene_points, segment
    from n3f.pipeline.query import QueryEngine
    from n3f.pipeline.query_report import point_similarity

    scene = trainer.scene
    ids = object_ids(scene)
    held, candidates = scored_frames(scene) if ids else ([], [])
    if not held:
        raise N3FError(
            f"scene {scene.name!r} has no object masks on its held-out frames, so retrieval cannot be scored; "
            "use a scene with masks (demo/tabletop, or EPIC-Diff with annotations/)"
        )
    leave_one_out = candidates == held
    masks = {i: object_mask(scene, i) for i in held}
    engine = QueryEngine(trainer, maps)
    names = {int(o["id"]): o.get("name", str(o["id"])) for o in scene.objects if "id" in o}
    retrieval = {s: {} for s in ("teacher", "student")}
    references = {}
    # the first reference of each object also queries the 3D segmentation below
    patches = {oid: reference_patches(scene, oid, n_refs, patch, frames=candidates) for oid in ids}
    student_vectors: dict = {}
    work = [(oid, p) for oid in ids for p in patches[oid]]
    it = progress(work, "retrieval queries", len(work)) if progress else work
    for oid, p in it:
        references.setdefault(names[oid], []).append({"frame": p.frame, "box": list(p.box)})
        ranked = [i for i in held if not (leave_one_out and i == p.frame)]
        labels = np.concatenate([(masks[i] == oid).reshape(-1) for i in ranked]) if ranked else np.zeros(0, bool)
        if not labels.any():
            continue
        for source in ("teacher", "student"):
            vector = engine.vector(p, source)
            if source == "student":
                student_vectors[p] = vector
            sims = engine.similarity(vector, source, ranked)
            ap = average_precision(np.concatenate([sims[i].reshape(-1) for i in ranked]), labels)
            retrieval[source].setdefault(names[oid], []).append(ap)
    result = {
        "step": trainer.step,
        "scene": scene.name,
        "teacher": trainer.cache.teacher,
        "student_composite": maps.composite,
        "student_streams": maps.streams,
        "scored_frames": held,
        "references_from": "held-out frames, leave-one-out" if leave_one_out else "training frames",
        "references": references,
        "retrieval": {},
    }
    for source, per in retrieval.items():
        per_object = {k: float(np.mean(v)) for k, v in per.items()}
        result["retrieval"][source] = {
            "mAP": float(np.mean(list(per_object.values()))) if per_object else float("nan"),
            "per_object": per_object,
        }
    result["psnr"] = _held_out_psnr(trainer)
    if scene.metadata.get("dynamic"):
        from n3f.pipeline.streams_eval import evaluate_streams

        result["streams"] = evaluate_streams(trainer, held, progress=progress)
    boxes = {int(o["id"]): np.asarray(o["box"]) for o in scene.objects if "box" in o}
    if boxes:
        points = scene_points(scene, maps)
        ious = {}
        for oid, box in boxes.items():
            if not patches.get(oid):
                continue
            first = patches[oid][0]
            vector = student_vectors[first] if first in student_vectors else engine.vector(first, "student")
            sim = point_similarity(points, vector)
            chosen, _ = segment(points, sim, anchor=engine.anchor(first))
            truth = box_points(points, scene, box)
            union = (chosen | truth).sum()
            ious[names[oid]] = float((chosen & truth).sum() / union) if union else float("nan")
        result["segmentation_3d"] = {"mean_iou": float(np.nanmean(list(ious.values()))), "per_object": ious, "points": len(points)}
    return result


def _held_out_psnr(trainer) -> float:
    """The run's held-out PSNR at its checkpoint (from metrics.jsonl, else computed now)."""
    path = trainer.run_dir / "metrics.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "eval/psnr" in r and r["step"] == trainer.step and r.get("eval/frames", 0) == len(trainer.eval_ids)]
        if rows:
            return float(rows[-1]["eval/psnr"])
    return float(trainer.evaluate(trainer.eval_ids, write_renders=False)["eval/psnr"])


def markdown_table(result: dict) -> str:
    """The evaluation as a Markdown table (per object and mean, teacher beside student)."""
    t, s = result["retrieval"]["teacher"], result["retrieval"]["student"]
    seg = result.get("segmentation_3d", {}).get("per_object", {})
    lines = [
        f"Evaluation of {result['scene']} at step {result['step']} (teacher {result['teacher']}; student "
        f"{result.get('student_composite', 'volume')} composite); held-out PSNR {result['psnr']:.2f} dB",
        "",
        f"Retrieval over {len(result.get('scored_frames', []))} held-out frames with masks; references from {result.get('references_from', 'training frames')}.",
        "",
        "| object | teacher AP | student AP | 3D IoU |",
        "|---|---:|---:|---:|",
    ]
    for name in s["per_object"]:
        iou = seg.get(name)
        lines.append(
            f"| {name} | {t['per_object'].get(name, math.nan):.3f} | {s['per_object'][name]:.3f} | {'' if iou is None else f'{iou:.3f}'} |"
        )
    mean_iou = result.get("segmentation_3d", {}).get("mean_iou")
    lines.append(f"| **mean** | **{t['mAP']:.3f}** | **{s['mAP']:.3f}** | {'' if mean_iou is None else f'**{mean_iou:.3f}**'} |")
    streams = result.get("streams")
    if streams:
        lines += ["", f"Static field on the held-out frames' static pixels: {streams['static_pixel_psnr']:.2f} dB PSNR."]
        for key, title in (("iou", "stream IoU (claimed pixels vs truth)"), ("moving_claimed_by", "moving objects' pixels claimed by")):
            if key not in streams:
                continue
            lines += ["", f"| {title} | held-out frames | training frames |", "|---|---:|---:|"]
            for name in ("dynamic", "actor", "transient"):
                cells = [streams[key].get(split, {}).get(name, math.nan) for split in ("held_out", "train")]
                lines.append(f"| {name} | {cells[0]:.3f} | {cells[1]:.3f} |")
    return "\n".join(lines) + "\n"


def write_evaluation(run_dir: Path, result: dict) -> Path:
    """``metrics.json`` and ``evaluation.md`` in the run folder (the latest evaluation), and a copy
    per step under ``evaluations/``. Returns the metrics.json path."""
    from n3f.io import atomic_write_json, atomic_write_text

    run_dir = Path(run_dir)
    atomic_write_json(run_dir / "evaluations" / f"step-{result['step']:07d}.json", result)
    atomic_write_json(run_dir / "metrics.json", result)
    atomic_write_text(run_dir / "evaluation.md", markdown_table(result))
    return run_dir / "metrics.json"
