"""NeuralDiff's transient streams for dynamic egocentric scenes: a per-frame dynamic stream and an
actor stream attached to the camera, rendered together with the static student.

Egocentric video breaks the static-world assumption twice: objects move between frames, and the
camera wearer's hands and arms sit in front of the camera in every frame. NeuralDiff (Tschernezki
et al., 3DV 2021), on which N3F's kitchen results build, gives each its own stream:

- **static**: the plain student (:class:`~n3f.student.field.StudentField`), one field for all frames;
- **dynamic**: a world-space field conditioned on a learned per-frame embedding (things that move);
- **actor**: a field in *camera* coordinates, conditioned on its own per-frame embedding (things
  that move with the camera: hands, arms, held objects).

Each transient stream renders density, colour, features and an uncertainty ``beta``. Densities add
up; a sample's colour and feature are the density-weighted mix of the streams'
(``c = sum_k sigma_k c_k / sum_k sigma_k``), and the composited ``share/<stream>`` channels say how
much of each pixel every stream explains. Colour is trained with NeuralDiff's heteroscedastic loss
``|C - C_gt|^2 / (2 beta^2) + log beta`` (``beta = beta_min + composited beta``; the static stream has
no uncertainty), plus a sparsity penalty on the transient densities, so whatever the static field
can explain stays in it. The static field alone is what query, evaluation and export use by
default, so moving things leave no ghosts there.

The actor stream is sampled separately: ``actor_samples`` stratified samples over the first
``actor_depth`` (space units) of each ray, in the ray's camera coordinates. The occupancy grid is the
static world's and would carve away everything right in front of the cameras, where the actor lives.
Both sample sets are merged by distance along the ray and composited together (each stream's
optical depth is integrated over its own samples; their sum is the ray's).

Frames without a trained embedding (held-out frames) get the embedding interpolated linearly in
time between the nearest training frames before and after (NeuralDiff's frames are a video).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from n3f.errors import N3FError
from n3f.render.encoding import HashEncoding, HashGridConfig
from n3f.student.field import _mlp, trunc_exp

STREAMS = ("static", "dynamic", "actor")
STREAM_CHOICES = ("static", "all")  # what query, evaluation and export render: the static field, or every stream
TRANSIENT_GRID = HashGridConfig(10, 2, 15, 16, 512)


@dataclass(frozen=True)
class TransientConfig:
    """Transient streams.

    Attributes:
        n_frames: frames of the scene (one embedding row per frame).
        feature_dim: feature channels (the static student's).
        embedding_dim: size of each per-frame embedding.
        embedding_std: standard deviation of the embeddings' random start.
        grid: hash grid of each transient stream.
        hidden: MLP width.
        actor_depth: the actor stream covers the first ``actor_depth`` space units of every ray
            (the camera-space box ``[-d, d] x [-d, d] x [0, d]``).
        actor_samples: stratified samples per ray in that range.
        beta_min: smallest colour uncertainty (NeuralDiff's beta_min).
        density_bias: density pre-activation bias of the transient streams (low: they start empty).
        backend: hash-grid backend.
        time_grid: give the dynamic stream a space-time encoding (:class:`SpaceTimeEncoding`:
            hash grids over (x, y, t), (x, z, t) and (y, z, t)) beside its per-frame embedding, so
            that an object's place at one time is learned close to its place at the next. Without
            it the stream must tell frames apart through its MLP alone (NeuralDiff's design).
        time_frequencies: also give the dynamic stream's MLP the frame's time as ``sin`` and
            ``cos`` of ``2^k pi t`` for ``k < time_frequencies`` (NeRF's positional encoding, in
            time): unlike the free per-frame embeddings these are shared by neighbouring frames,
            so what one frame teaches about a moving thing carries to the next. 0: off.
        frame_appearance: the dynamic stream's colour, features and uncertainty also read the
            frame embedding (NeuralDiff). False: they read the point's encoding alone, so only its
            density depends on the frame: a moving object keeps its colours and must be *moved*
            (its density), not repainted, to explain a frame.
    """

    n_frames: int
    feature_dim: int
    embedding_dim: int = 16
    embedding_std: float = 0.1
    grid: HashGridConfig = TRANSIENT_GRID
    hidden: int = 64
    actor_depth: float = 0.24
    actor_samples: int = 48
    beta_min: float = 0.03
    density_bias: float = -3.0
    backend: str = "auto"
    time_grid: bool = False
    time_frequencies: int = 0
    frame_appearance: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransientConfig:
        d = dict(d)
        d["grid"] = HashGridConfig(**d["grid"])
        return cls(**d)


class SpaceTimeEncoding(nn.Module):
    """Hash encoding of space-time points: three 3D hash grids over (x, y, t), (x, z, t) and
    (y, z, t), their features concatenated (K-Planes' and HexPlane's split of 4D into parts that
    share the time axis, with hash grids in place of planes so the existing kernels serve).

    A moving object is a tube in 4D; each grid sees its shadow on three of the four axes, and the
    MLP after them intersects the shadows. Neighbouring times share grid cells, so what one frame
    teaches about where the object is carries over to the next.

    Args:
        grid: hash-grid hyper-parameters of each of the three grids.
        backend: hash-grid backend.
    """

    AXES = ((0, 1, 3), (0, 2, 3), (1, 2, 3))

    def __init__(self, grid: HashGridConfig, backend: str = "auto"):
        super().__init__()
        self.grids = nn.ModuleList(HashEncoding(grid, backend=backend) for _ in self.AXES)

    @property
    def output_dim(self) -> int:
        return 3 * self.grids[0].output_dim

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 4) points (x, y, z, t) in [0, 1]^4 -> (N, 3 * L * F) features."""
        return torch.cat([grid(u[:, list(axes)].contiguous()) for grid, axes in zip(self.grids, self.AXES)], -1)


class TransientStream(nn.Module):
    """One transient stream: hash grid over a box, an MLP that also sees a per-frame embedding, and
    heads for density, colour, features and uncertainty.

    Args:
        config: the streams' configuration.
        aabb: (2, 3) box mapped onto the hash grid.
    """

    def __init__(
        self,
        config: TransientConfig,
        aabb: torch.Tensor,
        time_grid: bool = False,
        time_frequencies: int = 0,
        frame_appearance: bool = True,
    ):
        super().__init__()
        self.config = config
        self.time_frequencies = time_frequencies
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.encoding = HashEncoding(config.grid, backend=config.backend)
        self.time_encoding = SpaceTimeEncoding(config.grid, backend=config.backend) if time_grid else None
        n_in = config.grid.output_dim + config.embedding_dim + (self.time_encoding.output_dim if time_grid else 0) + 2 * time_frequencies
        self.embedding = nn.Embedding(config.n_frames, config.embedding_dim)
        nn.init.normal_(self.embedding.weight, std=config.embedding_std)
        self.trunk = _mlp(n_in, config.hidden, config.hidden, 1)
        self.density_head = nn.Linear(config.hidden, 1)
        self.colour_head = nn.Linear(config.hidden, 3)
        self.beta_head = nn.Linear(config.hidden, 1)
        self.feature_head = _mlp(config.hidden, config.hidden, config.feature_dim, 1)
        # Without frame appearance the heads but density read a trunk of the encoding alone.
        self.appearance_trunk = None if frame_appearance else _mlp(config.grid.output_dim, config.hidden, config.hidden, 1)

    def forward(
        self, points: torch.Tensor, embedding: torch.Tensor, features: bool = True, time: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Evaluate the stream.

        Args:
            points: (N, 3) positions in the stream's coordinates; embedding: (N, E) per-sample
                frame embeddings; time: (N,) frame times in [0, 1] (needed with a space-time
                encoding or time frequencies, ignored without).

        Returns:
            ``sigma`` (N,) (zero outside the box), ``rgb`` (N, 3), ``beta`` (N,) and, if asked,
            ``feature`` (N, feature_dim).
        """
        u = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u <= 1)).all(-1)
        u = u.clamp(0.0, 1.0)
        code = self.encoding(u)
        parts = [code, embedding]
        if (self.time_encoding is not None or self.time_frequencies) and time is None:
            raise ValueError("this stream is conditioned on time: pass the samples' frame times")
        if self.time_encoding is not None:
            parts.append(self.time_encoding(torch.cat([u, time.clamp(0.0, 1.0)[:, None]], -1)))
        if self.time_frequencies:
            angles = time[:, None] * (torch.pi * 2.0 ** torch.arange(self.time_frequencies, device=time.device))
            parts += [torch.sin(angles), torch.cos(angles)]
        h = torch.relu(self.trunk(torch.cat(parts, -1)))
        sigma = trunc_exp(self.density_head(h)[:, 0] + self.config.density_bias) * inside
        if self.appearance_trunk is not None:
            h = torch.relu(self.appearance_trunk(code))
        out = {
            "sigma": sigma,
            "rgb": torch.sigmoid(self.colour_head(h)),
            "beta": nn.functional.softplus(self.beta_head(h)[:, 0]),
        }
        if features:
            out["feature"] = self.feature_head(h)
        return out


class TransientStreams(nn.Module):
    """The dynamic and actor streams of a scene (see the module docstring).

    Args:
        config: the streams' configuration.
        world_aabb: (2, 3) box of the static field (the dynamic stream lives there too).
        train_ids: scene indices of the training frames (the embeddings that are learned).
        times: (n_frames,) time of every frame, for interpolating held-out frames' embeddings.
    """

    def __init__(self, config: TransientConfig, world_aabb: torch.Tensor, train_ids: list[int], times: torch.Tensor):
        super().__init__()
        self.config = config
        d = config.actor_depth
        self.dynamic = TransientStream(
            config,
            world_aabb,
            time_grid=config.time_grid,
            time_frequencies=config.time_frequencies,
            frame_appearance=config.frame_appearance,
        )
        self.actor = TransientStream(config, torch.tensor([[-d, -d, 0.0], [d, d, d]]))
        self.register_buffer("train_ids", torch.as_tensor(sorted(train_ids), dtype=torch.long))
        self.register_buffer("times", torch.as_tensor(times, dtype=torch.float32).reshape(-1))
        if len(self.times) != config.n_frames:
            raise N3FError(f"the transient streams need one time per frame: got {len(self.times)} times for {config.n_frames} frames")

    def embeddings(self, stream: TransientStream, frame_ids: torch.Tensor) -> torch.Tensor:
        """(N,) scene frame indices -> (N, E) embeddings of ``stream``; frames without a trained
        embedding get the time-interpolation of the training frames' around them."""
        table = stream.embedding.weight
        # F.embedding, not table[ids]: on the CPU its backward sums repeated rows in a fixed order,
        # where indexing's backward accumulates across threads in any order (fits not reproducible).
        trained = torch.isin(frame_ids, self.train_ids)
        if bool(trained.all()):
            return nn.functional.embedding(frame_ids, table)
        t_train = self.times[self.train_ids]
        order = torch.argsort(t_train)
        t_sorted, ids_sorted = t_train[order], self.train_ids[order]
        t = self.times[frame_ids]
        hi = torch.searchsorted(t_sorted, t).clamp(1, len(t_sorted) - 1) if len(t_sorted) > 1 else torch.zeros_like(frame_ids)
        lo = (hi - 1).clamp_min(0)
        span = (t_sorted[hi] - t_sorted[lo]).clamp_min(1e-12)
        a = ((t - t_sorted[lo]) / span).clamp(0, 1)[:, None]
        interpolated = nn.functional.embedding(ids_sorted[lo], table) * (1 - a) + nn.functional.embedding(ids_sorted[hi], table) * a
        return torch.where(trained[:, None], nn.functional.embedding(frame_ids, table), interpolated)

    def dynamic_fields(self, points: torch.Tensor, frame_ids: torch.Tensor, features: bool = True) -> dict[str, torch.Tensor]:
        """Dynamic stream at world (space) points (N, 3) of frames ``frame_ids`` (N,)."""
        return self.dynamic(points, self.embeddings(self.dynamic, frame_ids), features, time=self.unit_time(frame_ids))

    def unit_time(self, frame_ids: torch.Tensor) -> torch.Tensor:
        """(N,) scene frame indices -> (N,) their times mapped linearly onto [0, 1] (first to last frame)."""
        lo, hi = self.times.min(), self.times.max()
        return (self.times[frame_ids] - lo) / (hi - lo).clamp_min(1e-12)

    def actor_fields(self, points_cam: torch.Tensor, frame_ids: torch.Tensor, features: bool = True) -> dict[str, torch.Tensor]:
        """Actor stream at camera-coordinate points (N, 3) (OpenCV axes) of frames ``frame_ids`` (N,)."""
        return self.actor(points_cam, self.embeddings(self.actor, frame_ids), features)


def mix_streams(parts: dict[str, dict[str, torch.Tensor]], features: bool) -> dict[str, torch.Tensor]:
    """Mix the streams evaluated at the same samples.

    Args:
        parts: stream name -> its outputs (``sigma`` (N,), ``rgb``, optionally ``feature`` and ``beta``).
        features: mix features too.

    Returns:
        ``sigma`` (N,) the sum; ``rgb``, ``feature`` the density-weighted means; ``beta`` (N, 1) the
        density-weighted uncertainty (0 for streams without one); ``share/<stream>`` (N, 1) every
        stream's part of the density, for all of :data:`STREAMS`.
    """
    sigma = sum(p["sigma"] for p in parts.values())
    inv = 1.0 / sigma.clamp_min(1e-10)
    out: dict[str, torch.Tensor] = {"sigma": sigma}
    names = ("rgb", "feature") if features else ("rgb",)
    for name in names:
        out[name] = sum(p["sigma"][:, None] * p[name] for p in parts.values()) * inv[:, None]
    out["beta"] = (sum(p["sigma"] * p["beta"] for p in parts.values() if "beta" in p) * inv)[:, None]
    for stream in STREAMS:
        share = parts[stream]["sigma"] * inv if stream in parts else torch.zeros_like(sigma)
        out[f"share/{stream}"] = share[:, None]
    return out


def share_entropy(share: torch.Tensor, skew: float = 1.0) -> torch.Tensor:
    """Binary entropy (nats) of ``share ** skew``: 0 where a sample belongs wholly to one stream
    (share 0 or 1), ``ln 2`` at ``share = 0.5 ** (1 / skew)``. D^2NeRF's skewed entropy: with
    ``skew > 1`` the peak moves above one half, so undecided samples lean towards share 0.

    Args:
        share: (N,) a stream's part of each sample's density, in [0, 1].
        skew: the exponent.

    Returns:
        (N,) entropies; their gradient is finite at 0 and 1 (logs clamped at 1e-6).
    """
    s = share.clamp(0.0, 1.0) ** skew
    return -(s * torch.log(s.clamp_min(1e-6)) + (1 - s) * torch.log((1 - s).clamp_min(1e-6)))


def static_alone_loss(
    out: dict[str, torch.Tensor], target_rgb: torch.Tensor, target_feature: torch.Tensor, feature_weights: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss that keeps the static field whole: its own render must explain every pixel the
    transient streams do not claim.

    Without it the dynamic stream, a world-space field as able as the static one, took the table's
    colour and features while the static field kept grey geometry (demo/kitchen_dynamic, 1,000
    steps). Each pixel is weighted by ``1 - (share/dynamic + share/actor)``, detached, so claiming a
    pixel earns a transient stream no gradient here; and with ``scale > 0`` also by a robust
    (Cauchy) weight ``1 / (1 + r^2 / scale^2)`` of the static render's own mean squared colour
    error ``r^2`` (detached), meant to stop the static field painting the hand before the actor
    claims it. It did worse (see ``FitConfig.static_alone_scale``), so the fit's default is 0.

    Args:
        out: :func:`n3f.student.render_streams.render_streams` outputs with ``static_alone=True``:
            ``static/rgb`` (n, 3), ``static/feature`` (n, D), ``share/dynamic``, ``share/actor`` (n, 1).
        target_rgb: (n, 3) pixel colours in [0, 1]; target_feature: (n, D) teacher features;
        feature_weights: (D,) per-channel weights of the feature loss.
        scale: colour residual (0-1 units) at which the robust weight halves; 0 for a plain square.

    Returns:
        (colour loss, feature loss), each a scalar mean over pixels (and channels).
    """
    free = 1.0 - (out["share/dynamic"] + out["share/actor"]).detach().clamp(0.0, 1.0)
    sq = (out["static/rgb"] - target_rgb) ** 2
    if scale > 0:
        free = free / (1.0 + sq.detach().mean(-1, keepdim=True) / scale**2)
    colour = torch.mean(free * sq)
    feature = torch.mean(free * (out["static/feature"] - target_feature) ** 2 * feature_weights)
    return colour, feature
