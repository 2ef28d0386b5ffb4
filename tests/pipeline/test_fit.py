"""A short fit on the demo scene: it learns, writes the run folder, resumes exactly, fails cleanly."""

from __future__ import annotations

import json

import pytest
import torch

from n3f.errors import N3FError
from n3f.pipeline import fit as fit_module
from n3f.pipeline.fit import FitConfig, fit, latest_checkpoint


def _config(**kw):
    base = dict(
        scene="demo/tabletop",
        downscale=4,
        steps=40,
        target_samples=8192,
        eval_every=5,
        eval_frames=2,
        checkpoint_every=20,
        grid_resolution=48,
        grid_warmup=16,
        seed=3,
    )
    base.update(kw)
    return FitConfig(**base)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def short_run(demo_dir, tmp_path_factory):
    return fit(_config(), output=tmp_path_factory.mktemp("runs"), quiet=True)


def test_fit_learns_and_writes_the_run_folder(short_run):
    run = short_run
    assert (run / "config.toml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000020.pt", "step-0000040.pt"]
    evals = [r for r in _metrics(run) if "eval/psnr" in r]
    assert [r["step"] for r in evals] == list(range(5, 45, 5))
    assert evals[-1]["eval/psnr"] > evals[0]["eval/psnr"] + 2, [round(r["eval/psnr"], 2) for r in evals]
    assert {"eval/ssim", "eval/feature_cosine"} <= set(evals[-1])
    renders = sorted((run / "renders" / "step-0000040").glob("*.png"))
    assert len(renders) == 12  # every held-out frame at the end
    assert run.parts[-3:-1] == ("demo_tabletop", "effnet_lite0")
    state = torch.load(run / "checkpoints" / "step-0000040.pt", weights_only=False)
    assert state["step"] == 40 and "effnet_lite0" in state["teacher"]


def test_a_run_loads_at_an_earlier_checkpoint_and_names_the_steps_it_has_when_asked_for_another(short_run):
    from n3f.errors import N3FError
    from n3f.pipeline.fit import load_run

    assert load_run(short_run).step == 40
    earlier = load_run(short_run, step=20)
    saved = torch.load(short_run / "checkpoints" / "step-0000020.pt", weights_only=False)["model"]
    assert earlier.step == 20
    assert all(torch.equal(earlier.model.state_dict()[k].cpu(), v.cpu()) for k, v in saved.items())
    with pytest.raises(N3FError, match=r"no checkpoint at step 30; it has steps \[20, 40\]"):
        load_run(short_run, step=30)


