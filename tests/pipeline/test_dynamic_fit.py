"""The three-stream student (static, dynamic, actor) on a small demo/kitchen_dynamic.

The compositing pieces are checked against exact algebra; a short fit checks that the run folder,
checkpoints, renders of every stream, per-stream maps and the stream scores work end to end, and
that bad input (an NDC scene, frames without time, a checkpoint of another shape) fails clearly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from n3f.errors import N3FError
from n3f.pipeline.fit import FitConfig, Trainer, fit, latest_checkpoint, load_run, read_config
from n3f.render.encoding import HashGridConfig
from n3f.render.sampling import merge_packed
from n3f.render.volume import render_weight_from_density
from n3f.scene.catalog import Recipe, ensure_procedural, load_scene
from n3f.student.transient import STREAMS, SpaceTimeEncoding, TransientConfig, TransientStreams, mix_streams


@pytest.fixture(scope="module")
def kitchen_dir(data_root) -> Path:
    """demo/kitchen_dynamic at 64x48, 24 frames (3 held out), rendered through the catalog's code path."""
    recipe = Recipe(
        name="demo/kitchen_dynamic_fit",
        file=Path("kitchen_dynamic_fit.toml"),
        format="procedural",
        path="demo/kitchen_dynamic_fit",
        generator="kitchen_dynamic",
        options={"n_frames": 24, "width": 64, "height": 48},
    )
    return ensure_procedural(recipe)


def _config(scene: Path, **kw) -> FitConfig:
    base = dict(
        scene=str(scene),
        steps=20,
        target_samples=8192,
        march_steps=128,
        eval_every=0,
        checkpoint_every=10,
        grid_resolution=48,
        grid_warmup=8,
        seed=1,
        dynamic=True,
        actor_depth=0.3,
    )
    base.update(kw)
    return FitConfig(**base)


@pytest.fixture(scope="module")
def dynamic_run(kitchen_dir, tmp_path_factory) -> Path:
    return fit(_config(kitchen_dir), output=tmp_path_factory.mktemp("runs"), quiet=True)


def test_merged_sample_sets_integrate_the_sum_of_their_densities():
    g = torch.Generator().manual_seed(0)
    n_rays, k = 5, 7
    edges = torch.sort(torch.rand(n_rays, k + 1, generator=g) * 3, dim=1).values
    ts, te = edges[:, :-1].reshape(-1), edges[:, 1:].reshape(-1)
    ri = torch.arange(n_rays).repeat_interleave(k)
    s1, s2 = torch.rand(n_rays * k, generator=g) * 2, torch.rand(n_rays * k, generator=g) * 2
    # the same intervals twice, one density each: the merged transmittance after every pair of
    # samples is that of the summed density
    ri_m, ts_m, te_m, source = merge_packed((ri, ts, te), (ri, ts, te))
    assert torch.equal(ri_m, torch.sort(ri_m).values)
    sigma = torch.cat([s1, s2])[source]
    weights, trans, _ = render_weight_from_density(ts_m, te_m, sigma, ri_m)
    w_sum, trans_sum, _ = render_weight_from_density(ts, te, s1 + s2, ri)
    assert torch.allclose(trans[0::2], trans_sum, atol=1e-6)
    per_ray = torch.zeros(n_rays).index_add(0, ri_m, weights)
    assert torch.allclose(per_ray, torch.zeros(n_rays).index_add(0, ri, w_sum), atol=1e-6)
    # samples of every ray stay ordered by distance
    mids = (ts_m + te_m) / 2
    same_ray = ri_m[1:] == ri_m[:-1]
    assert bool((mids[1:][same_ray] >= mids[:-1][same_ray]).all())


def test_mixing_streams_weights_colour_by_density_and_shares_sum_to_one():
    sig = {"static": torch.tensor([1.0, 0.0, 3.0]), "dynamic": torch.tensor([3.0, 2.0, 0.0])}
    rgb = {"static": torch.tensor([[1.0, 0, 0]] * 3), "dynamic": torch.tensor([[0, 1.0, 0]] * 3)}
    parts = {k: {"sigma": sig[k], "rgb": rgb[k]} for k in sig}
    parts["dynamic"]["beta"] = torch.tensor([0.4, 0.2, 0.8])
    out = mix_streams(parts, features=False)
    assert torch.allclose(out["sigma"], torch.tensor([4.0, 2.0, 3.0]))
    assert torch.allclose(out["rgb"][0], torch.tensor([0.25, 0.75, 0.0]))
    assert torch.allclose(out["beta"][:, 0], torch.tensor([0.3, 0.2, 0.0]))
    shares = torch.cat([out[f"share/{s}"] for s in STREAMS], 1)
    assert torch.allclose(shares.sum(1), torch.ones(3))
    assert torch.equal(out["share/actor"], torch.zeros(3, 1))


def test_held_out_frames_get_embeddings_interpolated_in_time():
    config = TransientConfig(n_frames=5, feature_dim=4, embedding_dim=3)
    times = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    streams = TransientStreams(config, torch.tensor([[-1.0] * 3, [1.0] * 3]), train_ids=[0, 1, 3, 4], times=times)
    table = streams.dynamic.embedding.weight
    got = streams.embeddings(streams.dynamic, torch.tensor([2, 3, 0]))
    assert torch.allclose(got[0], (table[1] + table[3]) / 2)
    assert torch.equal(got[1], table[3]) and torch.equal(got[2], table[0])


def test_space_time_encoding_reads_each_grid_on_its_own_three_axes():
    torch.manual_seed(0)
    encoding = SpaceTimeEncoding(HashGridConfig(4, 2, 12, 4, 32), backend="torch")
    for grid in encoding.grids:
        torch.nn.init.uniform_(grid.table, -1.0, 1.0)
    u = torch.rand(50, 4)
    out = encoding(u)
    assert out.shape == (50, encoding.output_dim) == (50, 3 * 8)
    for k, (grid, axes) in enumerate(zip(encoding.grids, ((0, 1, 3), (0, 2, 3), (1, 2, 3)))):
        assert torch.equal(out[:, 8 * k : 8 * (k + 1)], grid(u[:, list(axes)]))
    # moving a point in z alone leaves the (x, y, t) grid's part as it was; moving it in time changes every part
    dz, dt = u.clone(), u.clone()
    dz[:, 2] = (dz[:, 2] + 0.37) % 1.0
    dt[:, 3] = (dt[:, 3] + 0.37) % 1.0
    assert torch.equal(encoding(dz)[:, :8], out[:, :8]) and not torch.allclose(encoding(dz)[:, 8:], out[:, 8:])
    assert all(not torch.allclose(encoding(dt)[:, 8 * k : 8 * (k + 1)], out[:, 8 * k : 8 * (k + 1)]) for k in range(3))


