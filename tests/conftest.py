"""Shared fixtures: one rendered demo scene per test session, in a temporary data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory) -> Path:
    """A fresh $N3F_DATA for the whole session, so tests never touch the user's data root."""
    root = tmp_path_factory.mktemp("n3f-data")
    old = os.environ.get("N3F_DATA")
    os.environ["N3F_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("N3F_DATA", None)
    else:
        os.environ["N3F_DATA"] = old


@pytest.fixture(scope="session")
def demo_dir(data_root) -> Path:
    """The catalog's demo/tabletop, rendered once (about 25 s on 2 cores)."""
    from n3f.scene.catalog import ensure_procedural, find_recipe

    return ensure_procedural(find_recipe("demo/tabletop"))


@pytest.fixture(scope="session")
def demo_scene(demo_dir):
    """The demo scene read through the catalog (normalised)."""
    from n3f.scene.catalog import load_scene

    return load_scene("demo/tabletop")


@pytest.fixture
def fern_dir() -> Path:
    """The shared LLFF fern capture; skips when ../shared/data is absent (a user's clone)."""
    path = SHARED_DATA / "llff_fern"
    if not (path / "poses_bounds.npy").is_file():
        pytest.skip(f"real test data not found at {path} (it lives in ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session")
def fitted_run(demo_dir, tmp_path_factory) -> Path:
    """A short fit of the demo at 64x48 (60 steps, about a minute): for queries, export and serving."""
    from n3f.pipeline.fit import FitConfig, fit

    config = FitConfig(
        scene="demo/tabletop", downscale=4, steps=60, target_samples=8192, eval_every=0, grid_resolution=48, grid_warmup=16, seed=3
    )
    return fit(config, output=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="session")
def epic_diff_dir(demo_scene, tmp_path_factory) -> Path:
    """The demo written in NeuralDiff's exact EPIC-Diff layout at 32x24 (frames/, meta.json with
    right-up-back poses and NeuralDiff's split rule, annotations/ of the test frames).

    Annotations are the demo's exact instance masks with every object as the foreground (EPIC-Diff
    marks all moving objects and hands as one foreground), 0/1 as NeuralDiff stores them; the last
    test frame's annotation is left empty, which NeuralDiff reads as "not annotated".
    """
    import dataclasses

    import cv2
    import numpy as np

    from n3f.scene.formats.epic_diff import epic_diff_split, write_epic_diff
    from n3f.scene.images import load_frame_image, load_frame_mask
    from n3f.scene.normalise import downscale_scene

    small = downscale_scene(demo_scene, 8)  # small enough for a whole pipeline run in a test
    staging = tmp_path_factory.mktemp("epic-diff-frames")
    train, val, test = epic_diff_split(list(range(len(small))))
    split_of = {**{i: "train" for i in train}, **{i: "val" for i in val}, **{i: "test" for i in test}}
    frames = []
    for i, f in enumerate(small.frames):
        image = staging / f.name
        cv2.imwrite(str(image), (load_frame_image(f)[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
        frames.append(dataclasses.replace(f, image_path=image, split=split_of[i]))
    scene = small.replace(frames=frames)
    annotations = {i: load_frame_mask(small.frames[i]) > 0 for i in test}
    annotations[test[-1]] = np.zeros_like(annotations[test[-1]])
    folder = tmp_path_factory.mktemp("EPIC-Diff") / "P00_00"
    write_epic_diff(scene, folder, images="copy", annotations=annotations)
    return folder


@pytest.fixture
def crash_and_resume(monkeypatch):
    """``run(config, output, crash_at, checkpoint)``: fit ``config`` under ``output`` until step
    ``crash_at`` is interrupted, check that the newest checkpoint is named ``checkpoint``, resume the
    run to the end; returns the run folder."""
    from n3f.pipeline import fit as fit_module

    def run(config, output: Path, crash_at: int, checkpoint: str) -> Path:
        original = fit_module.Trainer.train_step

        def crash(self):
            if self.step == crash_at:
                raise KeyboardInterrupt
            return original(self)

        monkeypatch.setattr(fit_module.Trainer, "train_step", crash)
        with pytest.raises(KeyboardInterrupt):
            fit_module.fit(config, output=output, quiet=True)
        monkeypatch.setattr(fit_module.Trainer, "train_step", original)
        folder = next(Path(output).glob("*/*/*"))
        assert fit_module.latest_checkpoint(folder).name == checkpoint
        fit_module.fit(config, resume=folder, quiet=True)
        return folder

    return run