def test_resume_ends_with_exactly_the_metrics_of_an_uninterrupted_run(short_run, tmp_path, crash_and_resume):
    run = crash_and_resume(_config(), tmp_path, 27, "step-0000020.pt")
    assert _metrics(run) == _metrics(short_run)
    a = torch.load(run / "checkpoints" / "step-0000040.pt", weights_only=False)["model"]
    b = torch.load(short_run / "checkpoints" / "step-0000040.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fit_drawing_from_the_error_map_resumes_exactly(demo_dir, tmp_path, crash_and_resume):
    whole = fit(_config(error_sampling=0.5, eval_every=0), output=tmp_path / "whole", quiet=True)
    state = torch.load(latest_checkpoint(whole), weights_only=False)
    error = state["error_map"]["error"]
    assert error.shape[1:] == (6, 8)  # 48 x 64 pixels in 8-pixel tiles
    assert (error < 0.25).float().mean() > 0.2  # visited tiles fell from the starting 0.25 towards the fit's error
    run = crash_and_resume(_config(error_sampling=0.5, eval_every=0), tmp_path / "cut", 27, "step-0000020.pt")
    assert _metrics(run) == _metrics(whole)
    resumed = torch.load(latest_checkpoint(run), weights_only=False)
    assert torch.equal(resumed["error_map"]["error"], error)
    assert all(torch.equal(resumed["model"][k], state["model"][k]) for k in state["model"])


def test_error_sampling_must_be_a_share_and_a_refused_run_leaves_no_folder(demo_dir, tmp_path):
    with pytest.raises(N3FError, match="between 0 and 1"):
        fit(_config(error_sampling=1.5), output=tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())


def test_diverging_loss_stops_with_a_clear_error(tmp_path, monkeypatch, demo_dir):
    original = fit_module.Trainer.train_step

    def nan_after_22(self):
        if self.step == 22:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return original(self)

    monkeypatch.setattr(fit_module.Trainer, "train_step", nan_after_22)
    with pytest.raises(N3FError) as err:
        fit(_config(), output=tmp_path, quiet=True)
    assert "diverged at step 23" in str(err.value) and "step-0000020.pt" in str(err.value)
    run = next(tmp_path.glob("*/*/*"))
    torch.load(latest_checkpoint(run), weights_only=False)  # the last good checkpoint is intact


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(N3FError, match="not a run folder"):
        fit(_config(), resume=tmp_path, quiet=True)


def test_render_command_and_view_consistency(short_run, tmp_path):
    import os
    import subprocess
    import sys

    from n3f.pipeline.consistency import surface_pairs, view_consistency
    from n3f.pipeline.fit import load_run

    def run(*args):
        cmd = [sys.executable, "-m", "n3f", "render", "--run", str(short_run), *args, "--quiet"]
        return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=600)

    out = run("--frames", "0,0001.png", "--output", str(tmp_path / "frames"))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["0000.png", "0001.png"]
    out = run("--path", "orbit", "--n-frames", "3", "--output", str(tmp_path / "orbit"))
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp_path / "orbit").iterdir())
    assert names[:3] == ["orbit.mp4", "orbit_0000.png", "orbit_0001.png"]
    bad = run("--frames", "400")
    assert bad.returncode == 2 and "out of range" in bad.stderr

    trainer = load_run(short_run)
    a, b = trainer.scene.frames[0], trainer.scene.frames[2]
    xy_a, xy_b = surface_pairs(a, b)
    assert len(xy_a) > 20 and xy_a.shape == xy_b.shape
    result = view_consistency(trainer, [(0, 2)])
    assert -1 <= result["teacher"] <= 1 and -1 <= result["student"] <= 1 and result["pairs"] == len(xy_a)


def test_feature_loss_weights_whiten_the_channels():
    import numpy as np

    rng = np.random.default_rng(0)
    std = np.array([2.0, 1.0, 0.5, 0.25])
    feats = rng.normal(size=(5000, 4)) * std
    plain = fit_module.feature_loss_weights(feats, 0.0)
    assert torch.equal(plain, torch.ones(4))
    white = fit_module.feature_loss_weights(feats, 1.0).numpy()
    var = feats.var(0)
    # weights are 1/var normalised to mean 1: the weighted variances are all equal
    np.testing.assert_allclose(white * var, np.full(4, np.mean(white * var)), rtol=1e-5)
    np.testing.assert_allclose(white.mean(), 1.0, rtol=1e-6)
    assert white[3] / white[0] == pytest.approx(var[0] / var[3], rel=1e-5)


def test_learning_rate_warms_up_then_decays_exponentially_to_its_final_share():
    from n3f.pipeline.fit import scheduled_learning_rate

    assert scheduled_learning_rate(1e-2, 1.0, 700, 1000) == 1e-2  # constant, the default
    assert scheduled_learning_rate(1e-2, 0.1, 0, 1000) == pytest.approx(1e-2)
    assert scheduled_learning_rate(1e-2, 0.1, 500, 1000) == pytest.approx(1e-2 * 0.1**0.5)
    assert scheduled_learning_rate(1e-2, 0.1, 1000, 1000) == pytest.approx(1e-3)
    assert scheduled_learning_rate(1e-2, 1.0, 0, 1000, warmup=100) == pytest.approx(1e-4)  # warm-up from 1%
    assert scheduled_learning_rate(1e-2, 1.0, 50, 1000, warmup=100) == pytest.approx(1e-2 * (0.01 + 0.99 * 0.5))
    assert scheduled_learning_rate(1e-2, 1.0, 100, 1000, warmup=100) == 1e-2


