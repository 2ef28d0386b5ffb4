"""Transfers rendered through the template: part labels, texture and template-coordinate maps.

Every transfer builds a :class:`~n3f.render.deform.DeformedField` whose deformation sends a point of
the target instance to the template (or on to a source instance) and renders it with
:func:`~n3f.render.render.render_rays`. Cameras look at the origin from a sphere; images are small.
"""

from __future__ import annotations

import math

import torch

from n3f.render.deform import DeformedField
from n3f.render.rays import pixel_grid, pixel_rays
from n3f.render.render import render_rays
from n3f.render.spaces import BoxSpace


def look_at_camera(
    azimuth: float, elevation: float, radius: float, size: int, fov_degrees: float = 40.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intrinsics (3, 3) and OpenCV camera-to-world (4, 4) of a ``size`` x ``size`` camera on a sphere
    of ``radius`` world units (angles in radians, y up) looking at the origin."""
    eye = torch.tensor(
        [radius * math.cos(elevation) * math.sin(azimuth), radius * math.sin(elevation), radius * math.cos(elevation) * math.cos(azimuth)]
    )
    forward = -eye / eye.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    focal = 0.5 * size / math.tan(math.radians(fov_degrees) / 2)
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    return K, c2w


def default_views(n: int) -> list[tuple[float, float]]:
    """``n`` (azimuth, elevation) pairs in radians around the object, a little from above."""
    return [(2 * math.pi * (k + 0.5) / n + 0.6, 0.45) for k in range(n)]


@torch.no_grad()
def render_image(
    field, aabb: torch.Tensor, view: tuple[float, float], size: int, step: float = 0.03, chunk: int = 4096
) -> dict[str, torch.Tensor]:
    """Render ``field`` from ``view`` (azimuth, elevation) at 3.2 world units.

    Returns:
        every composited channel as (size, size, C) plus ``opacity`` (size, size, 1).
    """
    K, c2w = look_at_camera(*view, radius=3.2, size=size)
    origins, dirs = pixel_rays(K, c2w, pixel_grid(size, size))
    space = BoxSpace(aabb)
    parts: dict[str, list] = {}
    for start in range(0, len(origins), chunk):
        out = render_rays(field, origins[start : start + chunk], dirs[start : start + chunk], space, None, step)
        for k, v in out.items():
            if v.dim() == 2:
                parts.setdefault(k, []).append(v)
    return {k: torch.cat(v).reshape(size, size, -1) for k, v in parts.items()}


def label_transfer_field(maps, template_field, latent: torch.Tensor, instance_field=None):
    """Template labels carried onto the instance ``latent`` through ``maps.to_template``.

    Args:
        maps: the correspondence; template_field: a field with ``sigma`` and a one-hot ``label``
            (N, n_parts) in the maps' template space; latent: (latent_dim,).
        instance_field: the instance itself (the generator's field of ``latent``). When given, the
            render has the instance's own geometry and every sample takes the label of its template
            point (CoordGAN's and the paper's label transfer: the instance is what the generator
            gives; only the labels travel). When None, the whole template is warped onto the
            instance, silhouette included (a harder test of the backward map).

    Returns:
        A field with ``sigma`` and ``label``.
    """
    warped = DeformedField(template_field, lambda p: maps.to_template(latent, p))
    if instance_field is None:
        return warped

    def field(points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sigma": instance_field(points, dirs)["sigma"], "label": warped(points, dirs)["label"]}

    return field


def texture_transfer_field(maps, source_field, source_latent: torch.Tensor, target_latent: torch.Tensor) -> DeformedField:
    """The source instance's field (rgb and all) carried onto the target instance's shape: a target
    point goes to the template and then to the source instance."""
    return DeformedField(source_field, lambda p: maps.from_template(source_latent, maps.to_template(target_latent, p)))


def coordinate_map_field(maps, instance_field, latent: torch.Tensor):
    """The instance field with an extra ``template_coords`` channel (N, 3): the template point of each
    sample under ``maps``. Its rendering is the CoordGAN-style correspondence map."""

    def field(points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(instance_field(points, dirs))
        out["template_coords"] = maps.to_template(latent, points)
        return out

    return field


def labels_from_render(out: dict[str, torch.Tensor], threshold: float = 0.5) -> torch.Tensor:
    """(H, W) int64 label image from a rendered one-hot ``label`` channel: argmax + 1 where the
    opacity exceeds ``threshold``, 0 (background) elsewhere."""
    return torch.where(
        out["opacity"][..., 0] > threshold, out["label"].argmax(-1) + 1, torch.zeros_like(out["opacity"][..., 0], dtype=torch.long)
    )
