"""Training pixels drawn where the colour error is high: instant-ngp's error map.

Uniform pixel sampling spends a fit's rays where the scene is already right. instant-ngp keeps a
coarse map of each training image's recent error and draws training pixels in proportion to it.
Here a share of each step's rays (``FitConfig.error_sampling``) comes from such a map and the rest
stay uniform, so every pixel keeps a floor of attention.

The map holds one value per ``tile`` x ``tile`` pixel block of every training frame: the running
mean squared colour error (mean over RGB, 0-1 units) of the rays drawn there, updated after every
step as ``e <- (1 - rate) e + rate r``. Tiles start at ``initial``, above any colour error a
sigmoid head makes at the start of a fit, so tiles not yet visited keep being drawn. It is a module
with one buffer, kept on the CPU beside the random generator that draws from it, so checkpoints
carry it and a resumed fit draws the same pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ErrorMap(nn.Module):
    """Per-tile running colour error of the training frames, and pixel draws in proportion to it.

    Args:
        n_frames: training frames (rows of the training data).
        height, width: frame size in pixels (every training frame has it).
        tile: tile side in pixels.
        rate: weight of a new residual in a tile's running error.
        initial: starting error of every tile.
    """

    def __init__(self, n_frames: int, height: int, width: int, tile: int = 8, rate: float = 0.5, initial: float = 0.25):
        super().__init__()
        if tile < 1 or not 0 < rate <= 1:
            raise ValueError(f"error map needs tile >= 1 and 0 < rate <= 1 (got tile {tile}, rate {rate})")
        self.height, self.width, self.tile, self.rate = int(height), int(width), int(tile), float(rate)
        self.register_buffer("error", torch.full((n_frames, math.ceil(height / tile), math.ceil(width / tile)), float(initial)))

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``n`` pixels, each tile with probability proportional to its error and the pixel
        uniform inside the tile (see :func:`draw_in_tiles`).

        Returns:
            frame (n,) training-frame rows, px (n,) columns, py (n,) rows (int64 pixel indices).
        """
        return draw_in_tiles(self.error.clamp_min(1e-12), self.tile, self.height, self.width, n, generator)

    @torch.no_grad()
    def update(self, frame: torch.Tensor, px: torch.Tensor, py: torch.Tensor, residual: torch.Tensor) -> None:
        """Fold the (n,) squared colour errors of the rays at ``frame``, ``px``, ``py`` (n,) into
        their tiles' running error. Several rays in one tile count as their mean."""
        _, th, tw = self.error.shape
        flat = (frame * th + py // self.tile) * tw + px // self.tile
        total = torch.zeros(self.error.numel()).index_add_(0, flat, residual.float().cpu())
        count = torch.zeros(self.error.numel()).index_add_(0, flat, torch.ones(len(flat)))
        seen = count > 0
        error = self.error.view(-1)
        error[seen] = (1 - self.rate) * error[seen] + self.rate * total[seen] / count[seen]


def draw_in_tiles(
    weights: torch.Tensor, tile: int, height: int, width: int, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` pixels of a stack of frames: a tile with probability proportional to its weight,
    then a pixel uniformly inside it (tiles at the right and bottom edges are cut by the frame).

    Args:
        weights: (n_frames, ceil(height / tile), ceil(width / tile)) non-negative tile weights
            (CPU), not all zero.
        tile: tile side in pixels; height, width: frame size in pixels.
        n: pixels to draw (with replacement); generator: the CPU generator drawing them.

    Returns:
        frame (n,) frame rows, px (n,) columns, py (n,) rows (int64 pixel indices).
    """
    _, th, tw = weights.shape
    flat = torch.multinomial(weights.reshape(-1).float(), n, replacement=True, generator=generator)
    frame, rest = flat // (th * tw), flat % (th * tw)
    ty, tx = rest // tw, rest % tw
    x0, y0 = tx * tile, ty * tile
    w = (width - x0).clamp(max=tile)
    h = (height - y0).clamp(max=tile)
    u = torch.rand(2, n, generator=generator)
    px = x0 + (u[0] * w).long().clamp(max=w - 1)
    py = y0 + (u[1] * h).long().clamp(max=h - 1)
    return frame, px, py
