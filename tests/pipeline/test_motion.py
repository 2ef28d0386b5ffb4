"""Moving pixels from multi-view colour consistency, against demo/kitchen_dynamic's exact masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from n3f.pipeline.motion import motion_scores, points_from_depth


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory):
    """A small demo/kitchen_dynamic and the same scene without the sponge and the hand (its exact
    depth is what a perfect static field would render)."""
    from n3f.scene.dynamic import KitchenDynamicConfig, render_kitchen_dynamic
    from n3f.scene.formats.native import read_native

    root = tmp_path_factory.mktemp("motion")
    options = dict(n_frames=48, width=64, height=48, supersample=1)
    scene = read_native(render_kitchen_dynamic(Path(root) / "scene", KitchenDynamicConfig(**options)))
    static = read_native(render_kitchen_dynamic(Path(root) / "static", KitchenDynamicConfig(**options, exclude=("sponge", "hand"))))
    return scene, static


def _inputs(scene, static, images_from):
    from n3f.scene.images import load_frame_depth, load_frame_image, load_frame_mask

    frames = scene.frames
    images = [load_frame_image(f) for f in images_from.frames]
    points = [points_from_depth(f, load_frame_depth(f)) for f in static.frames]
    masks = [load_frame_mask(f) for f in frames]
    return frames, images, points, masks


def test_points_from_depth_project_back_to_their_pixels(kitchen):
    from n3f.scene.images import load_frame_depth

    frame = kitchen[0].frames[5]
    depth = load_frame_depth(frame)
    points = points_from_depth(frame, depth)
    uv, z = frame.project(points.reshape(-1, 3))
    jj, ii = np.mgrid[0 : frame.height, 0 : frame.width]
    np.testing.assert_allclose(uv, np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1), atol=1e-6)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-5)


def test_the_moving_sponge_scores_above_the_static_scene(kitchen):
    from sklearn.metrics import roc_auc_score

    scene, static = kitchen
    frames, images, points, masks = _inputs(scene, static, scene)
    scores = motion_scores(frames, images, points, offsets=(-12, -8, -4, 4, 8, 12))
    s, m = np.concatenate([x.ravel() for x in scores]), np.concatenate([x.ravel() for x in masks])
    scored, hand, sponge = ~np.isnan(s), m == 9, m == 8
    assert scored[sponge].mean() > 0.5  # the table under the sponge is seen from the neighbours
    assert roc_auc_score(sponge[scored & ~hand], s[scored & ~hand]) > 0.9
    assert (s[scored & sponge] > 0.05).mean() > 0.5 and (s[scored & (m != 8) & ~hand] > 0.05).mean() < 0.05


def test_a_static_video_scores_low_everywhere(kitchen):
    """Without the sponge and the hand every point shows the same colour in its neighbours: the
    best-agreeing neighbour differs by little more than shading and resampling, except at a few
    edges (where a pixel straddles two surfaces at this 64x48 size)."""
    scene, static = kitchen
    frames, images, points, _ = _inputs(scene, static, static)
    s = np.concatenate([x.ravel() for x in motion_scores(frames, images, points, offsets=(-12, -8, -4, 4, 8, 12))])
    s = s[~np.isnan(s)]
    assert len(s) > 0.4 * sum(f.width * f.height for f in frames)
    assert np.median(s) < 0.01 and (s > 0.05).mean() < 0.05, np.quantile(s, [0.5, 0.9, 0.99])
