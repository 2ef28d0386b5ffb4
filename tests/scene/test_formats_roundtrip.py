"""Every reader against the exact cameras of the demo scene: write each format, read it back,
and check that world points project to the same pixels as with the truth."""

from __future__ import annotations

import numpy as np
import pytest

from n3f.scene.formats.colmap import write_colmap
from n3f.scene.formats.detect import detect_format, read_scene_folder
from n3f.scene.formats.epic_diff import write_epic_diff
from n3f.scene.formats.epic_fields import write_epic_fields
from n3f.scene.formats.llff import write_llff
from n3f.scene.formats.transforms import write_transforms


def _world_points(scene, n=200, seed=0):
    """Points in the original (metre) world: random points in the content box plus object centres."""
    rng = np.random.default_rng(seed)
    lo, hi = scene.aabb
    pts = rng.uniform(lo, hi, size=(n, 3))  # the room: points in front of, beside and behind cameras
    centres = [np.mean(o["box_normalised"], axis=0) for o in scene.objects]
    return scene.to_original(np.concatenate([pts, np.array(centres)]))


def _max_pixel_error(truth, other, world):
    """Largest pixel distance over frames (matched by order) between projections of ``world``,
    over the points each truth frame sees inside its image."""
    worst, used = 0.0, 0
    for ft, fo in zip(truth.frames, other.frames):
        pt, zt = ft.project(truth.to_normalised(world))
        po, zo = fo.project(other.to_normalised(world))
        clear = np.abs(zt) > 0.05  # well away from the camera plane
        assert np.array_equal(zt[clear] > 0, zo[clear] > 0)
        seen = clear & (zt > 0) & (pt[:, 0] >= 0) & (pt[:, 0] <= ft.width) & (pt[:, 1] >= 0) & (pt[:, 1] <= ft.height)
        if seen.any():
            worst = max(worst, float(np.abs(pt[seen] - po[seen]).max()))
            used += int(seen.sum())
    assert used > 500, "too few points seen to compare"
    return worst


WRITERS = {
    "colmap_binary": (lambda s, d: write_colmap(s, d, binary=True), "colmap"),
    "colmap_text": (lambda s, d: write_colmap(s, d, binary=False), "colmap"),
    "llff": (write_llff, "llff"),
    "transforms": (write_transforms, "transforms"),
    "epic_diff": (write_epic_diff, "epic_diff"),
    "epic_fields": (write_epic_fields, "epic_fields"),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_reader_reproduces_true_projection(kind, demo_scene, tmp_path):
    write, fmt = WRITERS[kind]
    folder = tmp_path / kind
    write(demo_scene, folder)
    assert detect_format(folder) == fmt
    back = read_scene_folder(folder)
    assert back.format == fmt
    assert len(back) == len(demo_scene)
    assert [(f.width, f.height) for f in back.frames] == [(f.width, f.height) for f in demo_scene.frames]
    # same images in the same order
    truth_bytes = [f.image_path.read_bytes() for f in demo_scene.frames[:5]]
    assert [f.image_path.read_bytes() for f in back.frames[:5]] == truth_bytes
    err = _max_pixel_error(demo_scene, back, _world_points(demo_scene))
    assert err < 1e-3, f"{kind}: max reprojection difference {err:.2e} px"
    # every reader normalises: cameras inside the unit box, rotations orthonormal, OpenCV axes
    centres = np.stack([f.camera_centre for f in back.frames])
    assert np.abs(centres).max() <= 1 + 1e-9
    for f in back.frames:
        R = f.c2w[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) > 0


@pytest.mark.parametrize("kind", ["colmap_binary", "transforms", "epic_diff"])
def test_explicit_splits_survive(kind, demo_scene, tmp_path):
    write, _ = WRITERS[kind]
    write(demo_scene, tmp_path / kind)
    back = read_scene_folder(tmp_path / kind)
    assert [f.split for f in back.frames] == [f.split for f in demo_scene.frames]


def test_colmap_sparse_points_round_trip(demo_scene, tmp_path):
    pts = demo_scene.to_normalised(_world_points(demo_scene, n=50))
    scene = demo_scene.replace(points=pts)
    write_colmap(scene, tmp_path / "c")
    back = read_scene_folder(tmp_path / "c")

    def by_coords(p):  # COLMAP does not keep point order
        return p[np.lexsort(p.T)]

    np.testing.assert_allclose(by_coords(back.to_original(back.points)), by_coords(scene.to_original(pts)), atol=1e-9)


def test_colmap_distortion_models_round_trip(demo_scene, tmp_path):
    from n3f.scene.types import Distortion

    frames = [
        __import__("dataclasses").replace(
            f, distortion=Distortion("OPENCV", (0.01, -0.002, 0.0005, 0.0003)) if i % 2 else Distortion("RADIAL", (0.02, -0.01))
        )
        for i, f in enumerate(demo_scene.frames[:6])
    ]
    scene = demo_scene.replace(frames=frames)
    write_colmap(scene, tmp_path / "d", binary=False)
    back = read_scene_folder(tmp_path / "d")
    assert [f.distortion for f in back.frames] == [f.distortion for f in frames]