def test_the_dynamic_streams_time_grid_tells_frames_apart_without_their_embeddings():
    config = TransientConfig(
        n_frames=3, feature_dim=4, embedding_dim=3, grid=HashGridConfig(4, 2, 12, 4, 32), backend="torch", time_grid=True
    )
    streams = TransientStreams(config, torch.tensor([[-1.0] * 3, [1.0] * 3]), train_ids=[0, 1, 2], times=torch.tensor([10.0, 12.0, 14.0]))
    for grid in streams.dynamic.time_encoding.grids:
        torch.nn.init.uniform_(grid.table, -1.0, 1.0)
    with torch.no_grad():
        streams.dynamic.embedding.weight.zero_()  # every frame's embedding the same
        streams.actor.embedding.weight.zero_()
    assert torch.allclose(streams.unit_time(torch.tensor([0, 1, 2])), torch.tensor([0.0, 0.5, 1.0]))
    points = torch.rand(20, 3) * 2 - 1
    first = streams.dynamic_fields(points, torch.zeros(20, dtype=torch.long))
    assert not torch.allclose(first["rgb"], streams.dynamic_fields(points, torch.full((20,), 2))["rgb"])
    assert torch.equal(first["rgb"], streams.dynamic_fields(points, torch.zeros(20, dtype=torch.long))["rgb"])
    with pytest.raises(ValueError, match="frame times"):
        streams.dynamic(points, torch.zeros(20, 3))
    # the actor stream has no time grid: with equal embeddings, every frame looks the same to it
    actor = [streams.actor_fields(points * 0.1, torch.full((20,), i))["rgb"] for i in (0, 2)]
    assert streams.actor.time_encoding is None and torch.equal(actor[0], actor[1])


def test_time_frequencies_tell_frames_apart_without_their_embeddings():
    """With every embedding equal, a dynamic stream given ``time_frequencies`` still sees each
    frame's time (sines and cosines of 2^k pi t); without them every frame looks the same."""
    config = TransientConfig(
        n_frames=3, feature_dim=4, embedding_dim=3, grid=HashGridConfig(4, 2, 12, 4, 32), backend="torch", time_frequencies=3
    )
    streams = TransientStreams(config, torch.tensor([[-1.0] * 3, [1.0] * 3]), train_ids=[0, 1, 2], times=torch.tensor([0.0, 1.0, 2.0]))
    assert streams.dynamic.trunk[0].in_features == config.grid.output_dim + 3 + 6
    with torch.no_grad():
        streams.dynamic.embedding.weight.zero_()
    points = torch.rand(20, 3) * 2 - 1
    rgb = [streams.dynamic_fields(points, torch.full((20,), i))["rgb"] for i in (0, 1, 2)]
    assert not torch.allclose(rgb[0], rgb[1]) and not torch.allclose(rgb[1], rgb[2])
    with pytest.raises(ValueError, match="frame times"):
        streams.dynamic(points, torch.zeros(20, 3))
    plain = TransientStreams(
        dataclasses.replace(config, time_frequencies=0), torch.tensor([[-1.0] * 3, [1.0] * 3]), [0, 1, 2], torch.tensor([0.0, 1.0, 2.0])
    )
    with torch.no_grad():
        plain.dynamic.embedding.weight.zero_()
    assert torch.equal(plain.dynamic_fields(points, torch.full((20,), 0))["rgb"], plain.dynamic_fields(points, torch.full((20,), 2))["rgb"])


def test_runs_from_before_the_time_grid_read_without_it(tmp_path):
    from n3f.config import dumps_toml
    from n3f.pipeline.fit import read_config, write_config

    write_config(tmp_path, FitConfig(dynamic_time_grid=True), {})
    assert read_config(tmp_path).dynamic_time_grid is True
    doc = {k: v for k, v in dataclasses.asdict(FitConfig()).items() if k not in ("dynamic_time_grid", "teacher_options", "dynamic")}
    (tmp_path / "config.toml").write_text(dumps_toml({"schema_version": 1, **doc}))
    assert read_config(tmp_path).dynamic_time_grid is False
    # and runs from before the detector's blob filter drew rays from all of its flags
    old = ("motion_sample_opening", "motion_gate_opening")
    doc = {k: v for k, v in dataclasses.asdict(FitConfig(motion_after=5)).items() if k not in (*old, "teacher_options", "dynamic")}
    (tmp_path / "config.toml").write_text(dumps_toml({"schema_version": 1, **doc}))
    config = read_config(tmp_path)
    assert config.motion_after == 5 and config.motion_sample_opening == 0 and config.motion_gate_opening == 0


def test_a_dynamic_fit_writes_its_streams_and_renders_every_one(dynamic_run):
    state = torch.load(latest_checkpoint(dynamic_run), weights_only=False)
    assert state["step"] == 20 and "transient" in state
    assert state["transient_config"]["n_frames"] == 24
    assert "dynamic = true" in (dynamic_run / "config.toml").read_text()
    assert read_config(dynamic_run).background == "black"  # FitConfig's default
    assert read_config(dynamic_run).feature_rendering == "sample" and state["student_config"]["feature_rendering"] == "sample"
    trainer = load_run(dynamic_run)
    frame = trainer.scene.frames[trainer.eval_ids[0]]
    xy = torch.tensor([[10.5, 20.5], [50.5, 40.5], [32.5, 24.5]])
    r = trainer.render_pixels(frame, xy, streams="all")
    shares = torch.stack([r[f"share/{s}"] for s in STREAMS], 1)
    assert torch.allclose(shares.sum(1), r["opacity"], atol=1e-5)
    assert r["feature"].shape == (3, trainer.model.config.feature_dim) and r["beta"].shape == (3,)
    static = trainer.render_pixels(frame, xy)
    assert "share/static" not in static and static["rgb"].shape == (3, 3)


