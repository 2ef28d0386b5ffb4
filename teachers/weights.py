"""Finding and loading teacher weights: local files first, then the timm hub, failing fast offline.

Local files understood:
- official DINO checkpoints (``dino_deitsmall8_pretrain.pth`` and friends, and the
  ``*_full_checkpoint.pth`` files with ``teacher``/``student`` dicts and ``module.backbone.`` prefixes);
- official DINOv2 checkpoints (``dinov2_vits14_pretrain.pth``; ``mask_token`` dropped, chunked
  ``blocks.i.j.`` names flattened);
- timm state dicts as ``.pth`` or ``.safetensors``.

Weights are also found without a path when they sit in ``$N3F_WEIGHTS`` (default
``$N3F_DATA/weights``, i.e. ``~/n3f-data/weights``) under their official file name.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

import torch

from teachers import TeacherError

HUB_HOST = "huggingface.co"


def weights_dir() -> Path:
    """Where weights are looked for by file name: ``$N3F_WEIGHTS`` or ``$N3F_DATA/weights``."""
    if os.environ.get("N3F_WEIGHTS"):
        return Path(os.environ["N3F_WEIGHTS"]).expanduser()
    return Path(os.environ.get("N3F_DATA") or Path.home() / "n3f-data").expanduser() / "weights"


def file_sha256(path: Path, limit: int | None = None) -> str:
    """Hex SHA-256 of a file (first ``limit`` bytes if given), for cache keys."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        remaining = limit
        while True:
            chunk = fh.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return h.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth``/``.pt``/``.safetensors`` file into a flat {name: tensor} dict.

    Raises:
        TeacherError: missing or unreadable file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TeacherError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TeacherError(f"cannot read weights file {path}: {exc}") from exc
    return unwrap_checkpoint(data, path)


def unwrap_checkpoint(data, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """Reduce a checkpoint to a flat state dict: DINO's ``teacher``, or ``model``/``state_dict``."""
    for key in ("teacher", "model", "state_dict"):
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise TeacherError(f"{path} does not hold a state dict of tensors")
    return dict(data)


def official_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map official DINO / DINOv2 ViT key names onto timm's VisionTransformer names.

    Strips ``module.`` and ``backbone.`` prefixes, drops projection heads and DINOv2's
    ``mask_token``, flattens DINOv2's chunked ``blocks.<chunk>.<i>.`` names.
    """
    out = {}
    for key, value in state.items():
        key = re.sub(r"^(module\.)?(backbone\.)?", "", key)
        if key.startswith("head") or key == "mask_token":
            continue
        key = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key) if re.match(r"^blocks\.\d+\.\d+\.", key) else key
        out[key] = value
    return out


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the model hub answers within ``timeout`` seconds (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_from_hub(model: torch.nn.Module, hub_id: str, download_hint: str) -> str:
    """Load timm hub weights into ``model`` (already built with random weights).

    Uses the local Hugging Face cache when it holds the file, the hub only when it is reachable,
    and otherwise fails at once with ``download_hint``.

    Returns:
        A string identifying the weights (for cache keys).
    """
    filename = "model.safetensors"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id, filename)
    except Exception:
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        state = read_state_dict(Path(cached))
    elif hub_reachable():
        try:
            from huggingface_hub import hf_hub_download

            state = read_state_dict(Path(hf_hub_download(hub_id, filename)))
        except Exception as exc:
            raise TeacherError(f"downloading {hub_id} from the hub failed: {exc}. {download_hint}") from exc
    else:
        raise TeacherError(f"no weights for {hub_id} on this machine and the model hub is unreachable. {download_hint}")
    load_exact(model, state, hub_id)
    return f"hub:{hub_id}"


def load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; every model tensor must be present with the right shape.

    Extra tensors (classifier heads the teacher does not use) are ignored.

    Raises:
        TeacherError: missing tensors or shape mismatches, naming the first few.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or wrong:
        raise TeacherError(
            f"weights from {source} do not fit {type(model).__name__}: missing {missing[:4]} ({len(missing)}), shape mismatches {wrong[:3]}"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)
