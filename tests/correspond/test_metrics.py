"""Metrics: the oracle is perfect, the template's parametrisation does not matter, a short fit helps."""

from __future__ import annotations

import torch

from n3f.correspond.families import create_family
from n3f.correspond.match import ComposedMaps, IdentityMaps
from n3f.correspond.metrics import learned_template_field, score_feature_nn, score_maps
from n3f.correspond.train import CorrespondConfig, CorrespondTrainer
from n3f.render.deform import DeformedField


def test_oracle_scores_100_percent(family, small_eval_set):
    row = score_maps(family, family, family.template_field(), small_eval_set)
    assert row["pck@0.05"] == 1.0 and row["pck@0.1"] == 1.0 and row["pck@0.05_template_nn"] == 1.0
    assert row["miou"] == 1.0 and row["miou_masked"] == 1.0
    assert row["miou_warped"] == 1.0 and row["miou_warped_masked"] == 1.0
    assert row["cycle_error"] < 1e-5


def test_identity_and_feature_nn_are_imperfect(family, small_eval_set):
    identity = score_maps(family, IdentityMaps(), learned_template_field(family), small_eval_set)
    assert identity["pck@0.05"] < 0.6 and identity["miou"] < 0.95 and identity["miou_warped"] < 0.95
    nn = score_feature_nn(family, small_eval_set)
    assert 0 < nn["pck@0.1"] < 1.0 and 0 < nn["miou_masked"] < 1.0


def _trained(steps: int):
    trainer = CorrespondTrainer(CorrespondConfig(steps=steps, batch=2, points=192, seed=0), create_family("chairs"))
    for _ in range(steps):
        trainer.train_step()
    return trainer.model


def test_template_bijection_leaves_every_metric_unchanged(family, small_eval_set):
    """Re-parametrise the learned template by a smooth non-linear bijection phi (one instance's exact map)."""
    model = _trained(30)
    z = family.sample_latents(1, generator=torch.Generator().manual_seed(5))[0]
    phi, phi_inverse = (lambda p: family.from_template(z, p)), (lambda p: family.to_template(z, p))
    template = learned_template_field(family)
    base = score_maps(family, model, template, small_eval_set)
    moved = score_maps(family, ComposedMaps(model, phi, phi_inverse), DeformedField(template, phi_inverse), small_eval_set)
    for key in ("pck@0.05", "pck@0.1", "miou", "miou_masked", "miou_warped", "miou_warped_masked", "cycle_error"):
        assert abs(base[key] - moved[key]) < 2e-3, (key, base[key], moved[key])
    # nearest neighbours in template space are invariant to isometries of it
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(6)))[0]
    rigid = score_maps(
        family, ComposedMaps(model, lambda p: p @ R.T + 0.3, lambda p: (p - 0.3) @ R), template, small_eval_set, labels=False
    )
    assert abs(rigid["pck@0.1_template_nn"] - base["pck@0.1_template_nn"]) < 1e-6


def test_short_fit_beats_identity(family, small_eval_set):
    model = _trained(150)
    learned = score_maps(family, model, learned_template_field(family), small_eval_set, labels=False)
    identity = score_maps(family, IdentityMaps(), learned_template_field(family), small_eval_set, labels=False)
    assert learned["pck@0.05"] > identity["pck@0.05"] + 0.05
