"""DINO and DINOv2 ViTs through timm, with dense features at any stride, layer and facet.

Features follow Amir et al.'s "Deep ViT Features as Dense Visual Descriptors" (as used by N3F):
the patch embedding can run with a stride smaller than the patch size (overlapping patches, a
denser map), positional embeddings are resampled to the resulting grid (timm's own
``resample_abs_pos_embed``), and the output is the tokens of block ``layer`` (``facet="token"``) or
that block's attention keys, queries or values (heads concatenated). With ``stride == patch`` and
the last layer, ``facet="token"`` equals timm's own patch tokens exactly (``norm=True`` adds the
final LayerNorm, as timm's ``forward_features``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from teachers import TeacherError
from teachers.base import Teacher
from teachers.weights import file_sha256, load_exact, load_from_hub, official_vit_to_timm, read_state_dict, weights_dir

# name -> (timm architecture with pretrained tag, official checkpoint file name, its download URL)
VIT_MODELS = {
    "dino_vits8": (
        "vit_small_patch8_224.dino",
        "dino_deitsmall8_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
    ),
    "dino_vits16": (
        "vit_small_patch16_224.dino",
        "dino_deitsmall16_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
    ),
    "dino_vitb8": (
        "vit_base_patch8_224.dino",
        "dino_vitbase8_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
    ),
    "dino_vitb16": (
        "vit_base_patch16_224.dino",
        "dino_vitbase16_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
    ),
    "dinov2_vits14": (
        "vit_small_patch14_dinov2.lvd142m",
        "dinov2_vits14_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    ),
    "dinov2_vitb14": (
        "vit_base_patch14_dinov2.lvd142m",
        "dinov2_vitb14_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
    ),
}
FACETS = ("token", "key", "query", "value")


class ViTTeacher(Teacher):
    """A DINO/DINOv2 ViT from timm as a dense teacher.

    Args:
        name: registry name (a key of :data:`VIT_MODELS`).
        weights: a checkpoint file (official DINO/DINOv2 or timm), or None to use
            ``$N3F_WEIGHTS/<official file>`` if present, else the timm hub.
        pretrained: False builds a randomly initialised network (tests, benchmarks).
        stride: patch-embedding stride in input pixels (<= patch size; default: the patch size).
        layer: block whose output is used (0-based; negative counts from the end; default last).
        facet: ``token``, ``key``, ``query`` or ``value``.
        norm: apply the final LayerNorm to tokens of the last layer (as timm's forward_features).
        seed: seed for random initialisation when ``pretrained`` is False.
        **common: ``device``, ``batch_size``, ``half``, ``input_scale`` (see Teacher).
    """

    def __init__(
        self,
        name: str,
        weights: str | Path | None = None,
        pretrained: bool = True,
        stride: int | None = None,
        layer: int = -1,
        facet: str = "token",
        norm: bool = False,
        seed: int = 0,
        **common,
    ):
        import timm

        super().__init__(**common)
        arch, self.official_file, self.url = VIT_MODELS[name]
        self.name = name
        if facet not in FACETS:
            raise TeacherError(f"facet must be one of {FACETS}, got {facet!r}")
        torch.manual_seed(seed)
        self.model = timm.create_model(arch, pretrained=False, dynamic_img_size=True, num_classes=0)
        self.model.eval().requires_grad_(False)
        patch = self.model.patch_embed.patch_size[0]
        stride = patch if stride is None else int(stride)
        if not 1 <= stride <= patch:
            raise TeacherError(f"stride must be between 1 and the patch size {patch}, got {stride}")
        self.model.patch_embed.proj.stride = (stride, stride)
        n_layers = len(self.model.blocks)
        self.layer = layer % n_layers
        if not -n_layers <= layer < n_layers:
            raise TeacherError(f"layer must be in [{-n_layers}, {n_layers - 1}] for {name}, got {layer}")
        self.facet, self.norm_last = facet, bool(norm)
        self.dim = self.model.embed_dim
        self.stride, self.cell, self.multiple = stride, patch, patch
        self.mean, self.std = tuple(self.model.pretrained_cfg["mean"]), tuple(self.model.pretrained_cfg["std"])
        self.weights_id = "random" if not pretrained else self._load_weights(weights)
        self.to(self.device)
        if self.half:
            self.model.half()

    def _load_weights(self, weights: str | Path | None) -> str:
        default = weights_dir() / self.official_file
        if weights is None and default.is_file():
            weights = default
        hint = f"Download {self.official_file} from {self.url} and pass it with --teacher-weights PATH or put it at {default}."
        if weights is None:
            return load_from_hub(self.model, self.model.pretrained_cfg["hf_hub_id"], hint)
        path = Path(weights).expanduser()
        load_exact(self.model, official_vit_to_timm(read_state_dict(path)), str(path))
        return f"file:{path.name}:{file_sha256(path, limit=1 << 24)[:16]}"

    def options(self) -> dict:
        return {
            "stride": self.stride,
            "layer": self.layer,
            "facet": self.facet,
            "norm": self.norm_last,
            "input_scale": self.input_scale,
            "weights": self.weights_id,
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        tokens = m.patch_embed(x)  # (B, h, w, C) with dynamic_img_size
        B, h, w, C = tokens.shape
        tokens = m.norm_pre(m.patch_drop(m._pos_embed(tokens)))
        for i, block in enumerate(m.blocks):
            if i == self.layer and self.facet != "token":
                out = self._attention_facet(block, tokens)
                break
            tokens = block(tokens)
            if i == self.layer:
                out = m.norm(tokens) if (self.norm_last and i == len(m.blocks) - 1) else tokens
                break
        out = out[:, m.num_prefix_tokens :]
        return out.transpose(1, 2).reshape(B, -1, h, w)

    def _attention_facet(self, block, tokens: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        y = block.norm1(tokens)
        B, N, _ = y.shape
        qkv = attn.qkv(y).reshape(B, N, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.unbind(2)  # (B, N, heads, head_dim)
        q = attn.q_norm(q.transpose(1, 2)).transpose(1, 2)
        k = attn.k_norm(k.transpose(1, 2)).transpose(1, 2)
        facet = {"query": q, "key": k, "value": v}[self.facet]
        return facet.reshape(B, N, -1)


def _factory(name: str):
    def build(**options) -> ViTTeacher:
        return ViTTeacher(name, **options)

    build.__name__ = name
    build.__doc__ = f"Build the {name} teacher ({VIT_MODELS[name][0]} in timm); options as ViTTeacher."
    return build


dino_vits8 = _factory("dino_vits8")
dino_vits16 = _factory("dino_vits16")
dino_vitb8 = _factory("dino_vitb8")
dino_vitb16 = _factory("dino_vitb16")
dinov2_vits14 = _factory("dinov2_vits14")
dinov2_vitb14 = _factory("dinov2_vitb14")
