"""View consistency of features: do two pixels that see the same surface point get the same feature?

Pairs come from exact ground-truth depth (scenes with ``depth/``, such as the demo): pixels of
frame A are back-projected with A's depth, projected into frame B, and kept where B's own depth
agrees (the point is visible in B, not occluded). For each pair we compare the teacher's cached
features (bilinearly sampled at both pixels) and the student's rendered features, by cosine.
"""

from __future__ import annotations

import numpy as np
import torch

from n3f.scene.images import load_frame_depth


def surface_pairs(frame_a, frame_b, stride: int = 4, tolerance: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Pixel pairs (xy_a (N, 2), xy_b (N, 2)) seeing the same surface point in two frames.

    Args:
        stride: pixel grid spacing in frame A.
        tolerance: relative depth agreement required in B (occlusion test).
    """
    depth_a, depth_b = load_frame_depth(frame_a), load_frame_depth(frame_b)
    if depth_a is None or depth_b is None:
        raise ValueError("surface pairs need ground-truth depth maps")
    jj, ii = np.mgrid[stride // 2 : frame_a.height : stride, stride // 2 : frame_a.width : stride]
    xy_a = np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1)
    world = frame_a.unproject(xy_a, depth_a[jj.ravel(), ii.ravel()])
    xy_b, z = frame_b.project(world)
    inside = (xy_b[:, 0] >= 0) & (xy_b[:, 0] < frame_b.width) & (xy_b[:, 1] >= 0) & (xy_b[:, 1] < frame_b.height) & (z > 0)
    u = np.clip(xy_b[:, 0].astype(int), 0, frame_b.width - 1)
    v = np.clip(xy_b[:, 1].astype(int), 0, frame_b.height - 1)
    visible = inside & (np.abs(depth_b[v, u] - z) < tolerance * z)
    return xy_a[visible], xy_b[visible]


def view_consistency(trainer, pairs_of_frames: list[tuple[int, int]], stride: int = 4) -> dict:
    """Mean cosine similarity of teacher and student features over surface pairs.

    Args:
        trainer: a loaded run (:func:`n3f.pipeline.fit.load_run`).
        pairs_of_frames: (index A, index B) frame pairs of the scene.

    Returns:
        ``{"teacher": mean cosine, "student": mean cosine, "pairs": number of pixel pairs}``.
    """
    from n3f.pipeline.fit import sample_features
    from n3f.render.rays import pixel_rays
    from n3f.render.render import render_rays

    feats = trainer.cache.features()
    teacher_cos, student_cos = [], []
    for a, b in pairs_of_frames:
        fa, fb = trainer.scene.frames[a], trainer.scene.frames[b]
        xy_a, xy_b = surface_pairs(fa, fb, stride)
        if len(xy_a) == 0:
            continue
        sides = []
        for idx, frame, xy in ((a, fa, xy_a), (b, fb, xy_b)):
            xy_t = torch.tensor(xy, dtype=torch.float32)
            teacher = sample_features(
                torch.from_numpy(np.asarray(feats[idx], dtype=np.float32))[None],
                torch.zeros(len(xy), dtype=torch.long),
                xy_t,
                trainer.data.geometry,
            )
            o, d = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy_t)
            with torch.no_grad():
                student = render_rays(
                    trainer.field_fn(True),
                    o,
                    d,
                    trainer.space,
                    trainer.grid,
                    trainer.step_size,
                    density_fn=trainer.model.density,
                    near=trainer.static_near,
                    decoders=trainer.model.render_decoders(),
                )["feature"]
            sides.append((teacher, student))
        (ta, sa), (tb, sb) = sides
        teacher_cos.append(torch.nn.functional.cosine_similarity(ta, tb, dim=-1))
        student_cos.append(torch.nn.functional.cosine_similarity(sa, sb, dim=-1))
    t, s = torch.cat(teacher_cos), torch.cat(student_cos)
    return {"teacher": float(t.mean()), "student": float(s.mean()), "pairs": len(t)}
