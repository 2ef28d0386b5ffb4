"""Scene editing with feature queries (N3F's object removal and recolouring).

The edited field is the student with a selection: every sample whose feature's cosine similarity
to the query exceeds a threshold belongs to the object. ``remove`` zeroes the selection's density
(the renderer then sees through to what lies behind it); ``recolour`` replaces its colour. The
threshold defaults to the upper multi-Otsu cut (object_threshold) of the similarities of the scene's point cloud, as in export.
"""

from __future__ import annotations

import numpy as np
import torch

from n3f.errors import N3FError

MODES = ("remove", "recolour")


def parse_colour(text: str) -> tuple[float, float, float]:
    """``"R,G,B"`` (0-255) or ``"#rrggbb"`` -> RGB in [0, 1].

    Raises:
        N3FError: anything else.
    """
    t = text.strip()
    try:
        if t.startswith("#") and len(t) == 7:
            rgb = [int(t[k : k + 2], 16) for k in (1, 3, 5)]
        else:
            rgb = [int(v) for v in t.split(",")]
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError
    except ValueError:
        raise N3FError(f"--recolour takes R,G,B (0-255) or #rrggbb, got {text!r}") from None
    return tuple(v / 255 for v in rgb)


class EditedField:
    """A student field with the samples similar to a query removed or recoloured.

    Args:
        model: the StudentField; vector: (D,) unit query vector; threshold: cosine similarity above
            which a sample is selected; mode: ``remove`` or ``recolour``; colour: RGB in [0, 1].
    """

    def __init__(self, model, vector: np.ndarray, threshold: float, mode: str = "remove", colour=(1.0, 0.0, 1.0)):
        if mode not in MODES:
            raise N3FError(f"unknown edit {mode!r}; use remove or recolour")
        p = next(model.parameters())
        self.model, self.mode, self.threshold = model, mode, float(threshold)
        self.vector = torch.as_tensor(np.asarray(vector, np.float32), device=p.device)
        self.colour = torch.tensor(colour, dtype=torch.float32, device=p.device)

    def _selected(self, feature: torch.Tensor) -> torch.Tensor:
        f = feature / feature.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return (f @ self.vector) > self.threshold

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) densities after the edit."""
        sigma, code = self.model._geometry(points)
        if self.mode == "remove":
            sigma = torch.where(self._selected(self.model.feature_head(code)), torch.zeros_like(sigma), sigma)
        return sigma

    def __call__(self, points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(points, dirs, features=True)
        chosen = self._selected(out["feature"])
        if self.mode == "remove":
            out["sigma"] = torch.where(chosen, torch.zeros_like(out["sigma"]), out["sigma"])
        else:
            out["rgb"] = torch.where(chosen[:, None], self.colour.expand_as(out["rgb"]), out["rgb"])
        return out


def query_edit(trainer, maps, patch, mode: str, colour=(1.0, 0.0, 1.0), threshold: float | None = None) -> EditedField:
    """The edit of the object a patch shows: the student's query vector over the patch, and (by
    default) the upper multi-Otsu cut (:func:`~n3f.pipeline.pointcloud.object_threshold`) of the similarities of the scene's point cloud.

    Args:
        trainer: a loaded run; maps: its StudentMaps; patch: a :class:`n3f.pipeline.query.Patch`.
    """
    from n3f.pipeline.pointcloud import object_threshold, scene_points
    from n3f.pipeline.query import QueryEngine
    from n3f.pipeline.query_report import point_similarity

    vector = QueryEngine(trainer, maps).vector(patch, "student")
    if threshold is None:
        threshold = object_threshold(point_similarity(scene_points(trainer.scene, maps), vector))
    return EditedField(trainer.model, vector, threshold, mode, colour)
