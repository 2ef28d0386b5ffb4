"""What every teacher is: a frozen network from images to a dense feature map with known geometry."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FeatureGeometry:
    """Where a teacher's feature cells lie in the *original* image (pixel centres at +0.5).

    Cell (i, j) of the ``height x width`` map is centred at image pixel coordinates
    ``y = offset_y + i * step_y``, ``x = offset_x + j * step_x``.
    """

    height: int
    width: int
    offset_y: float
    offset_x: float
    step_y: float
    step_x: float

    def as_dict(self) -> dict:
        """Plain-JSON form for cache metadata."""
        return dict(self.__dict__)


class Teacher(torch.nn.Module):
    """Base class. Subclasses set ``name``, ``dim``, ``stride``, ``cell`` (receptive cell size in
    input pixels), ``multiple`` (input sizes are rounded to it), ``mean``/``std`` and implement
    :meth:`features` on normalised network inputs.

    Options shared by all teachers: ``device``, ``batch_size``, ``half`` (fp16 on CUDA only),
    ``input_scale`` (resize factor before the network).
    """

    name: str = "teacher"
    dim: int = 0
    stride: int = 1
    cell: int = 1
    multiple: int = 1
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 8, half: bool = False, input_scale: float = 1.0):
        super().__init__()
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.half = bool(half) and self.device.type == "cuda"
        self.input_scale = float(input_scale)
        if self.batch_size < 1 or self.input_scale <= 0:
            raise ValueError("batch_size must be >= 1 and input_scale > 0")

    # -- to implement --------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Network features of normalised inputs ``x`` (B, 3, H_in, W_in) -> (B, C, h, w)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def options(self) -> dict:
        """The options that change the output (for cache keys and metadata)."""
        return {"input_scale": self.input_scale}

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for an image of ``height x width``: scaled, rounded to ``multiple``."""
        m = self.multiple
        return max(m, round(height * self.input_scale / m) * m), max(m, round(width * self.input_scale / m) * m)

    def geometry(self, height: int, width: int) -> FeatureGeometry:
        """Feature-map size and cell centres for an image of ``height x width`` (see FeatureGeometry)."""
        h_in, w_in = self.input_size(height, width)
        h, w = self.output_size(h_in, w_in)
        sy, sx = height / h_in, width / w_in
        return FeatureGeometry(h, w, self.cell / 2 * sy, self.cell / 2 * sx, self.stride * sy, self.stride * sx)

    def output_size(self, h_in: int, w_in: int) -> tuple[int, int]:
        """Feature-map size for a network input of ``h_in x w_in``."""
        return (h_in - self.cell) // self.stride + 1, (w_in - self.cell) // self.stride + 1

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the input size and normalise: (B, 3, H, W) in [0, 1] -> network input."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"teacher input must be B x 3 x H x W, got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        size = self.input_size(*images.shape[-2:])
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (images - mean) / std

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Dense features: (B, 3, H, W) in [0, 1] -> (B, dim, h, w) float32 on ``device``."""
        x = self.prepare(images)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            out = self.features(x)
        return out.float()

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Like ``forward`` but in batches of ``batch_size``, returning CPU float32."""
        return torch.cat([self(images[i : i + self.batch_size]).cpu() for i in range(0, len(images), self.batch_size)])

    def describe(self) -> str:
        """One line naming the teacher and its options (every output carries it)."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.name} ({opts})"
