"""demo/kitchen_dynamic: a moving sponge and a camera-attached hand, checked against exact ground truth.

A small version (8 frames at 64x48) is rendered once through the catalog's code path; every check
works in the stored metric world (``scene.original_c2w``, depth straight from the ``.npy`` files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from n3f.errors import SceneError
from n3f.scene.catalog import Recipe, ensure_procedural, find_recipe, load_catalog, load_scene
from n3f.scene.dynamic import (
    ACTOR,
    DYNAMIC,
    DYNAMIC_VERSION,
    HAND_ID,
    MOVING_ID,
    SPONGE_BOX,
    STATIC,
    KitchenDynamicConfig,
    hand_parts,
    sponge_pose,
    sponge_world_box,
    stream_labels,
)
from n3f.scene.images import load_frame_mask
from n3f.scene.synthetic import GENERATOR_VERSION, TABLE_TOP, TabletopConfig, TabletopRenderer, build_objects, orbit_cameras

SMALL = {"n_frames": 8, "width": 64, "height": 48}
GOLDEN = Path(__file__).parent / "data" / "tabletop_64x48_frame3.npz"


@pytest.fixture(scope="module")
def small_dir(data_root) -> Path:
    recipe = Recipe(
        name="demo/kitchen_dynamic_small",
        file=Path("kitchen_dynamic_small.toml"),
        format="procedural",
        path="demo/kitchen_dynamic_small",
        generator="kitchen_dynamic",
        options=dict(SMALL),
    )
    return ensure_procedural(recipe)


@pytest.fixture(scope="module")
def small(small_dir):
    """(scene, per-frame metric depth, per-frame masks) of the small render."""
    scene = load_scene(small_dir)
    depth = [np.load(f.depth_path) for f in scene.frames]
    masks = [load_frame_mask(f) for f in scene.frames]
    return scene, depth, masks


@pytest.fixture(scope="module")
def tabletop_views(small):
    """demo/tabletop rendered from the same cameras: (rgb, ids, depth) per frame."""
    scene, _, _ = small
    renderer = TabletopRenderer(TabletopConfig(**SMALL))
    return [renderer.render(f.K, scene.original_c2w(f)) for f in scene.frames]


def _backproject(frame, c2w, depth, jj, ii) -> np.ndarray:
    """World points (N, 3) of pixels (jj, ii) at their z-depth, through camera ``c2w``."""
    pix = np.stack([ii + 0.5, jj + 0.5, np.ones(len(ii))], 1)
    cam = (pix @ np.linalg.inv(frame.K).T) * depth[jj, ii][:, None]
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def test_recipe_is_in_the_catalog():
    recipe = find_recipe("demo/kitchen_dynamic")
    assert recipe.generator == "kitchen_dynamic" and "demo/kitchen_dynamic" in load_catalog()
    assert (recipe.options["n_frames"], recipe.options["width"], recipe.options["height"]) == (96, 256, 192)
    assert recipe.candidates()[0].name == f"kitchen_dynamic-v{GENERATOR_VERSION}.{DYNAMIC_VERSION}"
    assert find_recipe("demo/tabletop").candidates()[0].name == f"tabletop-v{GENERATOR_VERSION}"
    # the same cameras as the tabletop
    K, poses = orbit_cameras(KitchenDynamicConfig(**recipe.options))
    K0, poses0 = orbit_cameras(TabletopConfig(**find_recipe("demo/tabletop").options))
    assert np.array_equal(K, K0) and np.array_equal(poses, poses0)


def test_layout_time_and_records(small, small_dir):
    scene, _, masks = small
    assert len(scene) == 8 and scene.name == "demo/kitchen_dynamic"
    assert small_dir.name == f"kitchen_dynamic_small-v{GENERATOR_VERSION}.{DYNAMIC_VERSION}"
    assert [f.frame_id for f in scene.frames] == list(range(8))
    np.testing.assert_allclose([f.time for f in scene.frames], np.arange(8) / 7, atol=1e-12)
    # objects are the tabletop's static ones, unchanged; the dynamic ids are recorded apart
    static = [(o.instance_id, o.name) for o in build_objects(0)]
    assert [(o["id"], o["name"]) for o in scene.objects] == static
    dynamic = scene.metadata["dynamic"]
    assert dynamic["streams"] == {"dynamic": [MOVING_ID], "actor": [HAND_ID]}
    assert dynamic["moving_object"]["id"] == MOVING_ID and dynamic["hand"]["id"] == HAND_ID
    ids = set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())
    assert {MOVING_ID, HAND_ID} <= ids <= set(range(8)) | {MOVING_ID, HAND_ID}
    labels = stream_labels(masks[0], dynamic)
    assert np.array_equal(labels == ACTOR, masks[0] == HAND_ID)
    assert np.array_equal(labels == DYNAMIC, masks[0] == MOVING_ID)
    assert np.array_equal(labels == STATIC, masks[0] < MOVING_ID)
    # the scene file stores time per frame
    doc = json.loads((small_dir / "scene.json").read_text())
    assert [e["time"] for e in doc["frames"]] == [i / 7 for i in range(8)]


def test_bad_time_is_rejected(small_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(small_dir, folder)
    doc = json.loads((folder / "scene.json").read_text())
    doc["frames"][2]["time"] = 1.5
    (folder / "scene.json").write_text(json.dumps(doc))
    with pytest.raises(SceneError, match="time"):
        load_scene(folder)


def test_sponge_path_is_smooth_and_clear_of_the_objects():
    times = np.linspace(0, 1, 101)
    positions = np.array([sponge_pose(t)[0] for t in times])
    assert positions[-1, 0] - positions[0, 0] > 0.8  # slides across the table
    assert np.abs(np.diff(positions, axis=0)).max() < 0.02  # no jumps
    assert np.all(positions[:, 2] == TABLE_TOP)
    boxes = [o.world_box() for o in build_objects(0)]
    for t in times:
        lo, hi = sponge_world_box(t)
        assert -0.6 < lo[0] and hi[0] < 0.6 and -0.4 < lo[1] and hi[1] < 0.4  # on the table top
        for blo, bhi in boxes:
            assert np.any(hi[:2] < blo[:2]) or np.any(lo[:2] > bhi[:2]), f"sponge meets an object at t={t}"


def test_sponge_pixels_lie_in_its_box_at_the_frame_time(small):
    """Every sponge pixel back-projects into the sponge's oriented box at that frame's time (and not
    into its box at the mirrored time), and its centre projects inside its mask."""
    scene, depth, masks = small
    record = scene.metadata["dynamic"]["moving_object"]
    lo, hi = np.asarray(SPONGE_BOX[0]), np.asarray(SPONGE_BOX[1])
    seen = 0
    for i, frame in enumerate(scene.frames):
        position, yaw = sponge_pose(frame.time)
        np.testing.assert_allclose(record["poses"][i], [*position, yaw], atol=1e-12)
        jj, ii = np.nonzero(masks[i] == MOVING_ID)
        if len(jj) < 3:
            continue
        seen += 1
        c2w = scene.original_c2w(frame)
        world = _backproject(frame, c2w, depth[i], jj, ii)
        c, s = np.cos(yaw), np.sin(yaw)
        local = (world - position) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        assert np.all((local >= lo - 1e-4) & (local <= hi + 1e-4)), f"frame {i}"
        other, _ = sponge_pose(1 - frame.time)
        if np.linalg.norm(other - position) > 0.2:
            assert not np.all(np.abs(world - other)[:, :2] <= hi[:2].max() + 1e-4)
        centre = position + [0, 0, hi[2] / 2]
        w2c = np.linalg.inv(c2w)
        uvw = (w2c[:3, :3] @ centre + w2c[:3, 3]) @ frame.K.T
        u, v = uvw[:2] / uvw[2]
        assert ii.min() - 1 <= u <= ii.max() + 2 and jj.min() - 1 <= v <= jj.max() + 2, f"frame {i}"
    assert seen >= 4
    # it really moves: the mask's image position changes although cameras nearby look alike
    first, last = record["boxes"][0], record["boxes"][-1]
    assert np.linalg.norm(np.mean(last, 0) - np.mean(first, 0)) > 0.8


def _inside_parts(points: np.ndarray, grow: float) -> np.ndarray:
    """(N, n_parts) bool: camera-space points inside each hand part grown by ``grow`` metres
    (implicit tests, independent of the ray caster)."""
    out = []
    for kind, p, position, rotation in hand_parts():
        q = (points - position) @ rotation
        if kind == "box":
            out.append(np.all((q >= np.asarray(p["lo"]) - grow) & (q <= np.asarray(p["hi"]) + grow), 1))
        elif kind == "sphere":
            out.append(np.linalg.norm(q, axis=1) <= p["radius"] + grow)
        else:
            z = np.clip(q[:, 2], p["z0"], p["z1"])
            radius = p["r0"] + (p["r1"] - p["r0"]) * (z - p["z0"]) / (p["z1"] - p["z0"])
            out.append((np.hypot(q[:, 0], q[:, 1]) <= radius + grow) & (q[:, 2] >= p["z0"] - grow) & (q[:, 2] <= p["z1"] + grow))
    return np.stack(out, 1)


def test_hand_is_fixed_to_the_camera_with_exact_depth(small):
    scene, depth, masks = small
    hand = masks[0] == HAND_ID
    assert 0.05 < hand.mean() < 0.4
    h, w = hand.shape
    assert hand[h * 3 // 4 :, w * 3 // 4 :].mean() > 0.5 and not hand[: h // 3].any()  # enters at the lower right
    for i in range(1, len(scene)):
        assert np.array_equal(masks[i] == HAND_ID, hand), f"frame {i}"
        np.testing.assert_allclose(depth[i][hand], depth[0][hand], rtol=1e-5)
    # camera-space rays of every pixel; samples in front of the recorded depth are outside the hand
    frame = scene.frames[0]
    jj, ii = np.mgrid[0:h, 0:w]
    rays = np.stack([ii + 0.5, jj + 0.5, np.ones_like(ii, dtype=float)], -1).reshape(-1, 3) @ np.linalg.inv(frame.K).T
    z = depth[0].reshape(-1).astype(np.float64)
    surface = rays[hand.ravel()] * z[hand.ravel()][:, None]
    inside_grown = _inside_parts(surface, 1e-5).any(1)
    inside_shrunk = _inside_parts(surface, -1e-5).any(1)
    assert inside_grown.all() and not inside_shrunk.any(), "hand pixels lie on the hand's surface"
    for s in np.linspace(0.05, 0.6, 300):
        front = s < z - 1e-4
        assert not _inside_parts(rays[front] * s, -1e-4).any(), f"a ray passes through the hand before its depth (z={s:.3f})"


def test_static_pixels_match_the_tabletop(small, tabletop_views):
    """Ids and depth of static pixels equal demo/tabletop's from the same camera; so does the colour
    (the sponge and the hand cast no shadows), exactly at pixel centres and, in the stored
    anti-aliased images, away from the dynamic pixels."""
    scene, depth, masks = small
    from n3f.scene.dynamic import KitchenDynamicRenderer
    from n3f.scene.images import read_image

    centre_only = {"supersample": 1, **SMALL}
    dynamic_renderer = KitchenDynamicRenderer(KitchenDynamicConfig(**centre_only))
    static_renderer = TabletopRenderer(TabletopConfig(**centre_only))
    for i, frame in enumerate(scene.frames):
        rgb0, ids0, depth0 = tabletop_views[i]
        static = masks[i] < MOVING_ID
        assert static.mean() > 0.5
        assert np.array_equal(masks[i][static], ids0[static].astype(np.int32))
        assert np.array_equal(depth[i][static], depth0[static])
        # occluders are nearer than what the tabletop sees there
        assert np.all(depth[i][~static] < depth0[~static])
        c2w = scene.original_c2w(frame)
        rgb_c, ids_c, _ = dynamic_renderer.render(frame.K, c2w, frame.time)
        rgb0_c, _, _ = static_renderer.render(frame.K, c2w)
        assert np.array_equal(ids_c, masks[i])
        assert np.array_equal(rgb_c[static], rgb0_c[static]), f"frame {i}"
        # anti-aliasing mixes in the occluders only next to them
        near_dynamic = np.zeros_like(static)
        padded = np.pad(~static, 2)
        for dj in range(5):
            for di in range(5):
                near_dynamic |= padded[dj : dj + static.shape[0], di : di + static.shape[1]]
        clear = static & ~near_dynamic
        rgb = np.round(read_image(frame.image_path) * 255).astype(np.uint8)
        assert np.array_equal(rgb[clear], rgb0[clear]), f"frame {i}"


def test_occluded_static_objects_lose_their_pixels_to_the_occluder(small, tabletop_views):
    scene, depth, masks = small
    covered = {MOVING_ID: 0, HAND_ID: 0}
    for i in range(len(scene)):
        ids0 = tabletop_views[i][1].astype(np.int32)
        behind = (ids0 > 0) & (depth[i] < tabletop_views[i][2])  # an object pixel with something in front
        assert set(np.unique(masks[i][behind]).tolist()) <= {MOVING_ID, HAND_ID}
        for oid in covered:
            covered[oid] += int(((masks[i] == oid) & (ids0 > 0)).sum())
        # a static object's pixels never carry another object's id
        static = masks[i] < MOVING_ID
        assert np.array_equal(masks[i][static], ids0[static])
    assert covered[HAND_ID] > 20, "the hand should cover static objects in some frames"


def test_tabletop_render_is_unchanged():
    """One small tabletop frame against a reference rendered before demo/kitchen_dynamic existed."""
    reference = np.load(GOLDEN)
    config = TabletopConfig(**SMALL)
    K, poses = orbit_cameras(config)
    rgb, ids, depth = TabletopRenderer(config).render(K, poses[3])
    assert np.array_equal(ids, reference["ids"])
    np.testing.assert_allclose(depth, reference["depth"], rtol=1e-6)
    diff = np.abs(rgb.astype(int) - reference["rgb"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005
