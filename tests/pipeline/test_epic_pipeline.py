"""The whole pipeline on an EPIC-Diff scene (the demo in NeuralDiff's exact layout, see the
``epic_diff_dir`` fixture): features -> fit -> query -> export -> evaluate through the CLI, with
retrieval scored on the annotated test frames only. Checks that the artefacts exist and are sane,
not their quality (the fit is 30 steps at 32x24)."""

from __future__ import annotations

import json
import time

import numpy as np

from n3f.pipeline.evaluate import object_mask, reference_patches, scored_frames
from n3f.scene.catalog import load_scene


def _n3f(*args):
    """Run one `n3f` command in this process (typer's CliRunner: the imports are paid once)."""
    from typer.testing import CliRunner

    from n3f.cli import app

    started = time.perf_counter()
    result = CliRunner().invoke(app, [str(a) for a in args])
    print(f"n3f {args[0]}: {time.perf_counter() - started:.1f} s")
    assert result.exit_code == 0, f"n3f {' '.join(map(str, args))} failed: {result.output}\n{result.exception!r}"
    return result.stdout


def test_annotated_test_frames_are_scored_and_references_leave_one_out(epic_diff_dir):
    scene = load_scene(str(epic_diff_dir))
    held, candidates = scored_frames(scene)
    # annotations exist on the test frames only; frame 80's is empty, so (NeuralDiff's rule) unscored
    assert held == [0, 16, 32, 48, 64] and candidates == held
    assert set(np.unique(object_mask(scene, 16))) == {0, 1}
    patches = reference_patches(scene, 1, n_refs=3, size=4, frames=candidates)
    assert len(patches) == 3 and {p.frame for p in patches} <= set(held)
    for p in patches:  # each query patch is centred on the foreground and mostly inside it
        x0, y0, x1, y1 = p.box
        mask = object_mask(scene, p.frame)
        assert mask[(y0 + y1) // 2, (x0 + x1) // 2] == 1 and mask[y0:y1, x0:x1].mean() >= 0.75


def test_cli_pipeline_on_an_epic_diff_scene(epic_diff_dir, tmp_path, monkeypatch):
    import open3d as o3d

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scene = str(epic_diff_dir)
    out = _n3f("features", "--scene", scene, "--teacher", "effnet_lite0", "--pca", "8", "--quiet")
    assert "96 frames x 4x4 cells x 8 dims" in out  # 32x24 frames, stride-8 cells (rounded up)
    cache = out.split(" in ", 1)[1].splitlines()[0].strip()

    runs = tmp_path / "runs"
    out = _n3f(
        "fit", "--scene", scene, "--teacher", "effnet_lite0", "--pca", "8", "--steps", "30", "--samples", "8192", "--eval-every", "0",
        "--output", runs, "--quiet",
    )  # fmt: skip
    (run,) = list(runs.glob("P00_00/effnet_lite0/*"))
    config = (run / "config.toml").read_text()
    assert f'feature_cache = "{cache}"' in config  # the cache of `n3f features`, reused
    assert "march_steps = 256" in config and 'grid_preset = "cpu"' in config  # the CPU defaults of `n3f fit`
    assert 'background = "random"' in config and "aabb_margin = 0.1" in config  # `n3f fit`'s defaults
    from n3f.pipeline.fit import read_config

    recorded = read_config(run)  # --feature-rendering auto, resolved and recorded
    assert recorded.feature_rendering == ("sample" if recorded.dynamic else "ray")
    assert recorded.contraction == "sphere"  # --contraction auto follows the EPIC-Diff scene
    assert (run / "checkpoints" / "step-0000030.pt").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "eval/psnr" in r][-1]
    assert final["step"] == 30 and final["eval/frames"] == 12 and 5 < final["eval/psnr"] < 60  # 6 test + 6 val frames
    assert len(list((run / "renders").rglob("*.png"))) == 12

    out = _n3f("query", "--run", run, "--frame", "16", "--point", "16,12", "--size", "4", "--frames", "test", "--output", tmp_path / "q")
    ranking = json.loads((tmp_path / "q" / "ranking.json").read_text())["ranking"]
    assert sorted(r["frame"] for r in ranking) == list(range(0, 96, 8))  # test and val frames
    assert all(np.isfinite(r["score"]) for r in ranking) and len(list((tmp_path / "q" / "heatmaps").glob("*.png"))) == 12

    _n3f("export", "--run", run, "--out", tmp_path / "scene.ply")
    cloud = o3d.t.io.read_point_cloud(str(tmp_path / "scene.ply"))
    assert len(cloud.point.positions) > 0 and "feature_0" in cloud.point

    out = _n3f("evaluate", "--run", run, "--refs", "2", "--patch", "4")
    assert "| foreground |" in out and "5 held-out frames with masks" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["scored_frames"] == [0, 16, 32, 48, 64]  # annotated test frames; 80's annotation is empty
    assert metrics["references_from"] == "held-out frames, leave-one-out"
    refs = metrics["references"]["foreground"]
    assert len(refs) == 2 and {r["frame"] for r in refs} <= set(metrics["scored_frames"])
    for source in ("teacher", "student"):
        assert list(metrics["retrieval"][source]["per_object"]) == ["foreground"]
        assert 0 < metrics["retrieval"][source]["mAP"] <= 1
    assert "segmentation_3d" not in metrics  # EPIC-Diff has no 3D boxes
    assert (run / "evaluation.md").read_text().count("| foreground |") == 1
