"""DINO/DINOv2 dense features against timm itself (random weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import teachers
from teachers import TeacherError


@pytest.fixture(scope="module")
def vits16():
    return teachers.create("dino_vits16", pretrained=False, seed=1)


@pytest.mark.parametrize("layer", [-1, 5])
def test_stride_equal_to_patch_gives_timm_patch_tokens_exactly(vits16, layer):
    images = torch.rand(2, 3, 96, 128)
    ours = teachers.create("dino_vits16", pretrained=False, seed=1, layer=layer)(images)
    x = vits16.prepare(images)
    ref = vits16.model.forward_intermediates(x, indices=[layer % 12], norm=False, output_fmt="NCHW", intermediates_only=True)[0]
    assert torch.equal(ours, ref)


def test_norm_matches_forward_features(vits16):
    images = torch.rand(1, 3, 64, 80)
    ours = teachers.create("dino_vits16", pretrained=False, seed=1, norm=True)(images)
    x = vits16.prepare(images)
    tokens = vits16.model.forward_features(x)[:, vits16.model.num_prefix_tokens :]
    assert torch.equal(ours, tokens.transpose(1, 2).reshape(1, 384, 4, 5))


@pytest.mark.parametrize(
    "name, stride, size, grid",
    [("dino_vits8", 4, (64, 96), (15, 23)), ("dino_vits16", 8, (64, 96), (7, 11)), ("dinov2_vits14", 7, (56, 70), (7, 9))],
)
def test_smaller_stride_gives_denser_grid(name, stride, size, grid):
    teacher = teachers.create(name, pretrained=False, stride=stride)
    out = teacher(torch.rand(1, 3, *size))
    assert tuple(out.shape[-2:]) == grid
    geo = teacher.geometry(*size)
    assert (geo.height, geo.width) == grid and geo.step_y == stride


@pytest.mark.parametrize("facet, index", [("query", 0), ("key", 1), ("value", 2)])
def test_attention_facets_equal_hand_written_qkv(facet, index):
    layer = 3
    teacher = teachers.create("dino_vits16", pretrained=False, seed=2, layer=layer, facet=facet)
    block = teacher.model.blocks[layer]
    captured = {}
    handle = block.register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0]))
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        teacher.model.forward_features(teacher.prepare(images))  # runs every block; captures block 3's input
    handle.remove()
    x = captured["x"]
    sd = block.state_dict()
    y = F.layer_norm(x, (384,), sd["norm1.weight"], sd["norm1.bias"], eps=1e-6)
    qkv = y @ sd["attn.qkv.weight"].T + sd["attn.qkv.bias"]
    expected = qkv[..., index * 384 : (index + 1) * 384][:, 1:]  # drop the class token
    ours = teacher(images)
    torch.testing.assert_close(ours, expected.transpose(1, 2).reshape(1, 384, 4, 4), rtol=1e-5, atol=1e-5)


def test_official_dino_checkpoint_loads_exactly(tmp_path):
    source = teachers.create("dino_vits16", pretrained=False, seed=3)
    state = source.model.state_dict()
    official = {"teacher": {f"module.backbone.{k}": v for k, v in state.items()}, "epoch": 100}
    official["teacher"]["module.head.mlp.0.weight"] = torch.zeros(2048, 384)
    path = tmp_path / "dino_deitsmall16_pretrain_full_checkpoint.pth"
    torch.save(official, path)
    loaded = teachers.create("dino_vits16", weights=path, seed=99)
    for key, value in state.items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.weights_id.startswith("file:dino_deitsmall16")
    # the backbone-only release format (plain names) too
    torch.save(state, tmp_path / "plain.pth")
    plain = teachers.create("dino_vits16", weights=tmp_path / "plain.pth", seed=98)
    assert all(torch.equal(plain.model.state_dict()[k], v) for k, v in state.items())


def test_official_dinov2_names_map(tmp_path):
    source = teachers.create("dinov2_vits14", pretrained=False, seed=4)
    state = source.model.state_dict()
    # DINOv2 releases: a mask token, and (for chunked models) blocks.<chunk>.<i>. names
    official = {k.replace("blocks.", "blocks.0.", 1) if k.startswith("blocks.") else k: v for k, v in state.items()}
    official["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, path)
    loaded = teachers.create("dinov2_vits14", weights=path)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())


def test_wrong_weights_file_is_refused(tmp_path):
    state = teachers.create("dino_vits16", pretrained=False).model.state_dict()
    torch.save(state, tmp_path / "s16.pth")
    with pytest.raises(TeacherError, match="do not fit"):
        teachers.create("dino_vitb16", weights=tmp_path / "s16.pth")
    with pytest.raises(TeacherError, match="not found"):
        teachers.create("dino_vits16", weights=tmp_path / "absent.pth")


def test_offline_without_weights_fails_at_once_naming_the_file(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("N3F_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    attempts = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a) or (_ for _ in ()).throw(OSError("blocked")))
    with pytest.raises(TeacherError) as err:
        teachers.create("dino_vits8")
    msg = str(err.value)
    assert "dino_deitsmall8_pretrain.pth" in msg and str(tmp_path) in msg and "--teacher-weights" in msg
    assert attempts == []  # no network attempt at all when offline is declared

    # not declared offline: one short reachability probe, then the same error, no download attempted
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("download attempted"))
    with pytest.raises(TeacherError, match="unreachable"):
        teachers.create("dino_vits8")
    assert len(attempts) == 1


def test_weights_found_in_weights_dir(monkeypatch, tmp_path):
    state = teachers.create("dino_vits16", pretrained=False, seed=5).model.state_dict()
    torch.save(state, tmp_path / "dino_deitsmall16_pretrain.pth")
    monkeypatch.setenv("N3F_WEIGHTS", str(tmp_path))
    loaded = teachers.create("dino_vits16")
    assert torch.equal(loaded.model.pos_embed, state["pos_embed"])


def test_bad_options():
    with pytest.raises(TeacherError, match="facet"):
        teachers.create("dino_vits8", pretrained=False, facet="keys")
    with pytest.raises(TeacherError, match="stride"):
        teachers.create("dino_vits8", pretrained=False, stride=9)
    with pytest.raises(TeacherError, match="layer"):
        teachers.create("dino_vits8", pretrained=False, layer=12)
