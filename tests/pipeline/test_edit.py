"""Editing by query: the selection rule is exact at its extremes, and removal reveals what lies
behind an object (against the demo rendered without it)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from n3f.errors import N3FError
from n3f.pipeline.edit import EditedField, parse_colour


def test_colours_parse():
    assert parse_colour("255,0,51") == (1.0, 0.0, 0.2)
    assert parse_colour("#ff0033") == (1.0, 0.0, 0.2)
    for bad in ("red", "1,2", "300,0,0", "#ff00"):
        with pytest.raises(N3FError):
            parse_colour(bad)


@pytest.fixture(scope="module")
def trainer(fitted_run):
    from n3f.pipeline.fit import load_run

    return load_run(fitted_run)


def test_selection_extremes_are_exact(trainer):
    frame = trainer.scene.frames[0]
    plain = trainer.render_frame(frame)
    vec = np.zeros(trainer.model.config.feature_dim, np.float32)
    vec[0] = 1
    nothing = trainer.render_frame(frame, field=EditedField(trainer.model, vec, 2.0, "remove"))
    assert torch.equal(nothing["rgb"], plain["rgb"]) and torch.equal(nothing["opacity"], plain["opacity"])
    gone = trainer.render_frame(frame, field=EditedField(trainer.model, vec, -2.0, "remove"))
    assert float(gone["opacity"].max()) == 0.0
    magenta = trainer.render_frame(frame, field=EditedField(trainer.model, vec, -2.0, "recolour", (1.0, 0.0, 1.0)))
    expected = plain["opacity"][..., None] * torch.tensor([1.0, 0.0, 1.0])
    assert torch.allclose(magenta["rgb"], expected, atol=1e-5)
    assert torch.equal(magenta["opacity"], plain["opacity"])  # recolouring keeps the geometry


def test_selection_stays_inside_the_region(trainer):
    """Everything is similar (threshold -2), but only samples inside the region are removed."""
    frame = trainer.scene.frames[0]
    plain = trainer.render_frame(frame)
    vec = np.zeros(trainer.model.config.feature_dim, np.float32)
    vec[0] = 1
    elsewhere = torch.tensor([[50.0, 50, 50], [51, 51, 51]])
    untouched = trainer.render_frame(frame, field=EditedField(trainer.model, vec, -2.0, "remove", region=elsewhere))
    assert torch.equal(untouched["opacity"], plain["opacity"])
    box = trainer.space.aabb
    lower_half = torch.stack([box[0], (box[0] + box[1]) / 2])
    half = trainer.render_frame(frame, field=EditedField(trainer.model, vec, -2.0, "remove", region=lower_half))
    assert float(half["opacity"].max()) > 0 and float((plain["opacity"] - half["opacity"]).max()) > 0.01


def test_render_command_edits(fitted_run, tmp_path):
    def run(*args):
        cmd = [sys.executable, "-m", "n3f", "render", "--run", str(fitted_run), "--quiet", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=900)

    r = run("--frames", "0", "--recolour", "255,0,255", "--frame", "0", "--point", "30,30", "--output", str(tmp_path / "paint"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "paint" / "0000.png").is_file() and "recolour: samples with similarity >" in r.stdout
    r = run("--frames", "0", "--remove", "--recolour", "1,2,3", "--frame", "0", "--point", "3,3")
    assert r.returncode == 2 and "choose one edit" in r.stderr
    r = run("--frames", "0", "--remove")
    assert r.returncode == 2 and "needs the object's query" in r.stderr