def test_a_fit_with_a_decaying_learning_rate_sets_it_and_resumes_exactly(demo_dir, tmp_path, crash_and_resume):
    config = _config(lr_final=0.1, eval_every=0)
    whole = fit(config, output=tmp_path / "whole", quiet=True)
    state = torch.load(latest_checkpoint(whole), weights_only=False)
    assert [g["lr"] for opt in state["optimizers"] for g in opt["param_groups"]] == [pytest.approx(1e-2 * 0.1 ** (39 / 40))] * 2
    run = crash_and_resume(config, tmp_path / "cut", 27, "step-0000020.pt")
    assert _metrics(run) == _metrics(whole)
    resumed = torch.load(latest_checkpoint(run), weights_only=False)["model"]
    assert all(torch.equal(resumed[k], state["model"][k]) for k in state["model"])


def test_a_fit_over_a_random_background_records_it_and_resumes_exactly(demo_dir, tmp_path, crash_and_resume):
    from n3f.pipeline.fit import read_config

    config = _config(background="random", eval_every=0)
    whole = fit(config, output=tmp_path / "whole", quiet=True)
    assert read_config(whole).background == "random"
    black = fit(_config(eval_every=0), output=tmp_path / "black", quiet=True)
    assert read_config(black).background == "black"
    a = torch.load(latest_checkpoint(whole), weights_only=False)["model"]
    b = torch.load(latest_checkpoint(black), weights_only=False)["model"]
    assert not torch.equal(a["encoding.table"], b["encoding.table"])  # the colours behind the rays reached the fit
    run = crash_and_resume(config, tmp_path / "cut", 27, "step-0000020.pt")
    assert _metrics(run) == _metrics(whole)
    resumed = torch.load(latest_checkpoint(run), weights_only=False)["model"]
    assert all(torch.equal(resumed[k], a[k]) for k in a)


def test_an_unknown_background_is_refused_before_anything_is_written(demo_dir, tmp_path):
    with pytest.raises(N3FError, match="black or random"):
        fit(_config(background="grey"), output=tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())  # a refused run leaves no folder


def _read_without(tmp_path, option: str, **settings) -> FitConfig:
    """The config of a run written with ``settings`` whose config.toml then lost ``option``
    (a run from before the option), read back."""
    from n3f.config import dumps_toml, load_toml
    from n3f.pipeline.fit import read_config, write_config

    write_config(tmp_path, _config(**settings), {})
    doc = load_toml(tmp_path / "config.toml")
    del doc[option]
    (tmp_path / "config.toml").write_text(dumps_toml(doc))
    return read_config(tmp_path)


def test_runs_from_before_the_background_option_read_as_black(tmp_path):
    assert _read_without(tmp_path, "background", background="random").background == "black"


def test_a_fit_rendering_features_per_ray_records_it_resumes_exactly_and_renders_alike(short_run, tmp_path, crash_and_resume):
    from n3f.pipeline.fit import load_run, read_config

    config = _config(feature_rendering="ray", eval_every=0)
    whole = fit(config, output=tmp_path / "whole", quiet=True)
    assert read_config(whole).feature_rendering == "ray"
    state = torch.load(latest_checkpoint(whole), weights_only=False)
    assert state["student_config"]["feature_rendering"] == "ray"
    sample = torch.load(short_run / "checkpoints" / "step-0000040.pt", weights_only=False)["model"]
    assert not torch.equal(state["model"]["feature_head.0.weight"], sample["feature_head.0.weight"])
    run = crash_and_resume(config, tmp_path / "cut", 27, "step-0000020.pt")
    assert _metrics(run) == _metrics(whole)
    # a loaded run renders its features per ray: the head applied to the mean code, as in training
    trainer = load_run(whole)
    assert trainer.model.config.feature_rendering == "ray"
    frame = trainer.scene.frames[trainer.eval_ids[0]]
    xy = torch.tensor([[10.5, 12.5], [30.5, 20.5]])
    r = trainer.render_pixels(frame, xy)
    assert r["feature"].shape == (2, trainer.model.config.feature_dim)
    from n3f.render.rays import pixel_rays
    from n3f.render.render import render_rays

    o, d = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy)
    with torch.no_grad():
        codes = render_rays(trainer.field_fn(), o, d, trainer.space, trainer.grid, trainer.step_size, density_fn=trainer.model.density)
        expected = codes["opacity"] * trainer.model.feature_head(codes["feature"] / codes["opacity"])
    assert codes["feature"].shape == (2, trainer.model.config.code_dim)
    torch.testing.assert_close(r["feature"], expected, atol=1e-5, rtol=1e-5)


