"""Bad input: every error a user can cause says what is wrong, and nothing is left half-written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from n3f.errors import ImageReadError, N3FError, SceneError
from n3f.scene.catalog import load_scene
from n3f.scene.formats.colmap import write_colmap
from n3f.scene.formats.detect import read_scene_folder
from n3f.scene.formats.llff import write_llff
from n3f.scene.images import load_frame_image


def _copy_demo(demo_dir, tmp_path):
    dst = tmp_path / "scene"
    shutil.copytree(demo_dir, dst)
    return dst


def test_unknown_scene_lists_nearest_names():
    with pytest.raises(SceneError) as err:
        load_scene("demo/tabeltop")
    assert "demo/tabletop" in str(err.value) and "n3f scenes" in str(err.value)
    with pytest.raises(SceneError) as err:
        load_scene("epic_kitchens/P01_1")
    assert "epic_kitchens/P01_01" in str(err.value)


def test_missing_catalog_data_says_where_to_put_it(monkeypatch, tmp_path):
    from n3f.scene import catalog

    monkeypatch.setattr(catalog.Recipe, "candidates", lambda self, seed=None: [tmp_path / "nowhere"])
    with pytest.raises(SceneError) as err:
        load_scene("epic_kitchens/P01")
    msg = str(err.value)
    assert "data not found" in msg and str(tmp_path / "nowhere") in msg and "NeuralDiff" in msg


def test_missing_image_names_the_file(demo_dir, tmp_path):
    folder = _copy_demo(demo_dir, tmp_path)
    (folder / "images" / "0007.png").unlink()
    with pytest.raises(SceneError, match="0007.png"):
        read_scene_folder(folder)


def test_unreadable_image_names_the_file(demo_dir, tmp_path):
    folder = _copy_demo(demo_dir, tmp_path)
    (folder / "images" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    scene = read_scene_folder(folder)
    with pytest.raises(ImageReadError, match="0003.png"):
        load_frame_image(scene.frames[3])
    (folder / "images" / "0004.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="0004.png"):
        load_frame_image(scene.frames[4])


def test_colmap_without_registered_images(tmp_path):
    import pycolmap

    model = tmp_path / "c" / "sparse" / "0"
    model.mkdir(parents=True)
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=64, height=48, params=[50, 50, 32, 24], camera_id=1))
    rec.write_binary(str(model))
    with pytest.raises(SceneError, match="no registered images"):
        read_scene_folder(tmp_path / "c")


def test_colmap_mismatched_image_list(demo_scene, tmp_path):
    write_colmap(demo_scene, tmp_path / "c", images="copy")
    (tmp_path / "c" / "images" / demo_scene.frames[2].name).unlink()
    with pytest.raises(SceneError, match="mismatched image lists"):
        read_scene_folder(tmp_path / "c")


def test_colmap_unsupported_model_and_corrupt_file(demo_scene, tmp_path):
    model = write_colmap(demo_scene, tmp_path / "c", binary=False)
    text = (model / "cameras.txt").read_text().replace("PINHOLE", "FOV", 1)
    (model / "cameras.txt").write_text(text.replace("\n1 FOV 256 192 ", "\n1 FOV 256 192 0.5 "))
    with pytest.raises(SceneError):
        read_scene_folder(tmp_path / "c")
    (model / "cameras.txt").unlink()
    (model / "cameras.bin").write_bytes(b"\x01\x02")
    with pytest.raises(SceneError, match="COLMAP"):
        read_scene_folder(tmp_path / "c")


def test_llff_image_count_mismatch(demo_scene, tmp_path):
    write_llff(demo_scene, tmp_path / "l", images="copy")
    sorted((tmp_path / "l" / "images").iterdir())[-1].unlink()
    with pytest.raises(SceneError, match="mismatched image lists"):
        read_scene_folder(tmp_path / "l")


def test_bad_json_inputs(demo_scene, tmp_path):
    from n3f.scene.formats.epic_diff import write_epic_diff
    from n3f.scene.formats.transforms import write_transforms

    write_transforms(demo_scene, tmp_path / "t")
    doc = json.loads((tmp_path / "t" / "transforms.json").read_text())
    doc["frames"][1]["transform_matrix"][0][0] = float("nan")
    (tmp_path / "t" / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneError, match="NaN"):
        read_scene_folder(tmp_path / "t")
    doc["frames"][1]["transform_matrix"] = (np.eye(4) * 2).tolist()
    (tmp_path / "t" / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneError, match="not a rotation"):
        read_scene_folder(tmp_path / "t")

    write_epic_diff(demo_scene, tmp_path / "e")
    meta = json.loads((tmp_path / "e" / "meta.json").read_text())
    del meta["poses"]["5"]
    (tmp_path / "e" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match="frame id 5 .* 'poses'"):
        read_scene_folder(tmp_path / "e")
    (tmp_path / "e" / "meta.json").write_text("{ not json")
    with pytest.raises(SceneError, match="not valid JSON"):
        read_scene_folder(tmp_path / "e")


def test_unknown_folder_format(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(SceneError, match="cannot tell the format"):
        read_scene_folder(tmp_path / "x")


def test_render_never_overwrites_and_leaves_nothing_on_failure(demo_dir, tmp_path, monkeypatch):
    from n3f.scene import synthetic
    from n3f.scene.synthetic import TabletopConfig, render_tabletop

    with pytest.raises(N3FError, match="already exists"):
        render_tabletop(demo_dir, TabletopConfig(n_frames=2, width=32, height=24))

    calls = {"n": 0}
    original = synthetic.TabletopRenderer.render

    def failing(self, K, c2w):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash mid-render")
        return original(self, K, c2w)

    monkeypatch.setattr(synthetic.TabletopRenderer, "render", failing)
    out = tmp_path / "demo"
    with pytest.raises(RuntimeError):
        render_tabletop(out, TabletopConfig(n_frames=5, width=32, height=24))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
