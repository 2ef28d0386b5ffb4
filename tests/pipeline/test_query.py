"""Query, retrieval scoring and point-cloud export, first against exact "oracle" maps built from
the demo scene's true depth and instance masks (so every number has a known answer), then end to
end through the CLI on a short fitted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from n3f.errors import N3FError
from n3f.pipeline.evaluate import average_precision, box_points, reference_patches
from n3f.pipeline.maps import StudentMaps, map_pixels, upsample_map
from n3f.pipeline.pointcloud import ScenePoints, otsu_threshold, scene_points, segment, write_ply
from n3f.pipeline.query import check_box, frame_score, parse_box, point_box
from n3f.scene.images import load_frame_depth, load_frame_mask

STRIDE = 4


@pytest.fixture(scope="module")
def oracle_maps(demo_scene, tmp_path_factory):
    """Maps whose feature is the one-hot instance id and whose depth is the exact ray distance."""
    scene = demo_scene
    W, H = scene.frames[0].width, scene.frames[0].height
    xy, h, w = map_pixels(W, H, STRIDE)
    px = (xy.numpy() - 0.5).astype(int)
    n_ids = 1 + max(o["id"] for o in scene.objects)
    feature = np.zeros((len(scene), h, w, n_ids), np.float16)
    depth = np.zeros((len(scene), h, w), np.float32)
    for i, f in enumerate(scene.frames):
        ids = load_frame_mask(f)[px[:, 1], px[:, 0]]
        feature[i].reshape(-1, n_ids)[np.arange(len(ids)), ids] = 1
        z = load_frame_depth(f)[px[:, 1], px[:, 0]]
        ray = np.stack([(xy[:, 0].numpy() - f.K[0, 2]) / f.K[0, 0], (xy[:, 1].numpy() - f.K[1, 2]) / f.K[1, 1], np.ones(len(xy))], 1)
        depth[i] = (z * np.linalg.norm(ray, axis=1)).reshape(h, w)
    folder = tmp_path_factory.mktemp("oracle-maps")
    np.save(folder / "feature.npy", feature)
    np.save(folder / "depth.npy", depth)
    np.save(folder / "opacity.npy", np.ones((len(scene), h, w), np.float16))
    np.save(folder / "rgb.npy", np.full((len(scene), h, w, 3), 128, np.uint8))
    geometry = {"offset_x": STRIDE / 2, "offset_y": STRIDE / 2, "step_x": STRIDE, "step_y": STRIDE}
    meta = {"step": 0, "stride": STRIDE, "size": [h, w], "frame_size": [H, W], "geometry": geometry}
    (folder / "meta.json").write_text(json.dumps(meta))
    return StudentMaps.open(folder)


def test_boxes_and_points_are_checked():
    assert parse_box("10,20,30,40", 64, 48) == (10, 20, 30, 40)
    assert point_box(2, 2, 8, 64, 48) == (0, 0, 8, 8)  # shifted inside the image
    assert point_box(63, 47, 8, 64, 48) == (56, 40, 64, 48)
    for bad in ("1,2,3", "a,b,c,d", "10,10,10,20", "50,0,70,10", "-1,0,5,5"):
        with pytest.raises(N3FError):
            parse_box(bad, 64, 48)
    with pytest.raises(N3FError, match="outside"):
        point_box(64, 10, 8, 64, 48)
    with pytest.raises(N3FError):
        check_box((0, 0, 0, 0), 64, 48)


def test_otsu_splits_two_clusters():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 5000), rng.normal(0.8, 0.03, 1000)])
    assert 0.35 < otsu_threshold(values) < 0.65
    assert frame_score(np.linspace(0, 1, 101)) == pytest.approx(0.99)


def test_upsampling_puts_cell_values_at_their_pixels():
    # a ramp in x and one in y: bilinear resampling reproduces linear functions exactly, with cell
    # (i, j) at the continuous pixel position (4j + 2, 4i + 2)
    geometry = {"offset_x": 2.0, "offset_y": 2.0, "step_x": 4.0, "step_y": 4.0}
    ramp_x = np.tile(np.arange(4, dtype=np.float32), (3, 1))
    full = upsample_map(ramp_x, geometry, 16, 12)
    expected = np.clip((np.arange(16) + 0.5 - 2) / 4, 0, 3)
    assert full.shape == (12, 16) and np.allclose(full, expected[None, :], atol=1e-6)
    ramp_y = np.tile(np.arange(3, dtype=np.float32)[:, None], (1, 4))
    assert np.allclose(upsample_map(ramp_y, geometry, 16, 12), np.clip((np.arange(12) + 0.5 - 2) / 4, 0, 2)[:, None], atol=1e-6)


def test_retrieval_with_exact_features_finds_every_object(demo_scene, oracle_maps):
    scene = demo_scene
    held = scene.split_indices("test")
    feats = np.asarray(oracle_maps.array("feature"), np.float32)
    for obj in scene.objects:
        oid = obj["id"]
        refs = reference_patches(scene, oid, n_refs=3, size=8)
        assert refs, obj["name"]
        for p in refs:  # every reference patch lies on the object in its frame
            x0, y0, x1, y1 = p.box
            assert (load_frame_mask(scene.frames[p.frame])[y0:y1, x0:x1] == oid).all()
        vec = np.eye(feats.shape[-1], dtype=np.float32)[oid]
        sims = [upsample_map(feats[i] @ vec, oracle_maps.geometry, scene.frames[i].width, scene.frames[i].height) for i in held]
        labels = np.concatenate([(load_frame_mask(scene.frames[i]) == oid).ravel() for i in held])
        if labels.any():
            ap = average_precision(np.concatenate([s.ravel() for s in sims]), labels)
            assert ap > 0.85, (obj["name"], ap)  # not 1: bilinear upsampling blurs 4-pixel cells at the borders


def test_scene_points_and_segmentation_match_the_exact_boxes(demo_scene, oracle_maps, tmp_path):
    import open3d as o3d

    scene = demo_scene
    points = scene_points(scene, oracle_maps, voxel=0.01)
    assert len(points) > 5000
    # exact depth: points lie on the true surfaces, so each object's box holds its own points
    ious = {}
    for obj in scene.objects:
        truth = box_points(points, scene, np.asarray(obj["box"]))
        sim = points.features[:, obj["id"]] / np.maximum(np.linalg.norm(points.features, axis=1), 1e-8)
        chosen, thr = segment(points, sim)
        ious[obj["name"]] = (chosen & truth).sum() / max((chosen | truth).sum(), 1)
    assert min(ious.values()) >= 0.5, ious
    path = write_ply(tmp_path / "mug.ply", scene, points.subset(chosen), {"similarity": sim[chosen]})
    back = o3d.t.io.read_point_cloud(str(path))
    assert len(back.point.positions) == int(chosen.sum())
    assert np.allclose(back.point.positions.numpy(), scene.to_original(points.positions[chosen].astype(np.float64)), atol=1e-4)
    assert np.allclose(back.point.similarity.numpy().ravel(), sim[chosen], atol=1e-6)


def test_scene_points_drop_floaters(demo_scene, oracle_maps, tmp_path):
    """A frame whose depth is wrong (half the true distance: a floater) contributes no points."""
    import shutil

    folder = tmp_path / "maps"
    shutil.copytree(oracle_maps.folder, folder)
    depth = np.load(folder / "depth.npy")
    depth[0] *= 0.5
    np.save(folder / "depth.npy", depth)
    maps = StudentMaps.open(folder)
    alone = scene_points(demo_scene, maps, frames=[0, 1, 2, 3, 4], voxel=0)
    good = scene_points(demo_scene, oracle_maps, frames=[1, 2, 3, 4], voxel=0)
    assert abs(len(alone) - len(good)) < 0.05 * len(good)


def test_points_round_trip_through_ply(demo_scene, tmp_path):
    import open3d as o3d

    rng = np.random.default_rng(1)
    pts = ScenePoints(
        rng.uniform(-0.5, 0.5, (50, 3)).astype(np.float32),
        rng.uniform(0, 1, (50, 3)).astype(np.float32),
        rng.normal(size=(50, 6)).astype(np.float32),
    )
    path = write_ply(tmp_path / "p.ply", demo_scene, pts)
    back = o3d.t.io.read_point_cloud(str(path))
    assert np.allclose(back.point.colors.numpy(), pts.colors, atol=1e-6)
    assert np.allclose(np.concatenate([back.point[f"feature_{k}"].numpy() for k in range(6)], 1), pts.features, atol=1e-6)


# ---------------------------------------------------------------- end to end on a fitted run


def _n3f(*args):
    return subprocess.run(
        [sys.executable, "-m", "n3f", *args, "--quiet"], capture_output=True, text=True, env=dict(os.environ), timeout=900
    )


def test_query_command_writes_every_result(fitted_run, tmp_path):
    import open3d as o3d

    out = tmp_path / "q"
    r = _n3f(
        "query", "--run", str(fitted_run), "--frame", "0", "--point", "30,30", "--size", "8", "--output", str(out), "--save-similarity"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "ranking.json").read_text())
    scores = [row["score"] for row in doc["ranking"]]
    assert len(scores) == 96 and scores == sorted(scores, reverse=True)
    assert doc["query"]["box"] == [26, 26, 34, 34]
    assert len(list((out / "heatmaps").glob("*.png"))) == 96 and (out / "contact_sheet.png").is_file()
    sims = np.load(out / "similarity.npz")
    assert sims["0000.png"].shape == (48, 64) and sims["0000.png"].dtype == np.float16
    best = doc["ranking"][0]
    assert float(np.percentile(sims[best["name"]].astype(np.float32), 99)) == pytest.approx(best["score"], abs=2e-3)
    ply = o3d.t.io.read_point_cloud(str(out / "points.ply"))
    assert len(ply.point.positions) > 100 and "similarity" in ply.point
    # teacher source, test frames only
    r = _n3f(
        "query",
        "--run",
        str(fitted_run),
        "--frame",
        "0000.png",
        "--box",
        "20,20,40,40",
        "--source",
        "teacher",
        "--frames",
        "test",
        "--output",
        str(tmp_path / "t"),
    )
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "t" / "ranking.json").read_text())["ranking"]) == 12
    # results are never overwritten
    r = _n3f("query", "--run", str(fitted_run), "--frame", "0", "--point", "30,30", "--output", str(out))
    assert r.returncode == 2 and "never overwrites" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("--frame", "400", "--point", "3,3"), "out of range"),
        (("--frame", "0", "--box", "0,0,90,10"), "outside"),
        (("--frame", "0", "--point", "3,3", "--box", "0,0,5,5"), "exactly one"),
        (("--frame", "0", "--point", "3,3", "--source", "clip"), "unknown --source"),
    ],
)
def test_query_rejects_bad_input(fitted_run, args, message):
    r = _n3f("query", "--run", str(fitted_run), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_evaluate_and_export_commands(fitted_run, tmp_path):
    import open3d as o3d

    r = _n3f("evaluate", "--run", str(fitted_run), "--refs", "1")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((fitted_run / "metrics.json").read_text())
    for source in ("teacher", "student"):
        assert 0 <= metrics["retrieval"][source]["mAP"] <= 1
        assert len(metrics["retrieval"][source]["per_object"]) == 7
    assert metrics["psnr"] > 10 and "mean_iou" in metrics["segmentation_3d"]
    assert "| **mean** |" in (fitted_run / "evaluation.md").read_text()

    r = _n3f("export", "--run", str(fitted_run), "--out", str(tmp_path / "scene.ply"))
    assert r.returncode == 0, r.stderr
    whole = o3d.t.io.read_point_cloud(str(tmp_path / "scene.ply"))
    r = _n3f("export", "--run", str(fitted_run), "--frame", "0", "--point", "30,30", "--size", "8", "--out", str(tmp_path / "part.ply"))
    assert r.returncode == 0, r.stderr
    part = o3d.t.io.read_point_cloud(str(tmp_path / "part.ply"))
    assert 0 < len(part.point.positions) < len(whole.point.positions)
    r = _n3f("export", "--run", str(fitted_run), "--clusters", "3", "--out", str(tmp_path / "clusters"))
    assert r.returncode == 0, r.stderr
    sizes = [len(o3d.t.io.read_point_cloud(str(p)).point.positions) for p in sorted((tmp_path / "clusters").glob("*.ply"))]
    assert len(sizes) == 3 and sum(sizes) == len(whole.point.positions)
    r = _n3f("export", "--run", str(fitted_run), "--out", str(tmp_path / "scene.ply"))
    assert r.returncode == 2 and "never overwrites" in r.stderr


def test_segment_keeps_the_cluster_at_the_clicked_point():
    rng = np.random.default_rng(2)
    big = rng.normal([0.5, 0, 0], 0.01, (300, 3))
    small = rng.normal([-0.5, 0, 0], 0.01, (60, 3))
    rest = rng.uniform(-1, 1, (200, 3))
    pos = np.concatenate([big, small, rest]).astype(np.float32)
    pts = ScenePoints(pos, np.zeros_like(pos), np.zeros((len(pos), 2), np.float32))
    sim = np.concatenate([np.full(360, 0.9), np.full(200, 0.1)])
    largest, thr = segment(pts, sim)
    assert 0.1 < thr < 0.9 and largest[:300].all() and not largest[300:].any()
    clicked, _ = segment(pts, sim, anchor=np.array([-0.5, 0, 0]))
    assert clicked[300:360].all() and not clicked[:300].any() and not clicked[360:].any()


def test_segment_cuts_around_the_click_not_over_the_whole_scene():
    """An object (cosines 0.999-0.997) on a table (0.99-0.95) in a room (0.9-0): over the whole
    scene the room fills two of the three classes and the cut falls below the table, which DBSCAN
    then joins to the object; the cut among the points near the click separates object and table."""
    rng = np.random.default_rng(0)
    obj = rng.normal([0, 0, 0.05], 0.015, (80, 3))
    table = np.c_[rng.uniform(-0.25, 0.25, (3000, 2)), np.zeros(3000)]
    table = table[np.linalg.norm(table[:, :2], axis=1) > 0.02]
    room = rng.uniform(-1, 1, (6000, 3))
    room = room[np.linalg.norm(room, axis=1) > 0.5]
    pos = np.concatenate([obj, table, room]).astype(np.float32)
    closeness = [rng.uniform(-3, -2.5, len(obj)), rng.uniform(-2, -1.3, len(table)), rng.uniform(-1, 0, len(room))]
    sim = 1 - 10 ** np.concatenate(closeness)
    pts = ScenePoints(pos, np.zeros_like(pos), np.zeros((len(pos), 2), np.float32))
    is_obj = np.arange(len(pos)) < len(obj)
    local, thr = segment(pts, sim, anchor=np.zeros(3))
    assert 0.99 < thr < 0.997 and local[is_obj].mean() > 0.95 and not local[~is_obj].any()
    whole, thr = segment(pts, sim, anchor=np.zeros(3), neighbourhood=np.inf)
    assert thr < 0.95 and whole[len(obj) : len(obj) + len(table)].mean() > 0.9  # why the cut is local