def test_per_stream_maps_and_stream_scores(dynamic_run):
    from n3f.pipeline.maps import student_maps
    from n3f.pipeline.streams_eval import evaluate_streams

    trainer = load_run(dynamic_run)
    maps = student_maps(trainer, stride=8, streams="all")
    assert maps.folder.name.endswith("-surface-all") and maps.streams == "all"
    static_maps = student_maps(trainer, stride=8)
    assert static_maps.streams == "static" and static_maps.folder != maps.folder
    # the two maps differ where the hand is (lower right of every frame), not only by noise
    assert not np.array_equal(np.asarray(maps.array("rgb")), np.asarray(static_maps.array("rgb")))
    scene = trainer.scene
    result = evaluate_streams(trainer, scene.split_indices("test")[:1], scene.split_indices("train")[:1], stride=8)
    assert set(result["iou"]) == {"held_out", "train"}
    assert set(result["iou"]["train"]) == {"dynamic", "actor", "transient"}
    assert set(result["moving_claimed_by"]["held_out"]) == {"dynamic", "actor", "transient"}
    assert 5 < result["static_pixel_psnr"] < 60


def test_streams_all_on_a_static_run_is_a_clear_error(fitted_run):
    from n3f.cli import main

    trainer = load_run(fitted_run)
    with pytest.raises(N3FError, match="--dynamic"):
        trainer.render_pixels(trainer.scene.frames[0], torch.zeros(1, 2) + 5, streams="all")
    with pytest.raises(SystemExit) as exc:
        main(["query", "--run", str(fitted_run), "--frame", "0", "--point", "10,10", "--streams", "all", "--quiet"])
    assert exc.value.code == 2


def test_dynamic_needs_a_bounded_scene_with_frame_times(kitchen_dir, fern_dir, tmp_path):
    from n3f.pipeline.features import compute_features

    scene = load_scene(kitchen_dir)
    cache = compute_features(scene, None, {"device": "cpu"}, pca=8, seed=0)
    timeless = dataclasses.replace(scene, frames=[dataclasses.replace(f, time=None) for f in scene.frames])
    with pytest.raises(N3FError, match="no time"):
        Trainer(_config(kitchen_dir), timeless, cache, tmp_path)
    fern = load_scene(fern_dir, downscale=8)
    fern_cache = compute_features(fern, None, {"device": "cpu"}, pca=8, seed=0)
    with pytest.raises(N3FError, match="forward-facing"):
        Trainer(_config(fern_dir), fern, fern_cache, tmp_path)


def test_resume_with_embeddings_of_another_shape_fails_clearly(dynamic_run, kitchen_dir, tmp_path):
    from n3f.pipeline.features import FeatureCache

    state = torch.load(latest_checkpoint(dynamic_run), weights_only=False)
    state["transient"]["dynamic.embedding.weight"] = state["transient"]["dynamic.embedding.weight"][:20]
    bad = tmp_path / "step-0000020.pt"
    torch.save(state, bad)
    trainer = load_run(dynamic_run)
    cache = FeatureCache.open(Path(state["feature_cache"]))
    fresh = Trainer(_config(kitchen_dir), trainer.scene, cache, tmp_path)
    with pytest.raises(N3FError, match="frame embeddings"):
        fresh.load_checkpoint(bad)
    static = Trainer(_config(kitchen_dir, dynamic=False), trainer.scene, cache, tmp_path)
    with pytest.raises(N3FError, match="transient streams"):
        static.load_checkpoint(latest_checkpoint(dynamic_run))


def test_static_alone_render_is_what_the_static_streams_choice_renders(dynamic_run):
    """With the transient streams silenced, render_streams' ``static/*`` channels and its
    composite both equal the static field rendered by itself (``streams="static"``)."""
    from n3f.render.rays import pixel_rays
    from n3f.student.render_streams import render_streams

    trainer = load_run(dynamic_run)
    for stream in (trainer.transient.dynamic, trainer.transient.actor):
        stream.density_head.bias.data.fill_(-1e4)  # density exp(-1e4) = 0 everywhere
    frame = trainer.scene.frames[trainer.eval_ids[0]]
    xy = torch.tensor([[x + 0.5, y + 0.5] for y in range(0, 48, 6) for x in range(0, 64, 6)])
    origins, dirs = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy, None)
    ids = torch.full((len(xy),), trainer.frame_index(frame), dtype=torch.long)
    w2c = trainer._w2c(torch.tensor(frame.c2w, dtype=torch.float32)[None]).expand(len(xy), -1, -1)
    with torch.no_grad():
        out = render_streams(
            trainer.model, trainer.transient, origins, dirs, ids, w2c, trainer.space, trainer.grid, trainer.step_size, static_alone=True
        )
        alone = trainer.render_pixels(frame, xy)
    assert float(alone["opacity"].mean()) > 0.5  # the comparison is not between empty renders
    assert torch.allclose(out["static/rgb"], alone["rgb"], atol=1e-4)
    assert torch.allclose(out["static/feature"], alone["feature"], atol=1e-4)
    assert torch.allclose(out["static/opacity"][:, 0], alone["opacity"], atol=1e-4)
    assert torch.allclose(out["rgb"], out["static/rgb"], atol=1e-5)


def test_a_background_shows_through_all_streams_and_the_static_field_alone_by_their_transmittance(dynamic_run):
    """render_streams' colours over a background are its colours over black plus the background
    times what each render leaves transparent; features stay over zero."""
    from n3f.student.render_streams import render_streams

    trainer = load_run(dynamic_run)
    origins, dirs, ids, w2c = _batch(trainer)
    background = torch.rand(len(origins), 3, generator=torch.Generator().manual_seed(0))
    args = (trainer.model, trainer.transient, origins, dirs, ids, w2c, trainer.space, trainer.grid, trainer.step_size)
    with torch.no_grad():
        black = render_streams(*args, static_alone=True)
        over = render_streams(*args, static_alone=True, background=background)
    for prefix in ("", "static/"):
        leftover = 1 - black[f"{prefix}opacity"]
        assert float(leftover.max()) > 0.01  # some light gets through, so the check has teeth
        assert torch.allclose(over[f"{prefix}rgb"], black[f"{prefix}rgb"] + leftover * background, atol=1e-5)
        assert torch.equal(over[f"{prefix}feature"], black[f"{prefix}feature"])


