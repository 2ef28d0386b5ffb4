"""The feature cache: round trip, reuse, invalidation, resume after an interruption."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from n3f.errors import N3FError
from n3f.pipeline.features import FeatureCache, build_teacher, compute_features


@pytest.fixture
def small_scene(demo_scene):
    """Ten frames of the demo."""
    return demo_scene.replace(frames=demo_scene.frames[:10], name="demo_small")


def _teacher_features(scene, **options):
    """The teacher's raw features of every frame, (n, h, w, C) float32, computed directly."""
    from n3f.scene.images import load_frame_image

    teacher = build_teacher("effnet_lite0", **options)
    images = torch.from_numpy(np.stack([load_frame_image(f) for f in scene.frames])).permute(0, 3, 1, 2)
    return teacher(images).permute(0, 2, 3, 1).numpy()


def test_round_trip_matches_teacher_and_pca(small_scene, tmp_path):
    cache = compute_features(small_scene, "effnet_lite0", {"batch_size": 4}, pca=16, root=tmp_path)
    reopened = FeatureCache.open(cache.folder)
    n, h, w, d = reopened.shape
    assert (n, h, w, d) == (10, 24, 32, 16)
    raw = _teacher_features(small_scene)
    basis = reopened.pca()
    expected = (raw.reshape(-1, 152) - basis["mean"]) @ basis["components"].T
    got = np.asarray(reopened.features(), dtype=np.float32).reshape(-1, 16)
    np.testing.assert_allclose(got, expected, atol=2e-3 * np.abs(expected).max())
    # PCA basis is orthonormal and ordered by variance
    np.testing.assert_allclose(basis["components"] @ basis["components"].T, np.eye(16), atol=1e-4)
    assert np.all(np.diff(basis["explained_variance_ratio"]) <= 1e-6)
    meta = reopened.meta
    assert meta["teacher"] == "effnet_lite0" and meta["geometry"]["step_x"] == 8.0
    assert meta["frames"] == [f.name for f in small_scene.frames]


def test_pca_zero_keeps_raw_channels(small_scene, tmp_path):
    cache = compute_features(small_scene, "effnet_lite0", {}, pca=0, root=tmp_path)
    assert cache.shape[-1] == 152
    np.testing.assert_allclose(np.asarray(cache.features(), dtype=np.float32), _teacher_features(small_scene), atol=2e-3)


def test_reuse_and_invalidation(small_scene, tmp_path):
    first = compute_features(small_scene, "effnet_lite0", {}, pca=8, root=tmp_path)
    stamp = os.stat(first.folder / "features.f16").st_mtime_ns
    again = compute_features(small_scene, "effnet_lite0", {}, pca=8, root=tmp_path)
    assert again.folder == first.folder and os.stat(again.folder / "features.f16").st_mtime_ns == stamp
    other_option = compute_features(small_scene, "effnet_lite0", {"input_scale": 0.5}, pca=8, root=tmp_path)
    assert other_option.folder != first.folder and other_option.shape[1:3] == (12, 16)
    other_pca = compute_features(small_scene, "effnet_lite0", {}, pca=4, root=tmp_path)
    assert other_pca.folder != first.folder
    # an image that changed on disk invalidates the cache
    image = small_scene.frames[0].image_path
    st = os.stat(image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        changed = compute_features(small_scene, "effnet_lite0", {}, pca=8, root=tmp_path)
    finally:
        os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert changed.folder != first.folder


def test_interrupted_run_resumes_from_frames_done(small_scene, tmp_path):
    class Interrupt(Exception):
        pass

    def dies_after_two(batches, description, total):
        for k, batch in enumerate(batches):
            if k == 2:
                raise Interrupt
            yield batch

    with pytest.raises(Interrupt):
        compute_features(small_scene, "effnet_lite0", {"batch_size": 2}, pca=8, root=tmp_path, progress=dies_after_two)
    folder = next((tmp_path / "demo_small").iterdir())
    assert json.loads((folder / "meta.json").read_text())["status"] == "partial"
    with pytest.raises(N3FError, match="incomplete"):
        FeatureCache.open(folder)
    assert np.load(folder / "done.npy").sum() == 4

    seen = []

    def counting(batches, description, total):
        for batch in batches:
            seen.extend(batch)
            yield batch

    resumed = compute_features(small_scene, "effnet_lite0", {"batch_size": 2}, pca=8, root=tmp_path, progress=counting)
    assert sorted(seen) == [4, 5, 6, 7, 8, 9]
    assert not (folder / "raw.f16").exists() and not (folder / "done.npy").exists()
    fresh = compute_features(small_scene, "effnet_lite0", {"batch_size": 2}, pca=8, root=tmp_path / "fresh")
    assert np.array_equal(np.asarray(resumed.features()), np.asarray(fresh.features()))


def test_preview_pictures(small_scene, tmp_path):
    cache = compute_features(small_scene, "effnet_lite0", {}, pca=8, root=tmp_path, preview=True)
    pngs = sorted((cache.folder / "preview").glob("*.png"))
    assert (cache.folder / "preview" / "sheet.png") in pngs and len(pngs) >= 9


def test_cli_features_and_errors(demo_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "N3F_WEIGHTS": str(tmp_path / "none")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "n3f", *a], capture_output=True, text=True, env=env, timeout=600)  # noqa: E731
    out = run("features", "--scene", str(demo_dir), "--output", str(tmp_path), "--pca", "8", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "effnet_lite0" in out.stdout and "96 frames x 24x32 cells x 8 dims" in out.stdout
    bad = run("features", "--scene", str(demo_dir), "--teacher", "dino_vit_s8", "--output", str(tmp_path))
    assert bad.returncode == 2 and "dino_vits8" in bad.stderr and "Traceback" not in bad.stderr
    offline = run("features", "--scene", str(demo_dir), "--teacher", "dino_vits8", "--output", str(tmp_path))
    assert offline.returncode == 2 and "dino_deitsmall8_pretrain.pth" in offline.stderr and "Traceback" not in offline.stderr
    toomany = run("features", "--scene", str(demo_dir), "--pca", "500", "--output", str(tmp_path))
    assert toomany.returncode == 2 and "--pca" in toomany.stderr


def test_two_fits_building_one_cache_at_once_take_turns(small_scene, tmp_path):
    """A second process (here a thread) asking for a cache another is building waits for it and
    then reads it, instead of writing the same raw file at the same time."""
    import threading

    started, release = threading.Event(), threading.Event()

    def held(batches, description, total):
        for k, batch in enumerate(batches):
            if k == 1:
                started.set()
                assert release.wait(60)
            yield batch

    second_ran_the_teacher = []

    def second_progress(batches, description, total):
        second_ran_the_teacher.append(description)
        yield from batches

    results = {}
    first = threading.Thread(
        target=lambda: results.setdefault(
            "first", compute_features(small_scene, "effnet_lite0", {"batch_size": 2}, pca=8, root=tmp_path, progress=held)
        )
    )
    second = threading.Thread(
        target=lambda: results.setdefault(
            "second", compute_features(small_scene, "effnet_lite0", {"batch_size": 2}, pca=8, root=tmp_path, progress=second_progress)
        )
    )
    first.start()
    assert started.wait(60)
    second.start()
    second.join(timeout=2)
    assert second.is_alive()  # waiting for the first build
    release.set()
    first.join(120)
    second.join(120)
    assert not second_ran_the_teacher
    assert np.array_equal(np.asarray(results["first"].features()), np.asarray(results["second"].features()))
