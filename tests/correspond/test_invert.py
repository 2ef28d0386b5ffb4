"""Latent inversion through the renderer brings an unseen instance's recovered shape close to the truth."""

from __future__ import annotations

import torch

from n3f.correspond.invert import invert_latent, render_targets, view_rays
from n3f.correspond.transfer import default_views


def test_inversion_recovers_the_shape(family):
    z = family.sample_latents(1, generator=torch.Generator().manual_seed(4242))[0]
    origins, dirs = view_rays(default_views(3), 20)
    recovered = invert_latent(family, render_targets(family, z, origins, dirs), origins, dirs, iterations=30)
    keypoints = family.template_surface_points(200, generator=torch.Generator().manual_seed(1))
    error = (family.from_template(recovered, keypoints) - family.from_template(z, keypoints)).norm(dim=-1).mean()
    start = (family.from_template(family.template_latent(), keypoints) - family.from_template(z, keypoints)).norm(dim=-1).mean()
    assert error < 0.5 * start
