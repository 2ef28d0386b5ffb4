"""Similarity alignment of two point sets (Umeyama), e.g. recovered camera centres onto known ones.

Structure from motion recovers cameras only up to a similarity (rotation, translation, uniform
scale). To compare its result with another pose source, align one set of camera centres onto the
other with the least-squares similarity and measure what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """The map ``x -> scale * R @ x + t``.

    Attributes:
        scale: uniform scale factor (> 0).
        R: (3, 3) rotation (det +1).
        t: (3,) translation, in the target's units.
    """

    scale: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) points; returns (N, 3)."""
        return self.scale * np.asarray(points, dtype=np.float64).reshape(-1, 3) @ self.R.T + self.t


def umeyama(source: np.ndarray, target: np.ndarray) -> Similarity:
    """Least-squares similarity taking ``source`` onto ``target`` (Umeyama 1991, with scale).

    Args:
        source: (N, 3) points, N >= 3 and not all collinear.
        target: (N, 3) corresponding points.

    Returns:
        The :class:`Similarity` minimising ``sum |scale * R @ source_i + t - target_i|^2``.

    Example:
        >>> s = umeyama(sfm_centres, true_centres)
        >>> rms = np.sqrt(((s.apply(sfm_centres) - true_centres) ** 2).sum(1).mean())
    """
    src = np.asarray(source, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(target, dtype=np.float64).reshape(-1, 3)
    if len(src) != len(dst) or len(src) < 3:
        raise ValueError(f"need >= 3 corresponding points, got {len(src)} and {len(dst)}")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    U, S, Vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0  # a reflection is not a rotation
    R = U @ D @ Vt
    variance = (src_c**2).sum(axis=1).mean()
    scale = float(np.trace(np.diag(S) @ D) / variance) if variance > 0 else 1.0
    return Similarity(scale, R, mu_dst - scale * R @ mu_src)


def aligned_rms(source: np.ndarray, target: np.ndarray) -> tuple[float, Similarity]:
    """RMS distance between ``target`` and ``source`` after the best similarity alignment.

    Args:
        source: (N, 3) points (e.g. camera centres from structure from motion).
        target: (N, 3) corresponding reference points.

    Returns:
        (rms in the target's units, the similarity used).
    """
    sim = umeyama(source, target)
    residual = sim.apply(source) - np.asarray(target, dtype=np.float64).reshape(-1, 3)
    return float(np.sqrt((residual**2).sum(axis=1).mean())), sim
