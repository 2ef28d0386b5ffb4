"""The error map: pixels drawn in proportion to the tiles' running colour error, inside the frame,
and updated from the rays' residuals (a fit that draws from it resumes exactly: tests/pipeline/test_fit.py)."""

from __future__ import annotations

import pytest
import torch

from n3f.pipeline.error_map import ErrorMap


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