def test_static_distortion_is_the_distortion_of_the_static_fields_own_weights_and_trains_it(dynamic_run, kitchen_dir, tmp_path):
    """``static_distortion`` returns, per ray, mip-NeRF 360's distortion of the static field's own
    weights over render_streams' samples (with the transient streams silenced: the samples the
    static field's transmittance keeps beyond the actor's range). A three-stream fit with
    ``distortion_weight`` trains differently from one without."""
    from n3f.render.volume import distortion_loss, render_weight_from_density
    from n3f.student.render_streams import render_streams

    trainer = load_run(dynamic_run)
    for stream in (trainer.transient.dynamic, trainer.transient.actor):
        stream.density_head.bias.data.fill_(-1e4)  # density exp(-1e4) = 0 everywhere
    origins, dirs, ids, w2c = _batch(trainer)
    args = (trainer.model, trainer.transient, origins, dirs, ids, w2c, trainer.space, trainer.grid, trainer.step_size)
    with torch.no_grad():
        out = render_streams(*args, static_alone=True, static_distortion=True)["static/distortion"]
        o, d, t_max = trainer.space.to_space(origins, dirs)
        ri, ts, te = trainer.space.march(o, d, t_max, trainer.grid, trainer.step_size, near=trainer.transient.config.actor_depth)
        sigma = trainer.model.density(trainer.space.points(o[ri], d[ri], (ts + te) / 2))
        _, trans, alphas = render_weight_from_density(ts, te, sigma, ri)
        keep = (trans > 1e-4) & (alphas > 1e-6)
        weights, _, _ = render_weight_from_density(ts[keep], te[keep], sigma[keep], ri[keep])
        expected = distortion_loss(weights, ts[keep], te[keep], ri[keep], len(origins))
    assert out.shape == (len(origins),) and float(out.max()) > 0
    assert torch.allclose(out, expected, rtol=1e-4, atol=1e-7)

    with pytest.raises(N3FError, match="static_alone_weight"):
        fit(_config(kitchen_dir, distortion_weight=0.01, static_alone_weight=0.0), output=tmp_path / "refused", quiet=True)
    assert not (tmp_path / "refused").exists()
    run = fit(_config(kitchen_dir, distortion_weight=0.01), output=tmp_path, quiet=True)
    assert read_config(run).distortion_weight == 0.01
    a = torch.load(latest_checkpoint(run), weights_only=False)
    b = torch.load(latest_checkpoint(dynamic_run), weights_only=False)
    assert not torch.equal(a["model"]["encoding.table"], b["model"]["encoding.table"])


def test_a_three_stream_fit_over_a_random_background_records_it_and_trains_differently(dynamic_run, kitchen_dir, tmp_path):
    run = fit(_config(kitchen_dir, background="random"), output=tmp_path, quiet=True)
    assert read_config(run).background == "random"
    a = torch.load(latest_checkpoint(run), weights_only=False)
    b = torch.load(latest_checkpoint(dynamic_run), weights_only=False)
    assert not torch.equal(a["model"]["encoding.table"], b["model"]["encoding.table"])


def test_a_contracted_three_stream_fit_renders_every_stream(kitchen_dir, tmp_path):
    """EPIC-KITCHENS scenes are dynamic and unbounded: the streams march the contracted space."""
    from n3f.render.spaces import ContractedSpace

    run = fit(_config(kitchen_dir, contraction="sphere", steps=10), output=tmp_path, quiet=True)
    trainer = load_run(run)
    assert isinstance(trainer.space, ContractedSpace) and trainer.transient is not None
    frame = trainer.scene.frames[trainer.eval_ids[0]]
    r = trainer.render_pixels(frame, torch.tensor([[10.5, 20.5], [50.5, 40.5]]), streams="all")
    shares = torch.stack([r[f"share/{s}"] for s in STREAMS], 1)
    assert torch.allclose(shares.sum(1), r["opacity"], atol=1e-5) and torch.isfinite(r["depth"]).all()


def test_static_alone_loss_weights_and_gradients():
    """Unclaimed pixels count fully, claimed ones by what is left; the robust weight halves at
    ``scale``; the loss gives the shares (the transient streams' claims) no gradient."""
    from n3f.student.transient import static_alone_loss

    target = torch.zeros(3, 3)
    rgb = torch.tensor([[0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.5, 0.5, 0.5]], requires_grad=True)
    dyn = torch.tensor([[0.0], [0.75], [0.0]], requires_grad=True)
    actor = torch.zeros(3, 1, requires_grad=True)
    feature = torch.ones(3, 2, requires_grad=True)
    out = {"static/rgb": rgb, "static/feature": feature, "share/dynamic": dyn, "share/actor": actor}
    colour, feat = static_alone_loss(out, target, torch.zeros(3, 2), torch.tensor([1.0, 3.0]), scale=0.0)
    assert torch.isclose(colour, torch.tensor((0.01 + 0.25 * 0.01 + 0.25) / 3))
    assert torch.isclose(feat, torch.tensor((1 + 0.25 + 1) * 4 / 6))
    colour, _ = static_alone_loss(out, target, torch.zeros(3, 2), torch.ones(2), scale=0.1)
    # r^2 = 0.01 (= scale^2: weight 1/2) on the first two pixels, 0.25 (weight 1/26) on the last
    assert torch.isclose(colour, torch.tensor((0.01 / 2 + 0.25 * 0.01 / 2 + 0.25 / 26) / 3))
    colour.backward()
    assert dyn.grad is None and actor.grad is None
    assert rgb.grad is not None and bool((rgb.grad != 0).all())


def _batch(trainer, stride: int = 6):
    """Rays of every ``stride``-th pixel of the first held-out frame: origins, dirs, frame ids, w2c."""
    from n3f.render.rays import pixel_rays

    frame = trainer.scene.frames[trainer.eval_ids[0]]
    xy = torch.tensor([[x + 0.5, y + 0.5] for y in range(0, 48, stride) for x in range(0, 64, stride)])
    origins, dirs = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy, None)
    ids = torch.full((len(xy),), trainer.frame_index(frame), dtype=torch.long)
    w2c = trainer._w2c(torch.tensor(frame.c2w, dtype=torch.float32)[None]).expand(len(xy), -1, -1)
    return origins, dirs, ids, w2c


