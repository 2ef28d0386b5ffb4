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
