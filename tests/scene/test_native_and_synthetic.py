"""The procedural demo scene: layout, determinism, and exactness of its ground truth."""

from __future__ import annotations

import numpy as np

from n3f.scene.images import load_frame_depth, load_frame_image, load_frame_mask
from n3f.scene.synthetic import TabletopConfig, TabletopRenderer, orbit_cameras


def test_demo_scene_layout(demo_scene):
    assert 60 <= len(demo_scene) <= 120
    f = demo_scene.frames[0]
    assert (f.width, f.height) == (256, 192)
    assert len(demo_scene.objects) >= 6
    by_category = {}
    for obj in demo_scene.objects:
        by_category.setdefault(obj["category"], []).append(obj)
    twins = [objs for objs in by_category.values() if len(objs) >= 2]
    assert twins, "two instances of one category are needed for retrieval with several answers"
    assert twins[0][0]["colour"] != twins[0][1]["colour"]
    counts = demo_scene.split_counts()
    assert counts["test"] == len(demo_scene) // 8 and counts["train"] == len(demo_scene) - counts["test"]
    # every object is visible in some frame's mask
    seen = set()
    for frame in demo_scene.frames[::6]:
        seen |= set(np.unique(load_frame_mask(frame)).tolist())
    assert {o["id"] for o in demo_scene.objects} <= seen
    # varying-height orbit
    heights = np.array([f.camera_centre for f in demo_scene.frames]) @ np.array([0, 0, 1.0])
    assert heights.std() > 0.05


def test_render_is_deterministic():
    config = TabletopConfig(n_frames=4, width=64, height=48)
    K, poses = orbit_cameras(config)
    a = TabletopRenderer(config).render(K, poses[1])
    b = TabletopRenderer(config).render(K, poses[1])
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    other = TabletopConfig(n_frames=4, width=64, height=48, seed=3)
    K2, poses2 = orbit_cameras(other)
    c = TabletopRenderer(other).render(K2, poses2[1])
    assert not np.array_equal(a[0], c[0])


def test_depth_and_masks_agree_across_views(demo_scene):
    """Back-project frame A's pixels with the exact depth, project into frame B: where B sees the
    same point (depths agree), the instance ids agree and the points land on B's depth."""
    a, b = demo_scene.frames[3], demo_scene.frames[5]
    depth_a, depth_b = load_frame_depth(a), load_frame_depth(b)
    mask_a, mask_b = load_frame_mask(a), load_frame_mask(b)
    jj, ii = np.mgrid[0 : a.height : 4, 0 : a.width : 4]
    pix = np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5, np.ones(ii.size)], 1)
    cam = (pix @ np.linalg.inv(a.K).T) * depth_a[jj.ravel(), ii.ravel()][:, None]
    world = cam @ a.c2w[:3, :3].T + a.c2w[:3, 3]
    uv, z = b.project(world)
    # only points landing near a pixel centre, so the depth lookup is exact up to surface slope
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < b.width) & (uv[:, 1] >= 0) & (uv[:, 1] < b.height) & (z > 0)
    u, v = uv[inside, 0].astype(int), uv[inside, 1].astype(int)
    near_centre = (np.abs(uv[inside, 0] - u - 0.5) < 0.1) & (np.abs(uv[inside, 1] - v - 0.5) < 0.1)
    visible = np.abs(depth_b[v, u] - z[inside]) < 0.01 * z[inside]
    use = near_centre & visible
    assert use.sum() > 50
    ids_a = mask_a[jj.ravel(), ii.ravel()][inside][use]
    ids_b = mask_b[v[use], u[use]]
    assert (ids_a == ids_b).mean() > 0.98
    assert np.median(np.abs(depth_b[v[use], u[use]] - z[inside][use]) / z[inside][use]) < 2e-3


def test_object_boxes_hold_their_masks(demo_scene):
    """Every masked pixel of an object back-projects into that object's recorded 3D box."""
    frame = demo_scene.frames[10]
    depth, mask = load_frame_depth(frame), load_frame_mask(frame)
    for obj in demo_scene.objects:
        jj, ii = np.nonzero(mask == obj["id"])
        if len(jj) == 0:
            continue
        pix = np.stack([ii + 0.5, jj + 0.5, np.ones(len(ii))], 1)
        cam = (pix @ np.linalg.inv(frame.K).T) * depth[jj, ii][:, None]
        world = cam @ frame.c2w[:3, :3].T + frame.c2w[:3, 3]
        lo, hi = np.asarray(obj["box_normalised"])
        assert np.all((world >= lo - 1e-4) & (world <= hi + 1e-4)), obj["name"]


def test_images_load_at_frame_size(demo_scene):
    image = load_frame_image(demo_scene.frames[0])
    assert image.shape == (192, 256, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05


def test_procedural_renders_live_in_version_named_folders(demo_dir):
    """A data root rendered by an older generator is never served to newer code."""
    import json

    from n3f.scene.synthetic import GENERATOR_VERSION

    assert demo_dir.name == f"tabletop-v{GENERATOR_VERSION}"
    assert json.loads((demo_dir / "scene.json").read_text())["generator"]["version"] == GENERATOR_VERSION


def test_the_unbounded_tabletop_boxes_the_table_and_cameras_and_sees_walls_beyond(tmp_path):
    """``bounds = "table"``: the scene file asks for contraction; its box holds the cameras and the
    table, and the exact depth puts walls well outside it (what a box fit cannot represent)."""
    import pytest

    from n3f.scene.formats.native import read_native
    from n3f.scene.synthetic import render_tabletop

    config = TabletopConfig(n_frames=4, width=48, height=36, supersample=1, bounds="table")
    scene = read_native(render_tabletop(tmp_path / "unbounded", config))
    assert scene.contraction == "sphere" and scene.name == "demo/tabletop_unbounded"
    centres = np.array([f.camera_centre for f in scene.frames])
    assert (centres >= scene.aabb[0] - 1e-6).all() and (centres <= scene.aabb[1] + 1e-6).all()
    outside = []
    for f in scene.frames:
        jj, ii = np.mgrid[0 : f.height, 0 : f.width]
        world = f.unproject(np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1), load_frame_depth(f).ravel())
        outside.append(((world < scene.aabb[0]) | (world > scene.aabb[1])).any(-1))
    assert 0.2 < np.concatenate(outside).mean() < 0.9  # much of each view lies beyond the box
    with pytest.raises(ValueError, match="room or table"):
        render_tabletop(tmp_path / "bad", TabletopConfig(n_frames=2, width=8, height=6, bounds="sky"))
    assert not (tmp_path / "bad").exists()


def test_a_scene_rendered_by_another_process_meanwhile_is_used_not_overwritten(data_root):
    """Two fits started together both render a missing demo scene; the one that finishes second
    finds the folder taken when it renames its own into place. It returns the first one's folder,
    leaves no temporary folder behind, and the scene is whole."""
    from pathlib import Path

    from n3f.scene.catalog import Recipe, ensure_procedural, load_scene
    from n3f.scene.synthetic import render_tabletop

    recipe = Recipe(
        name="demo/race",
        file=Path("race.toml"),
        format="procedural",
        path="demo/race",
        generator="tabletop",
        options={"n_frames": 2, "width": 16, "height": 12, "supersample": 1},
    )
    final = recipe.candidates()[0]

    def other_process_finishes_first(indices, description, total):
        render_tabletop(final, TabletopConfig(**recipe.options))  # while this call is mid-render
        yield from indices

    assert ensure_procedural(recipe, progress=other_process_finishes_first) == final
    assert not list(final.parent.glob(f".{final.name}.partial-*"))
    assert len(load_scene(final).frames) == 2
