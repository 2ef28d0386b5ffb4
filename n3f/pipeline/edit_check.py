"""How well does removing an object reveal what lies behind it? (demo scene only)

The demo is re-rendered without the object (exact ground truth of the space behind it) at the
run's held-out cameras. On the object's pixels, the render with the object removed is compared
with that ground truth, beside the unedited render (which still shows the object); off the
object, the removed render is compared with the original images (the rest must stay intact).
"""

from __future__ import annotations

import math

import numpy as np

from n3f.errors import N3FError


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2)) if a.size else float("nan")
    return -10 * math.log10(max(mse, 1e-10)) if a.size else float("nan")


def removal_check(trainer, maps, object_name: str, frames: list[int] | None = None, progress=None) -> dict:
    """PSNR on the removed object's pixels (removed vs. truth-without-object, unedited vs. the same)
    and off them (removed vs. original images), over held-out frames showing the object.

    Raises:
        N3FError: not the demo scene, or no such object.
    """
    import cv2

    from n3f.pipeline.edit import query_edit
    from n3f.pipeline.evaluate import reference_patches
    from n3f.scene.images import load_frame_image, load_frame_mask
    from n3f.scene.synthetic import TabletopConfig, TabletopRenderer, orbit_cameras

    scene = trainer.scene
    generator = scene.metadata.get("generator") or {}
    if generator.get("name") != "tabletop":
        raise N3FError("the removal check needs the procedural demo scene (it re-renders it without the object)")
    objects = {o["name"]: o for o in scene.objects}
    if object_name not in objects:
        raise N3FError(f"no object {object_name!r}; the scene has {', '.join(objects)}")
    oid = objects[object_name]["id"]
    known = {k: v for k, v in generator.items() if k in TabletopConfig.__dataclass_fields__}
    known["exclude"] = (object_name,)
    config = TabletopConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in known.items()})
    renderer = TabletopRenderer(config)
    K, poses = orbit_cameras(config)
    field = query_edit(trainer, maps, reference_patches(scene, oid, 1)[0], "remove")
    held = frames if frames is not None else scene.split_indices("test") + scene.split_indices("val")
    rows = {"removed": [], "unedited": [], "rest": []}
    it = progress(held, "removal check", len(held)) if progress else held
    used = 0
    for i in it:
        frame = scene.frames[i]
        mask = load_frame_mask(frame) == oid
        if mask.sum() < 20:
            continue
        used += 1
        truth, _, _ = renderer.render(K, poses[frame.frame_id if frame.frame_id is not None else i])
        truth = truth.astype(np.float32) / 255
        if truth.shape[:2] != mask.shape:
            truth = cv2.resize(truth, (frame.width, frame.height), interpolation=cv2.INTER_AREA)
        removed = trainer.render_frame(frame, field=field)["rgb"].clamp(0, 1).numpy()
        plain = trainer.render_frame(frame)["rgb"].clamp(0, 1).numpy()
        original = load_frame_image(frame)
        rows["removed"].append(_psnr(removed[mask], truth[mask]))
        rows["unedited"].append(_psnr(plain[mask], truth[mask]))
        rows["rest"].append(_psnr(removed[~mask], original[~mask]))
    if not used:
        raise N3FError(f"{object_name} is not visible in the chosen frames")
    return {
        "object": object_name,
        "threshold": field.threshold,
        "frames": used,
        "psnr_object_pixels_removed_vs_truth": float(np.mean(rows["removed"])),
        "psnr_object_pixels_unedited_vs_truth": float(np.mean(rows["unedited"])),
        "psnr_other_pixels_removed_vs_images": float(np.mean(rows["rest"])),
    }