def test_feature_rendering_auto_means_ray_for_static_fits_and_bad_choices_are_refused(demo_dir, tmp_path):
    from n3f.pipeline.fit import read_config, resolve_feature_rendering

    assert resolve_feature_rendering(_config(feature_rendering="auto")) == "ray"
    assert resolve_feature_rendering(_config(feature_rendering="auto", dynamic=True)) == "sample"
    with pytest.raises(N3FError, match="needs a static fit"):
        resolve_feature_rendering(_config(feature_rendering="ray", dynamic=True))
    with pytest.raises(N3FError, match="auto, sample, ray"):
        fit(_config(feature_rendering="deferred"), output=tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())  # a refused run leaves no folder
    run = fit(_config(feature_rendering="auto", steps=2, eval_every=0), output=tmp_path, quiet=True)
    assert read_config(run).feature_rendering == "ray"  # the config records what auto meant


def test_runs_from_before_the_feature_rendering_option_read_as_per_sample(tmp_path):
    from n3f.student.field import StudentConfig

    assert _read_without(tmp_path, "feature_rendering", feature_rendering="ray").feature_rendering == "sample"
    legacy = StudentConfig().to_dict()
    del legacy["feature_rendering"]
    assert StudentConfig.from_dict(legacy).feature_rendering == "sample"


def test_a_contracted_fit_records_its_space_resumes_exactly_and_loads(demo_dir, tmp_path, crash_and_resume):
    from n3f.pipeline.fit import load_run, read_config
    from n3f.render.spaces import ContractedSpace

    config = _config(contraction="sphere", eval_every=0, steps=24, checkpoint_every=12)
    whole = fit(config, output=tmp_path / "whole", quiet=True)
    assert read_config(whole).contraction == "sphere"
    state = torch.load(latest_checkpoint(whole), weights_only=False)
    assert state["space"]["kind"] == "contracted"
    run = crash_and_resume(config, tmp_path / "cut", 17, "step-0000012.pt")
    assert _metrics(run) == _metrics(whole)
    trainer = load_run(whole)
    assert isinstance(trainer.space, ContractedSpace)
    torch.testing.assert_close(trainer.space.inner, torch.tensor(state["space"]["inner"]))
    frame = trainer.scene.frames[trainer.eval_ids[0]]
    r = trainer.render_pixels(frame, torch.tensor([[10.5, 12.5], [30.5, 20.5]]))
    assert torch.isfinite(r["depth"]).all() and (r["depth"] > 0).all()


def test_contraction_auto_follows_the_scene_and_bad_choices_are_refused(demo_scene, tmp_path):
    import dataclasses

    from n3f.pipeline.fit import read_config, resolve_contraction

    assert resolve_contraction(_config(contraction="auto"), demo_scene) == "none"
    assert resolve_contraction(_config(contraction="auto"), dataclasses.replace(demo_scene, contraction="sphere")) == "sphere"
    with pytest.raises(N3FError, match="forward-facing"):
        resolve_contraction(_config(contraction="sphere"), dataclasses.replace(demo_scene, contraction="ndc"))
    with pytest.raises(N3FError, match="auto, none, sphere"):
        fit(_config(contraction="ball"), output=tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())  # a refused run leaves no folder
    run = fit(_config(contraction="auto", steps=2, eval_every=0), output=tmp_path, quiet=True)
    assert read_config(run).contraction == "none"  # the config records what auto meant


def test_runs_from_before_the_contraction_option_read_as_their_box(tmp_path):
    assert _read_without(tmp_path, "contraction", contraction="sphere").contraction == "none"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks how a GPU run loads on a machine without one")
def test_a_run_fitted_on_a_gpu_loads_on_the_cpu(short_run, tmp_path):
    import shutil

    from n3f.config import dumps_toml, load_toml
    from n3f.pipeline.fit import load_run

    run = shutil.copytree(short_run, tmp_path / "gpu_run")
    doc = load_toml(run / "config.toml")
    doc["device"] = "cuda"
    (run / "config.toml").write_text(dumps_toml(doc))
    trainer = load_run(run)
    assert trainer.device == torch.device("cpu")
    frame = trainer.scene.frames[trainer.eval_ids[0]]
    assert torch.isfinite(trainer.render_pixels(frame, torch.tensor([[10.5, 12.5]]))["rgb"]).all()
