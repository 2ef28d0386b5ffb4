"""The error map: pixels drawn in proportion to the tiles' running colour error, inside the frame,
updated from the rays' residuals, carried through checkpoints so a resumed fit is exact."""

from __future__ import annotations

import json

import pytest
import torch

from n3f.errors import N3FError
from n3f.pipeline import fit as fit_module
from n3f.pipeline.error_map import ErrorMap
from n3f.pipeline.fit import FitConfig, fit, latest_checkpoint


def test_draws_land_in_the_tiles_in_proportion_to_their_error():
    m = ErrorMap(2, height=20, width=30, tile=8)  # 3 x 4 tiles; the last row and column are cut to 4 and 6 pixels
    assert m.error.shape == (2, 3, 4)
    m.error.zero_()
    m.error[1, 2, 3] = 3.0  # the bottom-right tile: pixels x 24..29, y 16..19
    m.error[0, 0, 1] = 1.0  # pixels x 8..15, y 0..7
    g = torch.Generator().manual_seed(0)
    frame, px, py = m.draw(40_000, g)
    corner = frame == 1
    assert set(frame.tolist()) == {0, 1}
    assert corner.float().mean().item() == pytest.approx(0.75, abs=0.01)  # 3 : 1, binomial sd 0.002
    assert set(px[corner].tolist()) == set(range(24, 30)) and set(py[corner].tolist()) == set(range(16, 20))
    assert set(px[~corner].tolist()) == set(range(8, 16)) and set(py[~corner].tolist()) == set(range(0, 8))
    # uniform inside the tile: each of the 6 x 4 pixels gets 1/24 of the corner's draws
    counts = torch.bincount((py[corner] - 16) * 6 + (px[corner] - 24), minlength=24).float()
    assert (counts / counts.sum() - 1 / 24).abs().max() < 0.01


def test_update_moves_the_visited_tiles_towards_the_mean_residual_only():
    m = ErrorMap(1, height=16, width=16, tile=8, rate=0.5, initial=0.2)
    frame = torch.tensor([0, 0, 0])
    px, py = torch.tensor([1, 7, 9]), torch.tensor([2, 3, 12])  # two rays in tile (0, 0), one in tile (1, 1)
    m.update(frame, px, py, torch.tensor([0.1, 0.5, 0.6]))
    expected = torch.tensor([[0.5 * 0.2 + 0.5 * 0.3, 0.2], [0.2, 0.5 * 0.2 + 0.5 * 0.6]])
    assert torch.allclose(m.error[0], expected)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="tile"):
        ErrorMap(1, 8, 8, tile=0)


def _config(**kw):
    base = dict(
        scene="demo/tabletop",
        downscale=4,
        steps=30,
        target_samples=8192,
        eval_every=0,
        checkpoint_every=10,
        grid_resolution=48,
        grid_warmup=16,
        seed=5,
        error_sampling=0.5,
    )
    base.update(kw)
    return FitConfig(**base)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_fit_drawing_from_the_error_map_resumes_exactly(demo_dir, tmp_path, monkeypatch):
    whole = fit(_config(), output=tmp_path / "whole", quiet=True)
    state = torch.load(latest_checkpoint(whole), weights_only=False)
    error = state["error_map"]["error"]
    assert error.shape[1:] == (6, 8)  # 48 x 64 pixels in 8-pixel tiles
    assert (error < 0.25).float().mean() > 0.2  # visited tiles fell from the starting 0.25 towards the fit's error

    original = fit_module.Trainer.train_step

    def crash_at_17(self):
        if self.step == 17:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(fit_module.Trainer, "train_step", crash_at_17)
    with pytest.raises(KeyboardInterrupt):
        fit(_config(), output=tmp_path / "cut", quiet=True)
    monkeypatch.setattr(fit_module.Trainer, "train_step", original)
    run = next((tmp_path / "cut").glob("*/*/*"))
    assert latest_checkpoint(run).name == "step-0000010.pt"
    fit(_config(), resume=run, quiet=True)
    assert _metrics(run) == _metrics(whole)
    resumed = torch.load(latest_checkpoint(run), weights_only=False)
    assert torch.equal(resumed["error_map"]["error"], error)
    assert all(torch.equal(resumed["model"][k], state["model"][k]) for k in state["model"])


def test_error_sampling_must_be_a_share(demo_dir, tmp_path):
    with pytest.raises(N3FError, match="between 0 and 1"):
        fit(_config(error_sampling=1.5), output=tmp_path, quiet=True)