def test_static_gate_cuts_the_static_fields_gradient_ray_by_ray(dynamic_run):
    """A gate of 1 on the first rays and 0 on the rest leaves every rendered value as it was, gives
    the static field exactly the gradient of the first rays' loss alone, and the transient streams
    the gradient of the whole loss; the gate sees the static field's own render."""
    from n3f.student.render_streams import render_streams

    trainer = load_run(dynamic_run)
    origins, dirs, ids, w2c = _batch(trainer)
    n, half = len(origins), len(origins) // 2
    seen = {}

    def gate(alone):
        seen["rgb"] = alone["rgb"]
        return (torch.arange(n) < half).float()

    def run(rays, gate_fn=None):
        for p in (*trainer.model.parameters(), *trainer.transient.parameters()):
            p.grad = None
        out = render_streams(
            trainer.model, trainer.transient, *(t[rays] for t in (origins, dirs, ids, w2c)),
            trainer.space, trainer.grid, trainer.step_size, static_alone=True, static_gate=gate_fn,
        )  # fmt: skip
        (out["rgb"].square().sum() + out["feature"].square().sum() + out["static/rgb"].sum()).backward()
        grads = [p.grad.clone() if p.grad is not None else None for p in (*trainer.model.parameters(), *trainer.transient.parameters())]
        return out, grads

    everything = torch.arange(n)
    gated, gated_grads = run(everything, gate)
    plain, plain_grads = run(everything)
    first, first_grads = run(everything[:half])
    for key in ("rgb", "feature", "static/rgb", "share/dynamic"):
        assert torch.equal(gated[key], plain[key])
    assert torch.allclose(seen["rgb"], plain["static/rgb"], atol=1e-6)
    n_static = len(list(trainer.model.parameters()))
    static_pairs = list(zip(gated_grads[:n_static], first_grads[:n_static], plain_grads[:n_static]))
    assert any(f is not None and float(f.abs().max()) > 0 for _, f, _ in static_pairs)
    for g, f, p in static_pairs:
        if f is None:
            continue
        assert torch.allclose(g, f, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(g, p, atol=1e-5, rtol=1e-4) or float(p.abs().max()) == 0
    for g, p in zip(gated_grads[n_static:], plain_grads[n_static:]):
        if p is not None:
            assert torch.allclose(g, p, atol=1e-6, rtol=1e-5)


def test_static_trim_keeps_a_fitted_static_field_off_pixels_it_misses(kitchen_dir, tmp_path):
    """With a trim no pixel passes from the first step, the static field stays exactly at its
    initialisation while the transient streams learn; a trim every pixel passes changes nothing
    against no trim at all."""
    from n3f.pipeline.features import compute_features

    scene = load_scene(kitchen_dir)
    cache = compute_features(scene, None, {"device": "cpu"}, pca=8, seed=0)

    def trained(**kw):
        trainer = Trainer(_config(kitchen_dir, **kw), scene, cache, tmp_path)
        before = [p.detach().clone() for p in (*trainer.model.parameters(), *trainer.transient.parameters())]
        for _ in range(3):
            trainer.train_step()
        after = [p.detach().clone() for p in (*trainer.model.parameters(), *trainer.transient.parameters())]
        return len(list(trainer.model.parameters())), before, after

    n_static, before, after = trained(static_trim=1e-12, static_trim_floor=0.0, static_trim_after=0)
    assert all(torch.equal(b, a) for b, a in zip(before[:n_static], after[:n_static]))
    assert any(not torch.equal(b, a) for b, a in zip(before[n_static:], after[n_static:]))
    _, _, untrimmed = trained()
    _, _, passed = trained(static_trim=1e9, static_trim_after=0)
    assert all(torch.equal(a, b) for a, b in zip(untrimmed, passed))
    assert not all(torch.equal(a, b) for a, b in zip(untrimmed[:n_static], after[:n_static]))


def test_a_three_stream_fit_resumes_exactly(dynamic_run, kitchen_dir, tmp_path, crash_and_resume):
    """Interrupted at step 13 and resumed from its step-10 checkpoint, a three-stream fit ends with
    exactly the uninterrupted run's static field, streams and embeddings (on as many threads as the
    machine has: the embeddings' backward must sum in a fixed order)."""
    run = crash_and_resume(_config(kitchen_dir), tmp_path, 13, "step-0000010.pt")
    a = torch.load(latest_checkpoint(run), weights_only=False)
    b = torch.load(latest_checkpoint(dynamic_run), weights_only=False)
    assert a["step"] == b["step"] == 20
    for part in ("model", "transient"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_share_entropy_is_zero_for_decided_samples_and_peaks_where_the_skew_says():
    from n3f.student.transient import share_entropy

    assert torch.allclose(share_entropy(torch.tensor([0.0, 1.0])), torch.zeros(2), atol=1e-4)
    assert torch.allclose(share_entropy(torch.tensor([0.5])), torch.tensor([np.log(2.0)], dtype=torch.float32))
    peak = torch.tensor([0.5 ** (1 / 2)])
    assert torch.allclose(share_entropy(peak, skew=2.0), torch.tensor([np.log(2.0)], dtype=torch.float32))
    # skewed: a share of 0.5 is already past the peak on the static side, 0.9 still far from it
    assert float(share_entropy(torch.tensor([0.5]), 2.0)) < np.log(2.0) - 0.1
    share = torch.tensor([0.3, 0.7], requires_grad=True)
    share_entropy(share).sum().backward()
    assert share.grad[0] > 0 > share.grad[1]  # descending the entropy pushes each share to its own side


def test_dynamic_entropy_is_the_weighted_entropy_of_the_visible_world_samples(dynamic_run):
    """``entropy_skew`` adds ``dynamic_entropy`` without changing any rendered value; it vanishes
    when the dynamic stream is empty and its gradient reaches the dynamic stream's density."""
    from n3f.student.render_streams import render_streams

    trainer = load_run(dynamic_run)
    origins, dirs, ids, w2c = _batch(trainer)

    def run(skew):
        return render_streams(
            trainer.model, trainer.transient, origins, dirs, ids, w2c, trainer.space, trainer.grid, trainer.step_size, entropy_skew=skew
        )

    plain, with_entropy = run(None), run(1.0)
    assert "dynamic_entropy" not in plain
    for key in ("rgb", "feature", "share/dynamic", "opacity"):
        assert torch.equal(plain[key], with_entropy[key])
    value = with_entropy["dynamic_entropy"]
    assert 0 < float(value.detach()) <= np.log(2.0) * float(with_entropy["opacity"].detach().max())
    value.backward()
    assert float(trainer.transient.dynamic.density_head.weight.grad.abs().max()) > 0
    assert trainer.transient.actor.density_head.weight.grad is None  # the actor's samples are not counted
    with torch.no_grad():
        trainer.transient.dynamic.density_head.bias.fill_(-60.0)
    assert float(run(1.0)["dynamic_entropy"]) < 1e-4


def test_without_frame_appearance_only_the_dynamic_density_depends_on_the_frame():
    config = TransientConfig(n_frames=2, feature_dim=4, embedding_dim=3, grid=HashGridConfig(4, 2, 12, 4, 32), backend="torch")
    box, times = torch.tensor([[-1.0] * 3, [1.0] * 3]), torch.tensor([0.0, 1.0])
    points = torch.rand(50, 3) * 2 - 1
    for appearance in (True, False):
        torch.manual_seed(0)
        streams = TransientStreams(dataclasses.replace(config, frame_appearance=appearance), box, [0, 1], times)
        a, b = (streams.dynamic_fields(points, torch.full((50,), i)) for i in (0, 1))
        assert not torch.allclose(a["sigma"], b["sigma"])
        for key in ("rgb", "feature", "beta"):
            assert torch.equal(a[key], b[key]) is (not appearance)
        # the actor keeps NeuralDiff's frame appearance either way
        assert not torch.equal(*(streams.actor_fields(points, torch.full((50,), i))["rgb"] for i in (0, 1)))


def test_stream_scores_of_an_oracle_are_exact(kitchen_dir):
    """A stand-in trainer whose render gives each pixel wholly to the stream its exact label names
    (the moving object's pixels to the actor, to check which stream holds them is reported): every
    IoU is 1 but the dynamic stream's, and the moving pixels are claimed by the actor alone."""
    from types import SimpleNamespace

    from n3f.pipeline.streams_eval import evaluate_streams
    from n3f.scene.dynamic import DYNAMIC, STATIC, stream_labels
    from n3f.scene.images import load_frame_image, load_frame_mask

    scene = load_scene(kitchen_dir)
    dynamic = scene.metadata["dynamic"]

    def render_pixels(frame, xy, features=False, streams="static"):
        col, row = (xy[:, 0] - 0.5).long().numpy(), (xy[:, 1] - 0.5).long().numpy()
        labels = stream_labels(load_frame_mask(frame), dynamic)[row, col]
        out = {"rgb": torch.from_numpy(load_frame_image(frame)[row, col])}
        static = torch.from_numpy(labels == STATIC).float()
        out.update({"share/static": static, "share/dynamic": torch.zeros_like(static), "share/actor": 1 - static})
        return out

    trainer = SimpleNamespace(scene=scene, transient=object(), render_pixels=render_pixels)
    frames = [i for i in range(len(scene.frames)) if (stream_labels(load_frame_mask(scene.frames[i]), dynamic) == DYNAMIC).any()]
    result = evaluate_streams(trainer, frames[:2], frames[2:4], stride=1)
    assert result["static_pixel_psnr"] > 90  # the truth itself, on the static pixels
    for split in ("held_out", "train"):
        assert result["iou"][split]["transient"] == 1.0 and result["iou"][split]["dynamic"] == 0.0
        assert result["moving_claimed_by"][split] == {"dynamic": 0.0, "actor": 1.0, "transient": 1.0}
    from n3f.pipeline.evaluate import markdown_table

    empty = {"mAP": 0.5, "per_object": {}}
    report = {"scene": scene.name, "step": 1, "teacher": "t", "psnr": 20.0, "retrieval": {"teacher": empty, "student": empty}}
    text = markdown_table({**report, "streams": result})
    assert "| moving objects' pixels claimed by | held-out frames | training frames |" in text
    assert "| actor | 1.000 | 1.000 |" in text and "| dynamic | 0.000 | 0.000 |" in text


def test_a_fit_with_the_entropy_and_without_frame_appearance_records_and_reloads_both(kitchen_dir, tmp_path):
    run = fit(
        _config(kitchen_dir, steps=4, checkpoint_every=4, dynamic_entropy=0.01, dynamic_frame_appearance=False), output=tmp_path, quiet=True
    )
    trainer = load_run(run)
    assert trainer.config.dynamic_entropy == 0.01 and trainer.config.dynamic_frame_appearance is False
    assert trainer.transient.config.frame_appearance is False and trainer.transient.dynamic.appearance_trunk is not None
    assert trainer.transient.actor.appearance_trunk is None
    assert trainer.step == 4


def test_a_fit_with_the_motion_detector_logs_its_flags_and_resumes_exactly(kitchen_dir, tmp_path, crash_and_resume, monkeypatch):
    """The detector runs at steps 4 and 10, its counts go to metrics.jsonl and its flags into the
    checkpoints; interrupted at step 8 and resumed from step 6 (the step-10 detection runs again
    after the resume), the fit ends with exactly the uninterrupted fit's weights and flags."""
    import json

    from n3f.pipeline import motion

    # A 4-step field is fog near the cameras: no ray's surface holds half its weight, and the fog
    # hides every point from the neighbouring frames. Score every pixel, occluded or not, here.
    monkeypatch.setattr(motion, "MIN_SURFACE_SHARE", 0.0)
    scores = motion.motion_scores
    monkeypatch.setattr(motion, "motion_scores", lambda *a, **k: scores(*a, **k, occlusion_tolerance=1.0))
    config = _config(kitchen_dir, steps=12, checkpoint_every=6, motion_after=4, motion_every=6, motion_threshold=0.02, motion_stride=2)
    straight = fit(config, output=tmp_path / "straight", quiet=True)
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    detections = [r for r in rows if "motion/cells" in r]
    assert [r["step"] for r in detections] == [4, 10]
    assert all(r["motion/cells"] == 21 * 24 * 32 and 0 < r["motion/sample_cells"] <= r["motion/gate_cells"] for r in detections)
    resumed = crash_and_resume(config, tmp_path / "resumed", 8, "step-0000006.pt")
    a = torch.load(latest_checkpoint(resumed), weights_only=False)
    b = torch.load(latest_checkpoint(straight), weights_only=False)
    assert int(b["moving_pixels"]["detected_at"]) == 10
    for part in ("model", "transient", "moving_pixels"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in b[part])


def test_grown_flags_hold_the_plain_flags_and_more(kitchen_dir, tmp_path, monkeypatch):
    """``motion_grow_threshold``: the step-4 detection (read from the step-6 checkpoint, the same
    field in both fits) keeps every cell the plain detection flags, adds cells scoring between the
    two thresholds, and logs the larger counts."""
    import json

    from n3f.pipeline import motion

    monkeypatch.setattr(motion, "MIN_SURFACE_SHARE", 0.0)  # as in the test above: a 4-step field is fog
    scores = motion.motion_scores
    monkeypatch.setattr(motion, "motion_scores", lambda *a, **k: scores(*a, **k, occlusion_tolerance=1.0))
    options = dict(steps=6, checkpoint_every=6, motion_after=4, motion_every=0, motion_threshold=0.03, motion_stride=2)
    runs = {
        name: fit(_config(kitchen_dir, **options, **extra), output=tmp_path / name, quiet=True)
        for name, extra in (("plain", {}), ("grown", {"motion_grow_threshold": 0.015}))
    }
    flags = {name: torch.load(run / "checkpoints" / "step-0000006.pt", weights_only=False)["moving_pixels"] for name, run in runs.items()}
    counts = {
        name: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "motion/cells" in line]
        for name, run in runs.items()
    }
    for k, logged in (("sample", "motion/sample_cells"), ("gate", "motion/gate_cells")):
        plain, grown = flags["plain"][k], flags["grown"][k]
        assert (grown | ~plain).all() and grown.sum() > plain.sum()
        assert [c[logged] for c in counts["grown"]] == [int(grown.sum())] and counts["plain"][0][logged] == int(plain.sum())


def _flagged_shares(run: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """A fitted run's detector ``sample`` flags, the dynamic and actor shares (n_flagged,) of the
    render of all streams at the first pixel (top left) of each flagged cell, and whether each
    flagged cell looks fixed to the camera (n_flagged,) bool, as the loaded run works it out."""
    from n3f.pipeline.fit import batch_rays
    from n3f.student.render_streams import render_streams

    trainer = load_run(run)
    flags = trainer.moving.sample.clone()
    rows, cy, cx = flags.nonzero(as_tuple=True)
    s = trainer.moving.stride
    xy = torch.stack([cx * s, cy * s], -1).float() + 0.5
    origins, dirs = batch_rays(trainer.data, rows, xy)
    ids = torch.as_tensor(trainer.train_ids, dtype=torch.long)[rows]
    with torch.no_grad():
        out = render_streams(
            trainer.model, trainer.transient, origins, dirs, ids, trainer._w2c(trainer.data.c2w[rows]),
            trainer.space, trainer.grid, trainer.step_size, features=False,
        )  # fmt: skip
    shares = {k: out[f"share/{k}"][:, 0] for k in ("dynamic", "actor")}
    return flags, shares, trainer.moving.camera_fixed[rows, cy, cx]


def _flagged_transient_share(run: Path) -> tuple[torch.Tensor, float]:
    """A fitted run's detector ``sample`` flags and the mean transient share (dynamic + actor) of
    the render of all streams at the first pixel (top left) of each flagged cell."""
    flags, shares, _ = _flagged_shares(run)
    return flags, float((shares["dynamic"] + shares["actor"]).mean())


def test_the_share_loss_hands_the_flagged_pixels_to_the_transient_streams(kitchen_dir, tmp_path, monkeypatch):
    """``motion_share_weight``: two fits alike up to the step-4 detection (same flags); with the
    loss on, the transient streams hold more of the flagged cells' pixels 12 steps later."""
    from n3f.pipeline import motion

    monkeypatch.setattr(motion, "MIN_SURFACE_SHARE", 0.0)  # as in the tests above: a 4-step field is fog
    scores = motion.motion_scores
    monkeypatch.setattr(motion, "motion_scores", lambda *a, **k: scores(*a, **k, occlusion_tolerance=1.0))
    options = dict(steps=16, checkpoint_every=16, motion_after=4, motion_every=0, motion_threshold=0.03, motion_stride=2)
    (plain_flags, plain), (charged_flags, charged) = (
        _flagged_transient_share(fit(_config(kitchen_dir, **options, motion_share_weight=w), output=tmp_path / str(w), quiet=True))
        for w in (0.0, 1.0)
    )
    assert torch.equal(plain_flags, charged_flags) and plain_flags.any()
    assert charged > plain + 0.3, (plain, charged)


def test_off_the_cells_fixed_to_the_camera_the_share_loss_hands_the_flags_to_the_dynamic_stream(kitchen_dir, tmp_path, monkeypatch):
    """``motion_camera_fixed``: two fits with the share loss, alike up to the step-4 detection
    (same flags). With the option, the flagged cells that do not look fixed to the camera (the
    loaded run works the map out again from the images, as the fit did) are held less by the actor
    and more by the dynamic stream 12 steps later."""
    from n3f.pipeline import motion

    monkeypatch.setattr(motion, "MIN_SURFACE_SHARE", 0.0)  # as in the tests above: a 4-step field is fog
    scores = motion.motion_scores
    monkeypatch.setattr(motion, "motion_scores", lambda *a, **k: scores(*a, **k, occlusion_tolerance=1.0))
    options = dict(steps=16, checkpoint_every=16, motion_after=4, motion_every=0, motion_threshold=0.03, motion_stride=2)
    options["motion_share_weight"] = 1.0
    (plain_flags, plain, plain_fixed), (flags, fixed_run, fixed) = (
        _flagged_shares(fit(_config(kitchen_dir, **options, motion_camera_fixed=t), output=tmp_path / str(t), quiet=True))
        for t in (0.0, 0.1)
    )
    assert torch.equal(plain_flags, flags) and plain_fixed.all()  # off: every cell may be the actor's
    moving = ~fixed
    assert moving.sum() > 0.5 * len(moving), (int(moving.sum()), len(moving))
    actor = (float(plain["actor"][moving].mean()), float(fixed_run["actor"][moving].mean()))
    dynamic = (float(plain["dynamic"][moving].mean()), float(fixed_run["dynamic"][moving].mean()))
    print(f"\nflagged cells not fixed to the camera: {int(moving.sum())} of {len(moving)}; actor {actor}, dynamic {dynamic}")
    assert actor[1] < actor[0] - 0.5 and dynamic[1] > dynamic[0] + 0.5  # actor 1.00 -> 0.03, dynamic 0.00 -> 0.92


def test_the_motion_detector_needs_transient_streams_and_its_flags_on_resume(kitchen_dir, tmp_path):
    refusals = (
        ({"dynamic": False}, "transient streams"),
        ({"motion_sampling": 1.5}, "share of the rays"),
        ({"motion_grow_threshold": 0.2}, "below motion_threshold"),
        ({"motion_quantile": 0.7}, "to 0.5"),
        ({"motion_span": 4, "motion_view_step": 8}, "motion_view_step <= motion_span"),
        ({"motion_sample_opening": -1}, "cell counts"),
        ({"motion_share_weight": -0.1}, "loss weight"),
        ({"motion_share_streams": "actor"}, "transient or dynamic"),
        ({"motion_after": 0, "motion_share_weight": 0.1}, "set motion_after too"),
        ({"motion_static_agrees": 1.0}, "below which the static field explains a cell"),
        ({"motion_camera_fixed": 1.0}, "within which a cell looks fixed to the camera"),
        ({"motion_camera_fixed": 0.1}, "set motion_share_weight above 0 with motion_share_streams = transient"),
        ({"motion_camera_fixed": 0.1, "motion_share_weight": 0.1, "motion_share_streams": "dynamic"}, "or drop it"),
    )
    for bad, message in refusals:
        with pytest.raises(N3FError, match=message):
            fit(_config(kitchen_dir, **{"motion_after": 5, **bad}), output=tmp_path / "refused", quiet=True)
    assert not (tmp_path / "refused").exists()  # refused before any run folder exists
    run = fit(_config(kitchen_dir, steps=10), output=tmp_path / "plain", quiet=True)
    config = read_config(run)
    (run / "config.toml").write_text((run / "config.toml").read_text().replace("motion_after = 0", "motion_after = 5"))
    assert read_config(run).motion_after == 5 and config.motion_after == 0
    with pytest.raises(N3FError, match="no moving-pixel flags"):
        load_run(run)


def test_the_detector_in_a_fit_flags_the_sponge_when_the_static_field_is_exact(dynamic_run, tmp_path):
    """With the static field's render replaced by the exact depth of the scene without the sponge
    and the hand (a perfect static field) and the actor's share by the hand's exact mask, the flags
    the fit would use hold most of the sponge, few static pixels and none of the hand. With
    ``static_agrees`` the static pixels the (perfect) static field renders go unflagged; the sponge,
    which hides what the static field renders behind it, stays flagged."""
    from n3f.pipeline.motion import detect_moving_pixels
    from n3f.scene.dynamic import ACTOR, DYNAMIC, KitchenDynamicConfig, render_kitchen_dynamic, stream_labels
    from n3f.scene.formats.native import read_native
    from n3f.scene.images import load_frame_depth, load_frame_image, load_frame_mask

    trainer = load_run(dynamic_run)
    scene = trainer.scene
    options = dict(n_frames=24, width=64, height=48)
    static = read_native(render_kitchen_dynamic(tmp_path / "static", KitchenDynamicConfig(**options, exclude=("sponge", "hand"))))
    by_path = {str(f.image_path): i for i, f in enumerate(scene.frames)}
    dynamic = scene.metadata["dynamic"]

    def pixels(xy):
        return (xy[:, 1].long()).numpy(), (xy[:, 0].long()).numpy()

    def actor_opacity(frame, xy):
        return torch.from_numpy((stream_labels(load_frame_mask(frame), dynamic) == ACTOR)[pixels(xy)].astype(np.float32))

    def render_pixels(frame, xy, features=True, surface_window=None):
        i = by_path[str(frame.image_path)]
        rows, cols = pixels(xy)
        # the static render's depth file, in this scene's normalised units
        z = load_frame_depth(dataclasses.replace(frame, depth_path=static.frames[i].depth_path))[rows, cols]
        points = frame.unproject(xy.numpy().astype(np.float64), z)
        t = np.linalg.norm(points - frame.c2w[:3, 3], axis=1)
        rgb = torch.from_numpy(load_frame_image(static.frames[i])[rows, cols].astype(np.float32))
        return {"surface/depth": torch.from_numpy(t.astype(np.float32)), "surface/share": torch.ones(len(xy)), "rgb": rgb}

    trainer.render_pixels, trainer.actor_opacity = render_pixels, actor_opacity
    sample, gate, counts = detect_moving_pixels(trainer, stride=1, threshold=0.05, gate_dilation=1)
    labels = np.stack([stream_labels(load_frame_mask(scene.frames[i]), dynamic) for i in trainer.train_ids])
    sponge, hand = labels == DYNAMIC, labels == ACTOR
    s, g = sample.numpy(), gate.numpy()
    # 21 small frames: neighbours 8 and 16 frames away only, and antialiased edges; a neighbour's
    # hand pixels do not count as seeing a point, so fewer sponge cells have two views (0.37)
    assert s[sponge].mean() > 0.33 and s[~sponge & ~hand].mean() < 0.06 and not s[hand].any()
    assert (g | ~s).all() and g[sponge].mean() > s[sponge].mean()
    assert counts == {"cells": s.size, "sample_cells": int(s.sum()), "gate_cells": int(g.sum()), "explained_cells": 0}

    sample, gate, counts = detect_moving_pixels(trainer, stride=1, threshold=0.05, gate_dilation=1, static_agrees=0.05)
    s2, g2 = sample.numpy(), gate.numpy()
    assert (s2 <= s).all() and (g2 <= g).all()
    assert s2[~sponge & ~hand].sum() < 0.2 * s[~sponge & ~hand].sum() and s2[sponge].mean() > 0.9 * s[sponge].mean()
    assert 0 < counts["explained_cells"] < s.size and counts["sample_cells"] == int(s2.sum())


def test_the_actor_alone_covers_what_it_holds_in_the_render_of_all_streams(dynamic_run):
    """The actor stream's own opacity on a frame's rays is its share of the render of all streams
    (the actor lies in front of the rest, so its weights are the same in both)."""
    trainer = load_run(dynamic_run)
    frame = trainer.scene.frames[trainer.train_ids[3]]
    jj, ii = np.mgrid[0 : frame.height : 2, 0 : frame.width : 2]
    xy = torch.tensor(np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1), dtype=torch.float32)
    # a 20-step actor is thin everywhere; thicken it so that its opacity varies across the frame
    trainer.transient.actor.config = dataclasses.replace(trainer.transient.actor.config, density_bias=-2.5)
    opacity = trainer.actor_opacity(frame, xy)
    out = trainer.render_pixels(frame, xy, features=False, streams="all")
    assert float(opacity.max() - opacity.min()) > 0.1  # neither empty nor opaque everywhere
    torch.testing.assert_close(opacity, out["share/actor"], atol=1e-5, rtol=1e-5)
