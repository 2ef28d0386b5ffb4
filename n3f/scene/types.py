"""What a scene is: frames with cameras, a scene box, splits.

Conventions (fixed here, converted once by each reader):

- ``c2w`` is a 4x4 camera-to-world matrix in **OpenCV axes**: camera x right, y down, z forward.
- ``K`` is the 3x3 pinhole matrix in pixels, with COLMAP's pixel convention: the centre of the
  top-left pixel is at (0.5, 0.5). Downscaling an image by ``f`` therefore divides fx, fy, cx and cy
  by exactly ``f``.
- World units are those of the *normalised* world: after :func:`n3f.scene.normalise.normalise_scene`
  the cameras and the scene content lie in the box [-1, 1]^3. ``Scene.normalisation`` maps the
  reader's original world to it, so ground truth in original units can always be carried over.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")

# COLMAP camera models whose distortion we understand, with their parameter names.
DISTORTION_PARAMS: dict[str, tuple[str, ...]] = {
    "SIMPLE_RADIAL": ("k1",),
    "RADIAL": ("k1", "k2"),
    "OPENCV": ("k1", "k2", "p1", "p2"),
}


@dataclass(frozen=True)
class Distortion:
    """Lens distortion in COLMAP's terms.

    Attributes:
        model: COLMAP model name whose distortion this is (``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV``).
        params: the distortion coefficients only, in COLMAP order (k1[, k2][, p1, p2]).
    """

    model: str
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        expected = DISTORTION_PARAMS.get(self.model)
        if expected is None:
            raise ValueError(f"unsupported distortion model {self.model!r}; use one of {sorted(DISTORTION_PARAMS)}")
        if len(self.params) != len(expected):
            raise ValueError(f"{self.model} takes {len(expected)} distortion params {expected}, got {len(self.params)}")

    def opencv_coefficients(self) -> np.ndarray:
        """Return the coefficients as OpenCV's ``(k1, k2, p1, p2)`` vector, shape (4,)."""
        named = dict(zip(DISTORTION_PARAMS[self.model], self.params))
        return np.array([named.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")], dtype=np.float64)

    def is_identity(self) -> bool:
        """True when every coefficient is zero (the camera is a pure pinhole)."""
        return all(p == 0.0 for p in self.params)


@dataclass
class Frame:
    """One posed image.

    Attributes:
        image_path: the image file on disk.
        K: (3, 3) float64 intrinsics in pixels, at ``width`` x ``height``.
        c2w: (4, 4) float64 camera-to-world, OpenCV axes, normalised world units.
        width: image width in pixels as the pipeline loads it (after any downscale).
        height: image height in pixels as the pipeline loads it.
        split: ``train``, ``val`` or ``test``.
        distortion: lens distortion, or None for a pinhole camera.
        mask_path: optional per-pixel instance-id image (uint8/uint16 PNG; 0 = background).
        depth_path: optional ``.npy`` z-depth map in the reader's *original* world units.
        depth_scale: factor from stored depth values to normalised units.
        near: optional near bound along the optical axis, normalised units.
        far: optional far bound along the optical axis, normalised units.
        frame_id: the source format's identifier for the frame (EPIC-Diff id, COLMAP image id...).
        time: optional capture time of the frame in a video, normalised to [0, 1] over the sequence
            (first frame 0, last 1); set by scenes with moving content (``demo/kitchen_dynamic``).
            A per-frame embedding is looked up by the frame's index in ``Scene.frames``.
    """

    image_path: Path
    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int
    split: Split = "train"
    distortion: Distortion | None = None
    mask_path: Path | None = None
    depth_path: Path | None = None
    depth_scale: float = 1.0
    near: float | None = None
    far: float | None = None
    frame_id: int | str | None = None
    time: float | None = None

    def __post_init__(self) -> None:
        self.image_path = Path(self.image_path)
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.c2w = np.asarray(self.c2w, dtype=np.float64).reshape(4, 4)
        self.width, self.height = int(self.width), int(self.height)
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")

    @property
    def name(self) -> str:
        """The image's file name, the key users and outputs refer to it by."""
        return self.image_path.name

    @property
    def w2c(self) -> np.ndarray:
        """(4, 4) world-to-camera matrix (inverse of ``c2w``)."""
        return np.linalg.inv(self.c2w)

    @property
    def camera_centre(self) -> np.ndarray:
        """(3,) camera centre in world units."""
        return self.c2w[:3, 3].copy()

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points into this frame (pinhole; distortion not applied).

        Args:
            points: (N, 3) points in the scene's (normalised) world.

        Returns:
            pixels: (N, 2) pixel coordinates (x right, y down; pixel centres at +0.5).
            depth: (N,) z-depth in the camera frame (positive in front).
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        cam = points @ self.w2c[:3, :3].T + self.w2c[:3, 3]
        uvw = cam @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3], cam[:, 2]

    def unproject(self, pixels: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`project`: world points (N, 3) of pixel coordinates ``pixels``
        (N, 2) at z-depths ``depth`` (N,) (pinhole, no skew; distortion not undone)."""
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        rays = np.concatenate([(pixels - self.K[:2, 2]) / np.diag(self.K)[:2], np.ones((len(pixels), 1))], 1)
        cam = rays * np.asarray(depth, dtype=np.float64).reshape(-1, 1)
        return cam @ self.c2w[:3, :3].T + self.c2w[:3, 3]


@dataclass
class Scene:
    """An ordered list of posed frames plus what is known of the space they see.

    Attributes:
        frames: the frames, in the order the source lists them (``n3f inspect`` numbers them so).
        aabb: (2, 3) float64 box [min, max] that holds the scene content, normalised world.
        normalisation: (4, 4) similarity (uniform scale and translation) mapping the reader's
            original world to the normalised one. Identity until normalised.
        points: optional (N, 3) sparse points (SfM), normalised world.
        name: a short name (catalog name or folder name).
        source: the folder or file the scene was read from.
        format: the reader that produced it (``colmap``, ``llff``, ``transforms``, ``epic_diff``,
            ``epic_fields``, ``n3f``).
        contraction: how unbounded space is handled downstream: ``none`` (bounded box), ``ndc``
            (forward-facing captures) or ``sphere`` (unbounded, Mip-NeRF 360 style).
        objects: per-object records for scenes with instance masks (``id``, ``name``, ``category``...).
        metadata: free-form extras a reader wants to keep (JSON-serialisable).
    """

    frames: list[Frame]
    aabb: np.ndarray = field(default_factory=lambda: np.array([[-1.0] * 3, [1.0] * 3]))
    normalisation: np.ndarray = field(default_factory=lambda: np.eye(4))
    points: np.ndarray | None = None
    name: str = "scene"
    source: Path | None = None
    format: str = "unknown"
    contraction: Literal["none", "ndc", "sphere"] = "none"
    objects: list[dict] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.aabb = np.asarray(self.aabb, dtype=np.float64).reshape(2, 3)
        self.normalisation = np.asarray(self.normalisation, dtype=np.float64).reshape(4, 4)
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def scale(self) -> float:
        """Factor from original world units to normalised units (depth maps scale by it)."""
        return float(np.cbrt(abs(np.linalg.det(self.normalisation[:3, :3]))))

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) normalised-world points back to the reader's original world."""
        T = np.linalg.inv(self.normalisation)
        return np.asarray(points, dtype=np.float64).reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]

    def to_normalised(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) original-world points into the normalised world."""
        T = self.normalisation
        return np.asarray(points, dtype=np.float64).reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]

    def original_c2w(self, frame: Frame) -> np.ndarray:
        """(4, 4) OpenCV camera-to-world of ``frame`` in the original world (rotation unchanged)."""
        c2w = frame.c2w.copy()
        c2w[:3, 3] = self.to_original(c2w[:3, 3])[0]
        return c2w

    def split_indices(self, split: str) -> list[int]:
        """Indices of the frames in ``split`` (``train``, ``val``, ``test``), in scene order."""
        return [i for i, f in enumerate(self.frames) if f.split == split]

    def split_counts(self) -> dict[str, int]:
        """Number of frames per split, e.g. ``{"train": 84, "val": 0, "test": 12}``."""
        return {s: len(self.split_indices(s)) for s in SPLITS}

    def replace(self, **changes) -> Scene:
        """Return a shallow copy with some attributes changed (frames are not copied)."""
        return dataclasses.replace(self, **changes)

    def frame_index(self, key: int | str) -> int:
        """Resolve a frame given by index (as ``n3f inspect`` numbers them) or by file name.

        Raises:
            N3FError: the index is out of range or no frame has that file name.
        """
        from n3f.errors import SceneError

        if isinstance(key, str) and key.lstrip("-").isdigit():
            key = int(key)
        if isinstance(key, int):
            if not 0 <= key < len(self.frames):
                raise SceneError(f"frame index {key} is out of range: scene {self.name!r} has frames 0..{len(self.frames) - 1}")
            return key
        for i, f in enumerate(self.frames):
            if f.name == key or str(f.image_path) == key:
                return i
        raise SceneError(f"no frame named {key!r} in scene {self.name!r}; run `n3f inspect --scene {self.name}` to list them")
