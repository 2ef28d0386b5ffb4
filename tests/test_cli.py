"""The `n3f` command: help, JSON output, and errors (exit code 2, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest


def run_n3f(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "n3f", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


@pytest.mark.parametrize("args", [["--help"], ["scenes", "--help"], ["inspect", "--help"]])
def test_help(args):
    out = run_n3f(*args)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_help_does_not_import_heavy_libraries():
    code = "import sys; from n3f.cli import app; print(sorted(m for m in ('torch','open3d','pycolmap','timm','cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_scenes_json_lists_catalog():
    out = run_n3f("scenes", "--json")
    assert out.returncode == 0, out.stderr
    names = {s["name"]: s for s in json.loads(out.stdout)["scenes"]}
    expected = {"demo/tabletop", "demo/kitchen_dynamic", "llff/fern"} | {
        f"epic_kitchens/{v}" for v in "P01_01 P03_04 P04_01 P05_01 P06_03 P08_01 P09_02 P13_03 P16_01 P21_01".split()
    }
    assert expected <= set(names)
    assert "epic_kitchens/P01" in names["epic_kitchens/P01_01"]["aliases"]


def test_inspect_json_on_a_folder(demo_scene, demo_dir):
    out = run_n3f("inspect", "--scene", str(demo_dir), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["frames"]) == len(demo_scene)
    first = doc["frames"][0]
    assert set(first) >= {"file", "K", "c2w", "width", "height", "split"}
    np.testing.assert_allclose(first["c2w"], demo_scene.frames[0].c2w, atol=1e-12)


def test_inspect_writes_contact_sheet(demo_dir, tmp_path):
    out = run_n3f("inspect", "--scene", "demo/tabletop", "--output", str(tmp_path), "--quiet")
    assert out.returncode == 0, out.stderr
    sheet = tmp_path / "demo_tabletop-contact-sheet.png"
    assert sheet.is_file()
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.width > 1000 and im.height > 400
    assert "96: 84 train, 0 val, 12 test" in out.stdout
    assert "0 0000.png te" in out.stdout and "95 0095.png tr" in out.stdout  # the frame list, by index


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "--scene", "demo/tabeltop"], "demo/tabletop"),
        (["inspect", "--scene", "/nonexistent/folder/xyz"], "unknown scene"),
        (["inspect"], "--scene"),
    ],
)
def test_errors_exit_2_without_traceback(args, message):
    out = run_n3f(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_fit_refuses_an_error_sampling_share_outside_0_1_before_writing(tmp_path):
    out = run_n3f("fit", "--scene", "demo/tabletop", "--error-sampling", "1.5", "--output", str(tmp_path / "runs"), "--quiet")
    assert out.returncode == 2 and "between 0 and 1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
