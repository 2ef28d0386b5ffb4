"""Teacher features are sampled at pixels through the cache's cell geometry, bilinearly."""

from __future__ import annotations

import torch

from n3f.pipeline.fit import sample_features


def test_bilinear_sampling_is_exact_on_a_linear_map():
    h, w = 6, 8
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    feats = torch.stack([xs, ys], -1)[None]  # channel 0 = cell column, 1 = cell row
    geometry = {"offset_x": 4.0, "offset_y": 4.0, "step_x": 8.0, "step_y": 8.0}  # stride-8 cells
    xy = torch.tensor([[4.0, 4.0], [12.0, 4.0], [8.0, 16.0], [55.9, 43.0], [100.0, -5.0]])
    out = sample_features(feats, torch.zeros(len(xy), dtype=torch.long), xy, geometry)
    expected = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.5], [(55.9 - 4) / 8, (43 - 4) / 8], [7.0, 0.0]])  # last: clamped
    torch.testing.assert_close(out, expected)
