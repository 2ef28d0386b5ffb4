"""Normalisation, downscaling and splits."""

from __future__ import annotations

import numpy as np

from n3f.scene.normalise import downscale_scene, holdout_every, normalise_scene


def test_normalised_demo_fits_unit_box(demo_scene):
    centres = np.stack([f.camera_centre for f in demo_scene.frames])
    assert np.abs(centres).max() <= 1 + 1e-9
    assert np.all(demo_scene.aabb[0] >= -1) and np.all(demo_scene.aabb[1] <= 1)
    # one axis of the cameras-and-content box touches +-1 exactly
    assert np.isclose(max(np.abs(centres).max(), np.abs(demo_scene.aabb).max()), 1.0)


def test_normalisation_is_a_similarity_that_preserves_projection(demo_scene):
    again = normalise_scene(demo_scene)  # normalising twice changes nothing that matters
    world = np.random.default_rng(1).uniform(-0.3, 0.3, (40, 3))
    for f0, f1 in zip(demo_scene.frames[:10], again.frames[:10]):
        p0, _ = f0.project(world)
        p1, _ = f1.project(again.to_normalised(demo_scene.to_original(world)))
        np.testing.assert_allclose(p0, p1, atol=1e-9)


def test_downscale_scales_intrinsics_exactly(demo_scene):
    half = downscale_scene(demo_scene, 2)
    world = np.random.default_rng(2).uniform(-0.3, 0.3, (40, 3))
    for f, h in zip(demo_scene.frames[:5], half.frames[:5]):
        assert (h.width, h.height) == (f.width // 2, f.height // 2)
        np.testing.assert_allclose(h.project(world)[0], f.project(world)[0] / 2, atol=1e-9)


def test_depth_is_carried_into_normalised_units(demo_scene):
    from n3f.scene.images import load_frame_depth

    frame = demo_scene.frames[0]
    depth = load_frame_depth(frame)
    raw = np.load(frame.depth_path)
    np.testing.assert_allclose(depth, raw * demo_scene.scale, rtol=1e-6)


def test_holdout_every():
    assert holdout_every(10, 8) == ["test"] + ["train"] * 7 + ["test", "train"]
    assert holdout_every(3, 0) == ["train"] * 3
