"""Pictures of rendered channels: depth colour maps and features as RGB."""

from __future__ import annotations

import numpy as np


def depth_to_rgb(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 RGB with the turbo colour map (near = red, far = blue).

    The range defaults to the 2nd-98th percentiles of the finite depths.
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    finite = np.isfinite(d)
    if lo is None or hi is None:
        vals = d[finite] if finite.any() else np.zeros(1)
        lo, hi = np.percentile(vals, 2), np.percentile(vals, 98)
    u = 1.0 - np.clip((np.where(finite, d, hi) - lo) / max(hi - lo, 1e-6), 0, 1)
    bgr = cv2.applyColorMap((u * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return bgr[:, :, ::-1].copy()


def pca_basis(features: np.ndarray) -> np.ndarray:
    """(3, D) top three principal directions of (..., D) features (fitted on at most ~4k of them)."""
    x = np.asarray(features, dtype=np.float32).reshape(-1, np.shape(features)[-1])
    x = x[:: max(1, len(x) // 4096)]
    return np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:3]


def features_to_rgb(features: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """(H, W, D) features -> (H, W, 3) uint8: the first three principal components as RGB.

    Args:
        basis: optional (3, D) projection to use (so several images share one colouring); by
            default the image's own top three principal directions.
    """
    f = np.asarray(features, dtype=np.float32)
    H, W, D = f.shape
    x = f.reshape(-1, D)
    x = x - x.mean(0)
    if basis is None:
        basis = pca_basis(f)
    p = x @ basis.T
    lo, hi = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)
    rgb = np.clip((p - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    return (rgb.reshape(H, W, 3) * 255 + 0.5).astype(np.uint8)
