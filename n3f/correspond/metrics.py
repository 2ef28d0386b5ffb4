"""Scores of a correspondence on a procedural family, where every true map is known.

- PCK@a: share of transferred keypoints within ``a`` x the bounding-box diagonal of the target
  instance (its surface points) from the true location; keypoints are surface points of the source,
  made by mapping the same template surface points into each instance.
- mIoU of part labels transferred from the template onto held-out instances and rendered: unmasked
  (background is a class and the transferred silhouette counts) and masked (CoordGAN's convention:
  only pixels of the true foreground, part classes only).
- cycle error: ``|from(z, to(z, x)) - x|`` / diagonal, averaged over the keypoints.

Methods: any correspondence (``learned``, ``identity``, ``oracle``), scored by :func:`score_maps`, and
raw generator-feature nearest neighbour (``feature_nn``), scored by :func:`score_feature_nn`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from n3f.correspond.match import match_features_nearest, match_points, match_points_nearest
from n3f.correspond.transfer import default_views, label_transfer_field, labels_from_render, render_image


@dataclass
class EvalSet:
    """Held-out instances and the exact ground truth for them (built by :func:`make_eval_set`)."""

    latents: torch.Tensor  # (n_instances, latent_dim)
    pairs: list[tuple[int, int]]
    keypoints: torch.Tensor  # (n_instances, K, 3): the same template surface points in each instance
    candidates: torch.Tensor  # (n_instances, M, 3): dense surface points of each instance
    diagonals: torch.Tensor  # (n_instances,) bounding-box diagonal, world units
    label_images: list[torch.Tensor]  # (size, size) int64 true labels (0 background), per instance and view
    views: list[tuple[float, float]]
    size: int


@torch.no_grad()
def make_eval_set(family, n_instances: int = 8, n_keypoints: int = 200, n_views: int = 2, size: int = 48, seed: int = 12345) -> EvalSet:
    """Draw ``n_instances`` held-out latents (seed distinct from training) and their truth.

    Pairs are consecutive instances (0->1, 1->2, ..., last->0); label images are the instances'
    rendered true part labels from ``n_views`` views of ``size`` x ``size`` pixels.
    """
    g = torch.Generator().manual_seed(seed)
    latents = family.sample_latents(n_instances, generator=g)
    template_keypoints = family.template_surface_points(n_keypoints, generator=g)
    template_candidates = family.template_surface_points(2000, generator=g)
    keypoints = torch.stack([family.from_template(z, template_keypoints) for z in latents])
    candidates = torch.stack([family.from_template(z, template_candidates) for z in latents])
    diagonals = (candidates.amax(1) - candidates.amin(1)).norm(dim=-1)
    views = default_views(n_views)
    label_images = [labels_from_render(render_image(family.field(z, labels=True), family.aabb, v, size)) for z in latents for v in views]
    pairs = [(i, (i + 1) % n_instances) for i in range(n_instances)]
    return EvalSet(latents, pairs, keypoints, candidates, diagonals, label_images, views, size)


def pck(predicted: torch.Tensor, truth: torch.Tensor, diagonal: float, alpha: float) -> float:
    """Share of predicted points (N, 3) within ``alpha * diagonal`` of the truth (N, 3)."""
    return float(((predicted - truth).norm(dim=-1) < alpha * diagonal).float().mean())


def mean_iou(predicted: list[torch.Tensor], truth: list[torch.Tensor], n_classes: int, masked: bool) -> float:
    """Mean IoU over classes present in either, from label images (H, W) int64 with 0 = background.

    ``masked``: only pixels with true label > 0 count and class 0 is left out (CoordGAN's convention).
    """
    p = torch.cat([x.reshape(-1) for x in predicted])
    t = torch.cat([x.reshape(-1) for x in truth])
    if masked:
        keep = t > 0
        p, t = p[keep], t[keep]
    ious = []
    for c in range(1 if masked else 0, n_classes):
        union = ((p == c) | (t == c)).sum()
        if union > 0:
            ious.append(float(((p == c) & (t == c)).sum() / union))
    return sum(ious) / max(len(ious), 1)


def _pck_rows(predictions: list[torch.Tensor], data: EvalSet, prefix: str = "") -> dict[str, float]:
    rows = {}
    for alpha in (0.05, 0.1):
        scores = [pck(pred, data.keypoints[b], float(data.diagonals[b]), alpha) for pred, (_, b) in zip(predictions, data.pairs)]
        rows[f"pck@{alpha}{prefix}"] = sum(scores) / len(scores)
    return rows


@torch.no_grad()
def score_maps(family, maps, template_field, data: EvalSet, step: float = 0.03, labels: bool = True) -> dict[str, float]:
    """All metrics of one correspondence.

    Args:
        family: the procedural generator the set was drawn from.
        maps: the correspondence (``to_template``/``from_template``).
        template_field: the labelled template in the maps' template space (``sigma``, one-hot ``label``).
        step: marching step of the label renders (world units); labels: False skips the label renders.

    Returns:
        ``pck@0.05``, ``pck@0.1`` (direct mapping), ``pck@0.05_template_nn``, ``pck@0.1_template_nn``
        (nearest surface point of B in template space), ``miou``, ``miou_masked`` (template labels on
        the instance's own geometry), ``miou_warped``, ``miou_warped_masked`` (the template warped
        onto the instance, silhouette included), ``cycle_error``
        (fraction of the diagonal) and ``confidence_error_correlation`` (Pearson correlation of the
        cycle-error confidence with the transfer error).
    """
    direct, nearest, errors, confidences = [], [], [], []
    for a, b in data.pairs:
        pred, confidence = match_points(maps, data.latents[a], data.latents[b], data.keypoints[a])
        direct.append(pred)
        nearest.append(match_points_nearest(maps, data.latents[a], data.latents[b], data.keypoints[a], data.candidates[b])[0])
        errors.append((pred - data.keypoints[b]).norm(dim=-1))
        confidences.append(confidence)
    row = {**_pck_rows(direct, data), **_pck_rows(nearest, data, "_template_nn")}
    e, c = torch.cat(errors), torch.cat(confidences)
    row["confidence_error_correlation"] = float(torch.corrcoef(torch.stack([e, c]))[0, 1]) if c.std() > 0 and e.std() > 0 else 0.0
    cycles = [
        float((maps.from_template(z, maps.to_template(z, k)) - k).norm(dim=-1).mean() / d)
        for z, k, d in zip(data.latents, data.keypoints, data.diagonals)
    ]
    row["cycle_error"] = sum(cycles) / len(cycles)
    if not labels:
        return row
    for suffix, on_instance in (("", True), ("_warped", False)):
        predicted = [
            labels_from_render(
                render_image(
                    label_transfer_field(maps, template_field, z, family.field(z) if on_instance else None), family.aabb, v, data.size, step
                )
            )
            for z in data.latents
            for v in data.views
        ]
        row[f"miou{suffix}"] = mean_iou(predicted, data.label_images, family.n_parts + 1, masked=False)
        row[f"miou{suffix}_masked"] = mean_iou(predicted, data.label_images, family.n_parts + 1, masked=True)
    return row


@torch.no_grad()
def score_feature_nn(family, data: EvalSet, step: float = 0.03) -> dict[str, float]:
    """Metrics of raw generator-feature nearest neighbour.

    Keypoints go to the surface point of B with the nearest feature; cycle error is A -> B -> A;
    labels: each truly-foreground pixel of an instance's rendered feature map takes the part label of
    the mean-latent template's surface point with the nearest feature (so the silhouette is the true one).
    """
    z0 = family.template_latent()
    feats = [family.field(z)(k, k)["feature"] for z, k in zip(data.latents, data.keypoints)]
    cand_feats = [family.field(z)(c, c)["feature"] for z, c in zip(data.latents, data.candidates)]
    direct, cycles = [], []
    for a, b in data.pairs:
        pred = match_features_nearest(feats[a], cand_feats[b], data.candidates[b])
        direct.append(pred)
        back = match_features_nearest(family.field(data.latents[b])(pred, pred)["feature"], cand_feats[a], data.candidates[a])
        cycles.append(float((back - data.keypoints[a]).norm(dim=-1).mean() / data.diagonals[a]))
    row = _pck_rows(direct, data)
    row["cycle_error"] = sum(cycles) / len(cycles)
    template_points = family.surface_points(z0, 4000, generator=torch.Generator().manual_seed(7))
    template_feats = family.field(z0)(template_points, template_points)["feature"]
    template_labels = family.part_labels(family.to_template(z0, template_points)) + 1
    predicted, i = [], 0
    for z in data.latents:
        for v in data.views:
            out = render_image(family.field(z), family.aabb, v, data.size, step)
            truth = data.label_images[i]
            i += 1
            nearest = torch.cdist(out["feature"].reshape(-1, family.feature_dim), template_feats).argmin(1)
            predicted.append(torch.where(truth > 0, template_labels[nearest].reshape(truth.shape), torch.zeros_like(truth)))
    row["miou"] = mean_iou(predicted, data.label_images, family.n_parts + 1, masked=False)
    row["miou_masked"] = mean_iou(predicted, data.label_images, family.n_parts + 1, masked=True)
    return row


def learned_template_field(family):
    """The learned template with labels: the mean-latent instance, labelled once by its true parts."""
    return family.field(family.template_latent(), labels=True)


def invert_eval_set(family, data: EvalSet, n_views: int = 3, size: int = 24, iterations: int = 100) -> torch.Tensor:
    """(n_instances, latent_dim) latents recovered from ``n_views`` rendered views of each held-out
    instance (see :func:`~n3f.correspond.invert.invert_latent`)."""
    from n3f.correspond.invert import invert_latent, render_targets, view_rays
    from n3f.correspond.transfer import default_views

    origins, dirs = view_rays([(a + 0.3, e) for a, e in default_views(n_views)], size)  # not the label views
    return torch.stack([invert_latent(family, render_targets(family, z, origins, dirs), origins, dirs, iterations) for z in data.latents])


@torch.no_grad()
def evaluate_all(family, model, data: EvalSet, invert: bool = False, progress=None) -> dict[str, dict[str, float]]:
    """``{"learned", "identity", "feature_nn", "oracle"}`` -> metrics (see :func:`score_maps`); with
    ``invert`` also ``learned_inverted`` and ``oracle_inverted``: the same maps driven by latents
    recovered from rendered views instead of the true ones (scored against the true maps).
    ``progress``: an optional ``track(iterable, description, total)`` (see :mod:`n3f.progress`)."""
    import dataclasses

    from n3f.correspond.match import IdentityMaps

    template = learned_template_field(family)
    stages = {
        "learned": lambda: score_maps(family, model, template, data),
        "identity": lambda: score_maps(family, IdentityMaps(), template, data),
        "feature_nn": lambda: score_feature_nn(family, data),
        "oracle": lambda: score_maps(family, family, family.template_field(), data),
    }
    if invert:
        inverted: list[EvalSet] = []

        def invert_then_score() -> dict[str, float]:
            with torch.enable_grad():
                inverted.append(dataclasses.replace(data, latents=invert_eval_set(family, data)))
            return score_maps(family, model, template, inverted[0])

        stages["learned_inverted"] = invert_then_score
        stages["oracle_inverted"] = lambda: score_maps(family, family, family.template_field(), inverted[0])
    names = list(stages)
    if progress is not None:
        names = progress(names, "correspond eval", len(names))
    return {name: stages[name]() for name in names}
