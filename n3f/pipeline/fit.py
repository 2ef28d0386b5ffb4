"""The fit stage: distil a teacher's features into a hash-grid student while fitting colour.

Loss: ``mse(rgb, image) + feature_weight * mse(feature, teacher / s)``, where the teacher's PCA
features are divided by one scalar ``s`` (their root-mean-square over the training frames) so the
feature term has unit scale whatever the teacher. N3F also uses a plain L2 feature loss; with
``feature_weight = 0.04`` the feature term is a few times the colour term at convergence, enough
to shape the feature head and the shared code without costing colour PSNR. The rendering weights
used for features are detached by default, so teacher noise cannot bend the geometry
(``feature_grad_to_geometry`` turns that off). An optional distortion loss (mip-NeRF 360,
``distortion_weight``) pulls each ray's weight into one short stretch; it is off by default: with
weight 0.1, 256 marching steps and every occupied grid cell refreshed, 1,000 CPU steps on the demo
ran 1.7x faster but ended at 18.6 dB held-out PSNR instead of 22.0 (walls left as fog).

Dynamic scenes (``dynamic``; egocentric video): NeuralDiff's transient streams, a per-frame dynamic
stream and an actor stream attached to the camera, are fitted beside the static student (see
:mod:`n3f.student.transient`); colour and feature losses apply to the composite of all streams,
a sparsity penalty charges the transient streams for their density, and the static field rendered
by itself is trained on the pixels they do not claim (:func:`n3f.student.transient.static_alone_loss`),
so it stays whole. The static field alone is what queries, evaluation and export use unless told
``streams = "all"``.

Run folder (``<output>/<scene>/<teacher>/<YYYYmmdd-HHMMSS>/``): ``config.toml`` (schema version 1),
``checkpoints/step-NNNNNNN.pt`` (atomic), ``metrics.jsonl`` (``eval/psnr`` etc. per evaluation),
``renders/`` (held-out RGB, depth, feature PCA). Resuming restores every random state, so on the
CPU a resumed run ends with exactly the metrics of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from n3f.checkpoints import checkpoint_at, checkpoint_path, latest_checkpoint
from n3f.errors import N3FError
from n3f.io import atomic_write_bytes, atomic_write_text, safe_name
from n3f.pipeline import distributed
from n3f.render.encoding import CPU_CONFIG, NGP_CONFIG, HashGridConfig
from n3f.student.field import FEATURE_RENDERINGS, StudentConfig

SCHEMA_VERSION = 1


@dataclass
class FitConfig:
    """Everything a fit depends on (dumped to config.toml).

    Attributes:
        scene: catalog name or folder.
        downscale: load images at 1/downscale (0: the catalog's choice).
        teacher: teacher name ("" = the machine's default).
        teacher_options: options for the teacher (weights, stride, ...).
        pca: PCA dimensions of the cached features.
        steps: optimisation steps.
        target_samples: samples per step; the ray batch adapts to hit it.
        max_rays: upper bound on rays per step.
        lr: Adam learning rate (hash table and MLPs) at the first step.
        lr_final: the learning rate at the last step as a share of ``lr``; it decays exponentially
            in between (``lr * lr_final ** (step / steps)``). 1 keeps it constant: on demo/tabletop
            at 1,000 steps (seed 0) 0.1 cost 2 dB, 0.03 cost 3.9 dB (README, "CPU defaults").
        lr_warmup: steps over which the learning rate ramps linearly from 1% of its value (0: none).
        feature_weight: lambda of the feature loss.
        feature_grad_to_geometry: let the feature loss reach the densities.
        feature_whitening: exponent w of the per-channel feature-loss weights var_k^-w (normalised
            to mean 1). The teacher's PCA channels fall off in variance (60x on the demo), and
            plain MSE (w = 0) lets the student skip the low-variance tail, which is where
            objects of one kind differ; w = 1 weighs every channel's relative error equally.
        code_dim: size of the geometry code that feeds the colour and feature heads.
        grid_resolution: occupancy-grid cells per axis.
        grid_update_every: steps between occupancy-grid refreshes.
        grid_decay: decay of a cell's running density per refresh (nerfacc uses 0.95 over ~20k
            GPU steps; CPU fits are ten times shorter, so empty space must be carved faster).
        grid_alpha_threshold: a cell is empty when its density makes a sample's opacity (alpha
            over one marching step) smaller than this.
        grid_update_fraction: share of cells refreshed per update (after the first four).
        grid_refresh_occupied: also refresh every occupied cell at each update, so fog that has
            formed in empty space is carved away within a few updates rather than hundreds of steps.
        distortion_weight: weight of mip-NeRF 360's distortion loss (clears fog; 0 turns it off).
            With transient streams (and ``static_alone_weight``) it charges the static field's own
            weights, rendered by itself, meant to sharpen the static surface the moving-pixel
            detector reads its depth from. On demo/kitchen_dynamic (seed 0, step 1,000) 0.01 did
            the opposite: the static surface moved towards the cameras and the detector's flags
            held less of the sponge; 0.001 did no better than none (README, "A sharper static
            surface").
        grid_relative: nerfacc's rule (empty below min(threshold, mean density)); False: below
            the threshold alone.
        density_bias: the student's density pre-activation bias (see StudentConfig).
        sh_degree: spherical-harmonics degree of the colour head's view direction (1: no view
            dependence).
        grid_warmup: steps before the first refresh (every cell counts as occupied until then, so
            surfaces can form before empty space is carved).
        aabb_margin: the scene box grown by this share of its half-size on every side before the
            field and grid are laid over it, so surfaces lying on the box (an enclosed room's
            walls) have room for their density ramp instead of ending at the last sample.
            ``n3f fit`` uses 0.1: with ``background="random"`` it lifted demo/tabletop's held-out
            PSNR from 26.85 and 26.16 dB (random background alone, seeds 0 and 1) to 27.75 and
            27.90; with a black background it did not help (26.24 and 24.47 against 25.69 and
            24.70). 0.2 gave 27.58 (seed 0). 0 here keeps scripted fits as they were.
        near_gradient_distance: samples closer than this to the camera (share of the scene box's
            half-diagonal) pass on gradients scaled by (t / distance)^2, which starves the floaters
            a NeRF grows right in front of its cameras (0 turns it off).
        march_steps: samples across the box diagonal (sets the marching step).
        eval_every: steps between evaluations of held-out frames (0: only at the end).
        eval_frames: held-out frames evaluated during training (all at the end).
        checkpoint_every: steps between checkpoints.
        device: cpu, cuda...
        seed: random seed.
        backend: hash-grid backend.
        grid_preset: ``cpu`` or ``ngp`` hash-grid size.
        mlp_precision: number format of the student's MLP products (``fp32``, ``bf16``; ``auto``
            is fp32: bf16 makes a CPU step about 1.8x faster but its results moved by several dB
            between CPUs, see :class:`n3f.student.field.StudentConfig` and the README). A new run
            records what ``auto`` resolved to; runs from before the option read as ``fp32``,
            which is what they were fitted with.
        dynamic: add NeuralDiff's transient streams (a per-frame dynamic stream and an actor stream
            attached to the camera; see :mod:`n3f.student.transient`); None: the scene recipe's
            choice (``dynamic = true`` in EPIC-KITCHENS recipes).
        transient_sparsity: weight of the penalty on the actor stream's mean density, which keeps
            in the static field whatever it can explain. Measured at 300 steps on
            demo/kitchen_dynamic without the static field's own loss: 0.01 silenced the transient
            streams (no pixel claimed); 1.8e-5 (NeuralDiff's 0.01 rescaled to our colour loss, 556
            times smaller than its ``|C - C_gt|^2 / (2 beta_min^2)``) let the actor stream paint
            most of every frame. With that loss (``static_alone_weight`` 1), at 1,000 steps, MLPs in bfloat16: 1e-3
            left the hand half claimed (actor IoU 0.28), 3e-4 gave the actor the hand (IoU 0.75)
            and kept the static field better than a static-only fit (22.20 vs 19.36 dB on static
            pixels, mAP 0.507 vs 0.476). In float32 3e-4 left the hand half claimed again (IoU
            0.445; static field 22.39 vs 19.50 dB, mAP 0.563 vs 0.431) and 1e-4, the default, gave
            the actor the hand (IoU 0.840) and the static field 23.12 dB, mAP 0.584 (one seed;
            README, "Dynamic scenes").
        dynamic_sparsity: the same penalty for the dynamic stream. A world-space field is as able as
            the static one to explain the static scene; before ``static_alone_weight`` it took the
            table's colour from the static field at 1e-3 over 1,000 steps.
        actor_depth: the actor stream covers this much of every ray from the camera (space units).
        uncertainty_loss: train the transient streams' uncertainty (on the detached residual).
        transient_density_bias: density pre-activation bias of the transient streams (they start
            at density exp(bias), nearly empty).
        static_alone_weight: weight of the loss of the static field rendered by itself (colour and
            features) on the pixels the transient streams do not claim; 0 turns it off. Runs from
            before the option read as 0.
        static_alone_scale: colour residual (0-1 units) at which that loss's robust weight halves
            (Cauchy); 0: a plain square. Measured on demo/kitchen_dynamic at 1,000 steps, scale 0.1
            was worse than the plain square on every figure (static-pixel PSNR 19.90 vs 23.39 dB,
            mAP 0.273 vs 0.601): pixels the static field got wrong early lost its loss, and the
            dynamic stream took the table's colour again.
        dynamic_time_grid: give the dynamic stream a space-time hash encoding (see
            :class:`n3f.student.transient.SpaceTimeEncoding`) beside its frame embedding. Off by
            default: on demo/kitchen_dynamic at 1,000 steps (MLPs in bfloat16, one seed) it did not
            find the sponge (dynamic IoU 0.007) and took static objects from the static field
            (static-object mAP 0.190 against 0.476 for a static-only fit); in float32 the dynamic
            IoU stayed 0 and the actor lost the hand (IoU 0.069). Runs from before the option read
            as False.
        dynamic_time_frequencies: give the dynamic stream's MLP the frame's time as sines and
            cosines of this many octaves (see ``TransientConfig.time_frequencies``); 0: off.
        transient_embedding_std: standard deviation of the random start of the transient streams'
            frame embeddings.
        dynamic_entropy: weight of the entropy of each visible world sample's dynamic share (see
            ``entropy_skew`` of :func:`n3f.student.render_streams.render_streams`; D^2NeRF): it
            pushes every sample to belong to the static field or to the dynamic stream, not a mix
            of both. 0: off. On demo/kitchen_dynamic (1,000 steps, oracle sponge rays, README
            "Who holds the sponge"): 0.01 alone let the actor take the sponge; with
            ``dynamic_frame_appearance`` off, ``dynamic_sparsity`` 1e-4 and skew 2 it raised the
            dynamic IoU from 0.08 to 0.14 (fewer false claims, somewhat less of the sponge).
        dynamic_entropy_skew: the exponent ``k`` of that entropy, ``H(share^k)``.
        dynamic_frame_appearance: the dynamic stream's colours and features read the frame
            embedding too (NeuralDiff); False: only its density does (``TransientConfig.frame_appearance``).
            With it on, the dynamic stream drew the sponge as a thin per-frame tint over the table
            (density share about 0.2) instead of holding it; off, with ``dynamic_sparsity`` 1e-4,
            the exact masks gating the static field and a quarter of the rays drawn from the
            sponge, it held 60-69 % of the sponge's pixels (README; without those oracles about
            2 %). True by default until a fit without oracles gains from it. Runs from before
            the option read as True.
        error_sampling: share of each step's rays drawn in proportion to a running per-tile map of
            the colour error (instant-ngp's error map; :mod:`n3f.pipeline.error_map`); the rest are
            uniform. 0 draws every ray uniformly. Off by default: at 1,000 steps, seed 0, 0.5 cost
            demo/tabletop 2.7 dB (21.91 against 24.57) but gave demo/kitchen_dynamic's three-stream
            fit its best figures (static pixels 23.40 against 23.12 dB, mAP 0.684 against 0.584,
            actor IoU 0.977 against 0.840; the sponge still unclaimed). Runs from before the option
            read as 0.
        error_tile: side in pixels of the error map's tiles.
        static_trim: in a three-stream fit, pixels whose static render (the static field alone)
            misses their colour by more than this many times the batch's median miss (mean squared
            error), and by more than ``static_trim_floor``, teach the static field nothing in that
            step, through any loss; the transient streams still learn from them. A thing that
            moved is where the static field, fitted to every frame at once, cannot follow it
            (RobustNeRF's trimmed loss, Sabour et al. 2023). 0, the default, turns it off: on
            demo/kitchen_dynamic at 1,000 steps (seed 0) every setting tried wrecked the static
            field (8 x median with floor 0.01 from step 300: 16.43 dB on static pixels against
            23.12 without; a fixed 0.01 from step 200: 7.67 dB), because texture it had not yet
            learned looked like outliers to a batch of random rays, and the dynamic stream still
            claimed no sponge (README, "Dynamic scenes"). Runs from before the option read as 0.
        static_trim_floor: misses below this (0-1 colour units, squared) are never trimmed.
        static_trim_after: steps before the trim starts (the static field must first fit the
            static scene, or every pixel would look like an outlier).
        background: what the colour of a training ray's leftover transmittance is composited
            over: ``black``, or ``random``: a uniform random colour per ray and step (instant-ngp's
            trick: a ray only matches its pixel when it is opaque, so the field cannot paint walls
            with half-transparent fog in front of a black void). With transient streams it lies
            behind all of them and behind the static field's own render. Evaluation and renders
            always use black. ``n3f fit`` uses random. On demo/tabletop (2,000 steps of 32,768
            samples, 256 march steps), random raised held-out PSNR from 25.69 and 24.70 dB (seeds 0
            and 1) to 26.85 and 26.16, and with ``aabb_margin`` 0.1 to 27.75 and 27.90. On
            demo/kitchen_dynamic it raised static-pixel PSNR from 24.80 to 26.16 dB (README,
            "Random background and a wider box"). Runs from before the option read as black.
        feature_rendering: ``sample`` (N3F: the feature head on every sample, features
            composited), ``ray`` (geometry codes composited, the feature head once per ray; see
            :class:`n3f.student.field.StudentConfig`), or ``auto``: ``ray`` for static fits,
            ``sample`` with transient streams (whose streams mix per-sample features). ``n3f fit``
            uses auto. Runs from before the option read as sample.
        contraction: the space of a scene that is not forward-facing: ``none`` (its box),
            ``sphere`` (the box plus the world beyond it, contracted; see
            :class:`n3f.render.spaces.ContractedSpace`), or ``auto``: what the scene says
            (``sphere`` for EPIC-KITCHENS and demo/tabletop_unbounded). Forward-facing (NDC)
            scenes keep NDC. ``n3f fit`` uses auto. Runs from before the option read as none.
        motion_after: in a three-stream fit, detect moving pixels (:mod:`n3f.pipeline.motion`:
            multi-view colour consistency with the static field's surface depth) after this many
            steps, and again every ``motion_every`` steps (0: once). From then on
            ``motion_sampling`` of each step's rays are drawn from the flagged pixels the actor
            stream does not hold, and the flagged pixels (grown by ``motion_gate_dilation`` cells)
            give the static field no gradient. 0: off. Runs from before the option read as 0.
        motion_every: steps between detections after the first (0: detect once).
        motion_sampling: share of each step's rays drawn from the flagged pixels.
        motion_threshold: a pixel moves when its best-agreeing neighbour frame differs from it by
            more than this mean absolute RGB difference (0-1 units).
        motion_gate_dilation: the static field also skips this many cells around flagged ones.
        motion_sample_radius: rays are drawn from cells flagged when each neighbour frame's
            best-matching cell within this radius of the projection still differs (``search_radius``
            of :func:`n3f.pipeline.motion.motion_scores`): fewer static cells whose depth is a cell
            off at an object's outline. The gate uses radius 0. Superseded by
            ``motion_sample_opening``, which keeps more of the sponge and fewer static cells
            (README, "The detector in the fit"); the previous version's default was 1.
        motion_sample_opening: rays are drawn from flagged blobs, not lines: the flags that
            survive an opening by a square of ``2 k + 1`` cells, with the flagged cells connected
            to them (:func:`n3f.pipeline.motion.keep_blobs`); 0: all flags. Runs from before the
            option read as 0.
        motion_gate_opening: the same for the cells the static field skips (before
            ``motion_gate_dilation``); 0: all flags. Runs from before the option read as 0. On
            demo/kitchen_dynamic at 1,500 steps (seed 0), openings of 1 with a gate dilation of 2
            (these defaults) kept the static field 1 dB sharper than the previous defaults and
            doubled the dynamic stream's IoU with the sponge.
        motion_stride: the detector scores cells of this many training pixels a side; 0: the
            frame's width over 128, at least 1.
        motion_grow_threshold: when above 0, the kept flags grow through the connected cells
            scoring above this lower threshold (hysteresis, :func:`n3f.pipeline.motion.grow_flags`);
            0: off. On demo/kitchen_dynamic (seeds 0 and 2) 0.05 flagged more of the sponge but
            the dynamic stream held no more of it (README, "More of the sponge flagged").
        motion_quantile: which neighbour frame's colour difference scores a pixel
            (:func:`n3f.pipeline.motion.motion_scores`): 0 the best-agreeing neighbour, 0.34 the
            second best of six (a static point must agree with two frames), up to 0.5 (the median).
            On demo/kitchen_dynamic 0.34 flagged more of the sponge; the dynamic stream held three
            times as much of it on seed 0 and less on seeds 1 and 2 (README, "A second neighbour").
            Against 0 (with the hand hiding, as always) it held more on seed 0 and less on seeds 1
            and 2 (README, "This version's default fitted").
        motion_span, motion_view_step: each training frame is compared with every
            ``motion_view_step``-th training frame up to ``motion_span`` frames before and after it
            in the video (:func:`n3f.pipeline.motion.neighbour_offsets`; the defaults: six
            neighbours, 8, 16 and 24 frames away). On demo/kitchen_dynamic, 80 and 4 (40 neighbours,
            the whole video) with ``motion_quantile`` 0.25 flagged most of the sponge, but also
            static surfaces where the fitted depth is off: the static field lost 1.6-2.0 dB and the
            dynamic stream held less of the sponge (README, "Neighbours across the whole video").
        motion_share_weight: weight of a loss on the rays drawn where the detector is surest (its
            ``sample`` cells): the share of each pixel the ``motion_share_streams`` do not hold,
            summed over those rays and divided by the batch's rays. The detector's flags then say
            which stream holds a pixel, not only where rays go. 0: off. The static field gets no
            gradient from it: those cells are gated. On demo/kitchen_dynamic (1,500 steps, seeds 0
            and 1) 0.1 put 58-65% of the sponge in the transient streams (26-37% without), but a
            third of it in the actor, and both streams also held static pixels flagged wrongly
            (README, "the flags deciding who holds a pixel").
        motion_share_streams: which streams ``motion_share_weight`` hands the flagged pixels to:
            ``transient`` (the dynamic stream or the actor) or ``dynamic`` (the dynamic stream
            alone; the actor's share is charged like the static one).
        motion_static_agrees: when above 0, the detector leaves unflagged the cells whose colour
            the static field alone already renders within this mean absolute RGB difference: the
            static field explains them, so their disagreement with the neighbour frames comes from
            its depth, not from motion (``static_agrees`` of
            :func:`n3f.pipeline.motion.detect_moving_pixels`). Without it a cell flagged wrongly
            stays gated, the static field never fixes its depth there, and the next detection
            flags it again. 0: off. On demo/kitchen_dynamic (1,500 steps) 0.1 made the flags purer
            and, with ``motion_share_weight`` 0.1, kept the actor's IoU (0.94-0.96 against 0.84),
            but the transient streams held less of the sponge (34-50% against 58-65%), and
            alone it left them almost none: the static field paints part of the sponge's path
            before the first detection (README, "The static field's colour as a veto").
        motion_camera_fixed: when above 0 (with ``motion_share_weight`` and ``motion_share_streams``
            ``transient``), the actor's share answers the share loss only in cells that look fixed
            to the camera: whose colour in the image stays within this mean absolute RGB
            difference of the same cell in the two training frames before and after it in the
            video (:func:`n3f.pipeline.motion.camera_fixed_cells`). Elsewhere the flag goes to the
            dynamic stream alone and the actor's share is charged like the static one. A hand
            stays at the same pixels from frame to frame; the moving object and the static world
            slide across the image as the camera moves. 0: off. On demo/kitchen_dynamic (1,500
            steps, three seeds, with ``motion_share_weight`` 0.1) 0.1 kept the actor on the hand
            (IoU 0.92-0.98 against 0.81-0.87 without it) and put 38-63% of the sponge in the
            dynamic stream (18-39% without), but the dynamic stream also held static cells flagged
            wrongly (IoU 0.04-0.06 against 0.13-0.17 with the defaults), and the static field lost
            0.4-0.7 dB on two seeds (README, "What is fixed to the camera").
    """

    scene: str = "demo/tabletop"
    downscale: int = 0
    teacher: str = ""
    teacher_options: dict = field(default_factory=dict)
    pca: int = 64
    steps: int = 3000
    target_samples: int = 1 << 16
    max_rays: int = 8192
    lr: float = 1e-2
    lr_final: float = 1.0
    lr_warmup: int = 0
    feature_weight: float = 0.04
    feature_grad_to_geometry: bool = False
    feature_whitening: float = 1.0
    code_dim: int = 31
    grid_resolution: int = 128
    grid_update_every: int = 8
    grid_decay: float = 0.8
    grid_alpha_threshold: float = 1e-2
    grid_warmup: int = 64
    grid_update_fraction: float = 0.125
    grid_relative: bool = True
    grid_refresh_occupied: bool = False
    distortion_weight: float = 0.0
    density_bias: float = -1.0
    sh_degree: int = 4
    aabb_margin: float = 0.0
    near_gradient_distance: float = 0.0
    march_steps: int = 512
    eval_every: int = 1000
    eval_frames: int = 3
    checkpoint_every: int = 500
    device: str = "cpu"
    seed: int = 0
    backend: str = "auto"
    grid_preset: str = "cpu"
    mlp_precision: str = "auto"
    dynamic: bool | None = None
    transient_sparsity: float = 1e-4
    dynamic_sparsity: float = 1e-3
    actor_depth: float = 0.24
    uncertainty_loss: bool = True
    transient_density_bias: float = -3.0
    static_alone_weight: float = 1.0
    static_alone_scale: float = 0.0
    dynamic_time_grid: bool = False
    dynamic_time_frequencies: int = 0
    transient_embedding_std: float = 0.1
    dynamic_entropy: float = 0.0
    dynamic_entropy_skew: float = 1.0
    dynamic_frame_appearance: bool = True
    error_sampling: float = 0.0
    error_tile: int = 8
    static_trim: float = 0.0
    static_trim_floor: float = 0.01
    static_trim_after: int = 300
    background: str = "black"
    feature_rendering: str = "sample"
    contraction: str = "none"
    motion_after: int = 0
    motion_every: int = 500
    motion_sampling: float = 0.25
    motion_threshold: float = 0.1
    motion_gate_dilation: int = 2
    motion_sample_radius: int = 0
    motion_sample_opening: int = 1
    motion_gate_opening: int = 1
    motion_stride: int = 0
    motion_grow_threshold: float = 0.0
    motion_quantile: float = 0.0
    motion_span: int = 24
    motion_view_step: int = 8
    motion_share_weight: float = 0.0
    motion_share_streams: str = "transient"
    motion_static_agrees: float = 0.0
    motion_camera_fixed: float = 0.0

    def grid_config(self) -> HashGridConfig:
        return {"cpu": CPU_CONFIG, "ngp": NGP_CONFIG}[self.grid_preset]


@dataclass
class TrainData:
    """Training frames: cameras in memory; images and teacher features as tensors over memory maps
    of the whole scene (every frame, not only the training ones), so a long video is read from
    disk page by page instead of being held in RAM. Training frame ``i`` is row ``rows[i]``."""

    images: torch.Tensor  # (n_all, H, W, 3) uint8, memory-mapped
    K: torch.Tensor  # (n, 3, 3)
    c2w: torch.Tensor  # (n, 4, 4)
    features: torch.Tensor  # (n_all, h, w, D) float16, memory-mapped; divide by feature_scale
    geometry: dict
    feature_scale: float
    feature_loss_weights: torch.Tensor  # (D,) per-channel weights of the feature loss, mean 1
    rows: torch.Tensor  # (n,) int64 row of each training frame in images and features


BACKGROUNDS = ("black", "random")
FEATURE_RENDERING_CHOICES = ("auto", *FEATURE_RENDERINGS)


def resolve_feature_rendering(config: FitConfig) -> str:
    """``sample`` or ``ray``: what ``config.feature_rendering`` means for this fit.

    Raises:
        N3FError: an unknown choice, or ``ray`` with transient streams.
    """
    choice = config.feature_rendering
    if choice not in FEATURE_RENDERING_CHOICES:
        raise N3FError(f"feature_rendering must be one of {', '.join(FEATURE_RENDERING_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return "sample" if config.dynamic else "ray"
    if choice == "ray" and config.dynamic:
        raise N3FError("--feature-rendering ray needs a static fit: transient streams mix per-sample features; use sample or auto")
    return choice


CONTRACTION_CHOICES = ("auto", "none", "sphere")


def check_contraction(config: FitConfig) -> None:
    """Raise N3FError unless ``config.contraction`` is one of ``CONTRACTION_CHOICES``."""
    if config.contraction not in CONTRACTION_CHOICES:
        raise N3FError(f"contraction must be one of {', '.join(CONTRACTION_CHOICES)}, got {config.contraction!r}")


def resolve_contraction(config: FitConfig, scene) -> str:
    """``none`` or ``sphere``: what ``config.contraction`` means for ``scene``.

    Raises:
        N3FError: an unknown choice, or ``sphere`` for a forward-facing (NDC) scene.
    """
    check_contraction(config)
    choice = config.contraction
    if choice == "auto":
        return "sphere" if scene.contraction == "sphere" else "none"
    if choice == "sphere" and scene.contraction == "ndc":
        raise N3FError(f"scene {scene.name} is forward-facing: NDC already reaches infinity; fit it with --contraction auto or none")
    return choice


def check_background(config: FitConfig) -> None:
    """Raise N3FError unless ``config.background`` is one of ``BACKGROUNDS``."""
    if config.background not in BACKGROUNDS:
        raise N3FError(f"background must be {' or '.join(BACKGROUNDS)}, got {config.background!r}")


def scheduled_learning_rate(lr: float, final: float, step: int, steps: int, warmup: int = 0) -> float:
    """The learning rate at ``step`` of ``steps``: ``lr * final ** (step / steps)``, decaying
    exponentially from ``lr`` to ``lr * final``, times a linear warm-up from 1% to 100% over the
    first ``warmup`` steps (nerfacc's examples)."""
    ramp = 0.01 + 0.99 * step / warmup if step < warmup else 1.0
    return lr * final ** (step / max(steps, 1)) * ramp


def feature_loss_weights(features: np.ndarray, whitening: float) -> torch.Tensor:
    """Per-channel weights ``var_k ** -whitening`` of the feature loss, normalised to mean 1.

    Args:
        features: (..., D) training features.
        whitening: 0 gives equal weights (plain MSE); 1 divides each channel's squared error by
            its variance.

    Returns:
        (D,) float32.
    """
    return weights_from_variance(features.reshape(-1, features.shape[-1]).astype(np.float64).var(0), whitening)


def weights_from_variance(var: np.ndarray, whitening: float) -> torch.Tensor:
    """:func:`feature_loss_weights` from the channels' variance ``var`` (D,)."""
    w = np.maximum(var, 1e-12 * max(float(var.max()), 1e-30)) ** -float(whitening)
    return torch.from_numpy((w / w.mean()).astype(np.float32))


def sample_features(features: torch.Tensor, frame: torch.Tensor, xy: torch.Tensor, geometry: dict) -> torch.Tensor:
    """Bilinearly sample cached teacher features at pixel positions.

    Args:
        features: (n, h, w, D); frame: (N,) frame index; xy: (N, 2) pixel coordinates.
        geometry: the cache's cell geometry (offsets and steps in pixels).

    Returns:
        (N, D) float32.
    """
    _, h, w, _ = features.shape
    u = ((xy[:, 0] - geometry["offset_x"]) / geometry["step_x"]).clamp(0, w - 1)
    v = ((xy[:, 1] - geometry["offset_y"]) / geometry["step_y"]).clamp(0, h - 1)
    u0 = u.floor().long().clamp(0, max(w - 2, 0))
    v0 = v.floor().long().clamp(0, max(h - 2, 0))
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    u1, v1 = (u0 + 1).clamp(max=w - 1), (v0 + 1).clamp(max=h - 1)
    f = features
    top = f[frame, v0, u0].float() * (1 - fu) + f[frame, v0, u1].float() * fu
    bottom = f[frame, v1, u0].float() * (1 - fu) + f[frame, v1, u1].float() * fu
    return top * (1 - fv) + bottom * fv


def batch_rays(data: TrainData, frame: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays (origins, unit dirs) for pixels ``xy`` (N, 2) of training frames ``frame`` (N,)."""
    K = data.K[frame]
    cam = torch.stack([(xy[:, 0] - K[:, 0, 2]) / K[:, 0, 0], (xy[:, 1] - K[:, 1, 2]) / K[:, 1, 1], torch.ones_like(xy[:, 0])], -1)
    R = data.c2w[frame, :3, :3]
    dirs = torch.einsum("nij,nj->ni", R, cam)
    return data.c2w[frame, :3, 3].contiguous(), dirs / dirs.norm(dim=-1, keepdim=True)


class Trainer:
    """One fit: model, occupancy grid, optimiser and the loop (see the module docstring)."""

    def __init__(self, config: FitConfig, scene, cache, run_dir: Path, progress: Callable | None = None):
        from n3f.render.sampling import OccupancyGrid
        from n3f.render.spaces import BoxSpace, ContractedSpace, NDCSpace
        from n3f.student.field import StudentField

        self.config, self.scene, self.cache, self.run_dir = config, scene, cache, Path(run_dir)
        check_background(config)
        self.progress = progress
        self.device = torch.device(config.device)
        self.dist = distributed.context()
        torch.manual_seed(config.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        train = scene.split_indices("train")
        if not train:
            raise N3FError(f"scene {scene.name} has no training frames")
        held = scene.split_indices("test") + scene.split_indices("val")
        self.train_ids, self.eval_ids = train, held or train[:1]
        self.data = self._load_train_data(train)
        if scene.contraction == "ndc":
            self.space = NDCSpace.from_frames(scene.frames)
        else:
            aabb = torch.tensor(scene.aabb, dtype=torch.float32)
            pad = (aabb[1] - aabb[0]) / 2 * config.aabb_margin
            padded = torch.stack([aabb[0] - pad, aabb[1] + pad])
            self.space = ContractedSpace(padded) if resolve_contraction(config, scene) == "sphere" else BoxSpace(padded)
        box = self.space.aabb
        step_box = self.space.step_box
        self.step_size = float((step_box[1] - step_box[0]).norm()) / config.march_steps
        student = StudentConfig(
            grid=config.grid_config(),
            feature_dim=cache.shape[-1],
            backend=config.backend,
            density_bias=config.density_bias,
            sh_degree=config.sh_degree,
            code_dim=config.code_dim,
            mlp_precision=config.mlp_precision,
            feature_rendering=resolve_feature_rendering(config),
        )
        self.model = StudentField(student, box).to(self.device)
        self.grid = OccupancyGrid(box, config.grid_resolution).to(self.device)
        from n3f.student.optim import student_optimizers

        self.optimizers = student_optimizers(self.model, config.lr)
        self.transient = self._transient_streams(box, cache.shape[-1]) if config.dynamic else None
        if self.transient is not None:
            self.optimizers += student_optimizers(self.transient, config.lr)
        self.error_map = self._error_map() if config.error_sampling > 0 else None
        self.moving = self._moving_pixels() if config.motion_after > 0 else None
        self.n_rays = 256.0
        self.step = 0
        self._params = [p for m in (self.model, self.transient) if m is not None for p in m.parameters()]
        for module in (self.model, self.transient):
            if module is not None:
                distributed.broadcast_module_state(module, self.dist)

    def _transient_streams(self, box: torch.Tensor, feature_dim: int):
        """NeuralDiff's dynamic and actor streams for this scene (``--dynamic``)."""
        from n3f.student.transient import TransientConfig, TransientStreams

        scene = self.scene
        if scene.contraction == "ndc":
            raise N3FError(
                f"scene {scene.name} is forward-facing (NDC); the transient streams need a bounded scene with metric cameras. Fit it without --dynamic."
            )
        if any(f.time is None for f in scene.frames):
            raise N3FError(
                f"scene {scene.name} gives its frames no time; the transient streams (--dynamic) need the frames' order in the video "
                "(EPIC-Diff and n3f scene files carry it). Fit it without --dynamic."
            )
        config = TransientConfig(
            n_frames=len(scene.frames),
            feature_dim=feature_dim,
            actor_depth=self.config.actor_depth,
            backend=self.config.backend,
            density_bias=self.config.transient_density_bias,
            time_grid=self.config.dynamic_time_grid,
            time_frequencies=self.config.dynamic_time_frequencies,
            embedding_std=self.config.transient_embedding_std,
            frame_appearance=self.config.dynamic_frame_appearance,
        )
        times = torch.tensor([f.time for f in scene.frames], dtype=torch.float32)
        return TransientStreams(config, box, self.train_ids, times).to(self.device)

    def _error_map(self):
        """The per-tile colour-error map that ``error_sampling`` draws pixels from."""
        from n3f.pipeline.error_map import ErrorMap

        H, W = self.data.images.shape[1:3]
        return ErrorMap(len(self.data.rows), H, W, tile=self.config.error_tile)

    def _moving_pixels(self):
        """The flags of the moving-pixel detector (``motion_after``), empty until it first runs."""
        from n3f.pipeline.motion import MovingPixels

        check_motion(self.config)
        H, W = self.data.images.shape[1:3]
        moving = MovingPixels(len(self.data.rows), H, W, self.config.motion_stride or max(1, W // 128))
        if self.config.motion_camera_fixed > 0:
            moving.camera_fixed.copy_(torch.from_numpy(self._camera_fixed_cells(moving)))
        return moving

    def _camera_fixed_cells(self, moving):
        """(n_train_rows, h, w) bool: the training frames' cells that look fixed to the camera
        (:func:`n3f.pipeline.motion.camera_fixed_cells` at ``motion_camera_fixed``)."""
        from n3f.pipeline.motion import camera_fixed_cells, cell_images, rows_in_video_order

        h, w = moving.sample.shape[1:]
        images = cell_images(self.data.images[torch.as_tensor(self.train_ids)], h, w)
        return camera_fixed_cells(images, rows_in_video_order(self), self.config.motion_camera_fixed)

    def _detect_due(self) -> bool:
        """Whether the moving-pixel detector runs before the coming step."""
        cfg = self.config
        if self.moving is None or self.step < cfg.motion_after or int(self.moving.detected_at) == self.step:
            return False
        since = self.step - cfg.motion_after
        return since == 0 or (cfg.motion_every > 0 and since % cfg.motion_every == 0)

    def detect_motion(self) -> dict:
        """Run the moving-pixel detector on the training frames now and keep its flags; returns
        its counts (see :func:`n3f.pipeline.motion.detect_moving_pixels`)."""
        from n3f.pipeline.motion import detect_moving_pixels, neighbour_offsets

        cfg = self.config
        sample, gate, counts = detect_moving_pixels(
            self,
            self.moving.stride,
            cfg.motion_threshold,
            cfg.motion_gate_dilation,
            cfg.motion_sample_radius,
            cfg.motion_sample_opening,
            cfg.motion_gate_opening,
            cfg.motion_grow_threshold,
            cfg.motion_quantile,
            progress=self.progress,
            offsets=neighbour_offsets(cfg.motion_span, cfg.motion_view_step),
            static_agrees=cfg.motion_static_agrees,
        )
        self.moving.set(sample, gate, self.step)
        if cfg.motion_camera_fixed > 0:
            counts["sample_cells_camera_fixed"] = int((sample & self.moving.camera_fixed).sum())
        return counts

    @property
    def static_near(self) -> float:
        """Where the static field starts along each ray (space units): beyond the actor stream's
        range in dynamic runs (see :func:`n3f.student.render_streams.render_streams`), else 0."""
        return self.transient.config.actor_depth if self.transient is not None else 0.0

    def frame_index(self, frame) -> int:
        """Scene index of ``frame`` (by image path; novel cameras by nearest time)."""
        if not hasattr(self, "_frame_index"):
            self._frame_index = {str(f.image_path): i for i, f in enumerate(self.scene.frames)}
        i = self._frame_index.get(str(frame.image_path))
        if i is not None:
            return i
        if frame.time is None:
            raise N3FError(f"frame {frame.image_path.name} is not a frame of {self.scene.name} and has no time to pick its embedding")
        times = np.array([f.time for f in self.scene.frames])
        return int(np.argmin(np.abs(times - frame.time)))

    # ------------------------------------------------------------------ data
    def _load_train_data(self, ids: list[int]) -> TrainData:
        frames = [self.scene.frames[i] for i in ids]
        H, W = frames[0].height, frames[0].width
        if any((f.width, f.height) != (W, H) for f in frames):
            raise N3FError("n3f fit needs all training frames at one size; downscale the scene (--downscale) or resize its images")
        if any(f.distortion is not None and not f.distortion.is_identity() for f in frames):
            raise N3FError("this scene's cameras are distorted; undistort it first (`n3f preprocess` writes undistorted pinhole scenes)")
        # copy-on-write maps: writable for torch.from_numpy, never written back to the files
        feats = np.memmap(self.cache.folder / "features.f16", dtype=np.float16, mode="c", shape=self.cache.shape)
        squares, count = np.zeros(feats.shape[-1]), 0
        sums = np.zeros(feats.shape[-1])
        for i in ids:  # moments over the training frames, one frame in memory at a time
            x = np.asarray(feats[i], dtype=np.float64).reshape(-1, feats.shape[-1])
            sums += x.sum(0)
            squares += (x * x).sum(0)
            count += len(x)
        total = float(squares.sum()) / (count * feats.shape[-1])
        var = squares / count - (sums / count) ** 2
        return TrainData(
            images=torch.from_numpy(self._frame_store(H, W)),
            K=torch.tensor(np.stack([f.K for f in frames]), dtype=torch.float32),
            c2w=torch.tensor(np.stack([f.c2w for f in frames]), dtype=torch.float32),
            features=torch.from_numpy(feats),
            geometry=self.cache.meta["geometry"],
            feature_scale=math.sqrt(total) or 1.0,
            feature_loss_weights=weights_from_variance(np.maximum(var, 0.0), self.config.feature_whitening),
            rows=torch.as_tensor(ids, dtype=torch.long),
        )

    def _frame_store(self, H: int, W: int) -> np.ndarray:
        """Every frame of the scene as one uint8 memory map (n_all, H, W, 3), written once beside
        the feature cache (``frames-WxH.u8``: the cache's key already covers the images) and reused
        by later runs; frames are decoded one at a time, so writing it takes one frame of memory."""
        import os

        from n3f.scene.images import load_frame_image

        path = self.cache.folder / f"frames-{W}x{H}.u8"
        shape = (len(self.scene.frames), H, W, 3)
        if not path.is_file() or path.stat().st_size != int(np.prod(shape)):
            partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
            store = np.memmap(partial, dtype=np.uint8, mode="w+", shape=shape)
            ids = range(len(self.scene.frames))
            for i in self.progress(ids, "caching frames", len(ids)) if self.progress else ids:
                frame = self.scene.frames[i]
                if (frame.width, frame.height) == (W, H):  # held-out frames of other sizes are never sampled
                    store[i] = (load_frame_image(frame) * 255 + 0.5).astype(np.uint8)
            store.flush()
            del store
            os.replace(partial, path)  # atomic: concurrent ranks each write their own copy
        return np.memmap(path, dtype=np.uint8, mode="c", shape=shape)

    # ------------------------------------------------------------------ one step
    def field_fn(self, features: bool = True):
        """The student as a ``render_rays`` field; pass ``decoders=self.model.render_decoders(features)``
        with it (per-ray feature rendering returns codes here)."""
        model = self.model
        per_sample = model.config.feature_rendering == "sample"
        return lambda points, dirs: model(points, dirs, features=features, decode_features=per_sample)

    def train_step(self) -> dict:
        cfg = self.config
        n, (H, W) = len(self.data.rows), self.data.images.shape[1:3]
        if self.step >= cfg.grid_warmup and self.step % cfg.grid_update_every == 0:
            threshold = cfg.grid_alpha_threshold / self.step_size
            self.grid.update(
                self._grid_density(),
                generator=self.generator,
                decay=cfg.grid_decay,
                threshold=threshold,
                fraction=cfg.grid_update_fraction,
                relative=cfg.grid_relative,
                refresh_occupied=cfg.grid_refresh_occupied,
            )
            distributed.broadcast_module_state(self.grid, self.dist)
        detected = self.detect_motion() if self._detect_due() else None
        n_rays = int(min(cfg.max_rays, max(256, self.n_rays)))
        frame = torch.randint(0, n, (n_rays,), generator=self.generator)
        px = torch.randint(0, W, (n_rays,), generator=self.generator)
        py = torch.randint(0, H, (n_rays,), generator=self.generator)
        drawn = []  # the first rays come from the error map and the moving pixels instead
        if self.error_map is not None:
            drawn.append(self.error_map.draw(round(cfg.error_sampling * n_rays), self.generator))
        if self.moving is not None and cfg.motion_sampling > 0:
            drawn.append(self.moving.draw(round(cfg.motion_sampling * n_rays), self.generator))
        drawn = [d for d in drawn if d is not None]
        if drawn:
            k = sum(len(d[0]) for d in drawn)
            frame, px, py = (torch.cat([*(d[i] for d in drawn), u[k:]]) for i, u in enumerate((frame, px, py)))
        jitter = torch.rand(n_rays, generator=self.generator)
        background = torch.rand(n_rays, 3, generator=self.generator) if cfg.background == "random" else None
        if self.dist.active:  # every rank drew the global batch; keep this rank's slice
            lo, hi = distributed.shard_range(n_rays, self.dist)
            frame, px, py, jitter = frame[lo:hi], px[lo:hi], py[lo:hi], jitter[lo:hi]
            background = None if background is None else background[lo:hi]
        xy = torch.stack([px, py], -1).float() + 0.5
        origins, dirs = batch_rays(self.data, frame, xy)
        row = self.data.rows[frame]
        target_rgb = self.data.images[row, py, px].float() / 255
        target_feat = sample_features(self.data.features, row, xy, self.data.geometry) / self.data.feature_scale
        detach = () if cfg.feature_grad_to_geometry else ("feature",)
        if self.transient is not None:
            moving = flagged = actor_may_hold = None
            if self.moving is not None and int(self.moving.detected_at) >= 0:
                moving = self.moving.gated(frame, px, py)
                flagged = self.moving.sampled(frame, px, py) if cfg.motion_share_weight > 0 else None
                actor_may_hold = self.moving.actor_may_hold(frame, px, py) if cfg.motion_camera_fixed > 0 else None
            stats = self._transient_step(
                frame, origins, dirs, jitter, target_rgb, target_feat, detach, n_rays, background, moving, flagged, actor_may_hold
            )
        else:
            stats = self._static_step(frame, origins, dirs, jitter, target_rgb, target_feat, detach, n_rays, background)
        if self.error_map is not None:
            self.error_map.update(frame, px, py, stats.pop("residual"))
        if detected is not None:
            stats["motion"] = detected
        return stats

    def _static_step(self, frame, origins, dirs, jitter, target_rgb, target_feat, detach, n_rays: int, background=None) -> dict:
        """One step of the plain student: colour and feature losses (and the optional distortion
        loss). ``background``: (n, 3) colours behind the rays, or None for black."""
        from n3f.render.render import render_rays

        cfg = self.config
        out = render_rays(
            self.field_fn(),
            origins.to(self.device),
            dirs.to(self.device),
            self.space,
            self.grid,
            self.step_size,
            jitter=jitter.to(self.device),
            detach_weights=detach,
            background=None if background is None else {"rgb": background.to(self.device)},
            density_fn=self.model.density,
            decoders=self.model.render_decoders(),
            return_samples=cfg.distortion_weight > 0,
            near_gradient_distance=cfg.near_gradient_distance * self.step_size * cfg.march_steps / 2 or None,
        )
        sq = (out["rgb"] - target_rgb.to(self.device)) ** 2
        rgb_loss = sq.mean()
        feat_loss = torch.mean((out["feature"] - target_feat.to(self.device)) ** 2 * self.data.feature_loss_weights.to(self.device))
        loss = rgb_loss + cfg.feature_weight * feat_loss
        if cfg.distortion_weight > 0:
            from n3f.render.volume import distortion_loss

            smp = out["samples"]
            loss = (
                loss
                + cfg.distortion_weight
                * distortion_loss(smp["weights"], smp["t_starts"], smp["t_ends"], smp["ray_indices"], len(frame)).mean()
            )
        share = len(frame) / n_rays
        self._optimise(loss, share)
        return self._finish_step(loss, rgb_loss, feat_loss, out, n_rays, share, sq)

    def _finish_step(self, loss, rgb_loss, feat_loss, out: dict, n_rays: int, share: float, sq: torch.Tensor) -> dict:
        """Adapt the ray count and report the step. ``n_rays`` is the global batch; in a
        distributed run the losses (this rank's means) and sample counts are summed over ranks,
        each loss weighted by its rank's ``share`` of the batch, giving the global means. ``sq``
        (n, 3) squared colour errors of this rank's rays become ``residual`` (n,), their mean over
        RGB, for the error map (only when there is one)."""
        cfg = self.config
        values = [float(loss.detach()), float(rgb_loss.detach()), float(feat_loss.detach())]
        if self.dist.active:
            values = [v * share for v in values]
        loss, rgb_loss, feat_loss, n_samples = distributed.allreduce_sum([*values, float(out["n_samples"])], self.dist)
        n_samples = max(int(n_samples), 1)
        self.n_rays = 0.5 * self.n_rays + 0.5 * n_rays * cfg.target_samples / n_samples
        self.step += 1
        return {
            "loss": float(loss),
            "rgb_loss": float(rgb_loss),
            "feature_loss": float(feat_loss),
            "psnr": -10 * math.log10(max(float(rgb_loss), 1e-10)),
            "rays": n_rays,
            "samples": n_samples,
            **({"residual": sq.detach().mean(-1).cpu()} if self.error_map is not None else {}),
        }

    def _optimise(self, loss: torch.Tensor, share: float = 1.0) -> None:
        """Backpropagate ``loss`` (this rank's mean over its rays) and step the optimisers.

        In a distributed run the loss is weighted by this rank's ``share`` of the global batch and
        the gradients are summed over ranks, which gives every rank the gradient of the global mean
        (see :mod:`n3f.pipeline.distributed`); all ranks raise together on a non-finite loss."""
        if self.dist.active:
            loss = loss * share
            finite = distributed.allreduce_sum([float(loss.detach())], self.dist)[0]
        else:
            finite = float(loss.detach())
        if not math.isfinite(finite):
            raise FloatingPointError(f"loss is {finite}")
        # One sum instead of an elementwise test: NaN and infinities propagate into it, and it
        # reads the table once (an elementwise isfinite cost about 3% of a CPU step).
        if not math.isfinite(float(self.model.encoding.table.detach().sum())):
            raise FloatingPointError("the hash table holds NaN or infinite values")
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.allreduce_gradients(self._params, self.dist)
        lr = self.learning_rate()
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()

    def learning_rate(self) -> float:
        """The learning rate of the coming step (a function of the step alone, so resumes are exact)."""
        cfg = self.config
        return scheduled_learning_rate(cfg.lr, cfg.lr_final, self.step, cfg.steps, cfg.lr_warmup)

    def _grid_density(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """What the occupancy grid sees: the static density, plus the dynamic stream's in a random
        training frame (drawn anew at each refresh, so cells a moving object passes stay open)."""
        if self.transient is None:
            return self.model.density
        frame = self.train_ids[int(torch.randint(0, len(self.train_ids), (1,), generator=self.generator))]
        transient = self.transient

        def density(points: torch.Tensor) -> torch.Tensor:
            ids = torch.full((len(points),), frame, dtype=torch.long, device=points.device)
            return self.model.density(points) + transient.dynamic_fields(points, ids, features=False)["sigma"]

        return density

    def _w2c(self, c2w: torch.Tensor) -> torch.Tensor:
        """(n, 4, 4) camera-to-world -> (n, 3, 4) world-to-camera."""
        R = c2w[:, :3, :3].transpose(1, 2)
        return torch.cat([R, -(R @ c2w[:, :3, 3:4])], -1)

    def _transient_step(
        self,
        frame,
        origins,
        dirs,
        jitter,
        target_rgb,
        target_feat,
        detach,
        n_rays: int,
        background=None,
        moving=None,
        flagged=None,
        actor_may_hold=None,
    ) -> dict:
        """One step of the three-stream student: colour and feature losses on the composite of all
        streams, the uncertainty's likelihood, the transient sparsity penalty and the static field's
        own loss (:func:`n3f.student.transient.static_alone_loss`). ``background``: (n, 3)
        colours behind the rays, or None for black. ``moving``: (n,) bool, rays the moving-pixel
        detector flagged (they give the static field no gradient), or None. ``flagged``: (n,) bool,
        rays in the detector's surest cells, charged by ``motion_share_weight``, or None.
        ``actor_may_hold``: (n,) bool, rays whose flag the actor's share may answer
        (``motion_camera_fixed``), or None for all of them."""
        from n3f.student.render_streams import render_streams
        from n3f.student.transient import static_alone_loss

        cfg, dev = self.config, self.device
        ids = torch.as_tensor(self.train_ids, dtype=torch.long)[frame]
        out = render_streams(
            self.model,
            self.transient,
            origins.to(dev),
            dirs.to(dev),
            ids.to(dev),
            self._w2c(self.data.c2w[frame]).to(dev),
            self.space,
            self.grid,
            self.step_size,
            jitter=jitter.to(dev),
            detach_weights=detach,
            static_alone=cfg.static_alone_weight > 0,
            static_gate=self._static_gate(target_rgb.to(dev), None if moving is None else moving.to(dev)),
            entropy_skew=cfg.dynamic_entropy_skew if cfg.dynamic_entropy > 0 else None,
            background=None if background is None else background.to(dev),
            static_distortion=cfg.static_alone_weight > 0 and cfg.distortion_weight > 0,
        )
        sq = (out["rgb"] - target_rgb.to(dev)) ** 2
        beta_min = self.transient.config.beta_min
        beta = beta_min + out["beta"]
        rgb_loss = sq.mean()
        # The uncertainty learns NeuralDiff's negative log-likelihood of the *detached* residual (scaled
        # by 2 beta_min^2, which leaves the optimal beta unchanged), and the colours a plain MSE. With
        # NeuralDiff's weighting the colour loss itself (|C - C_gt|^2 / (2 beta^2)), a few hundred CPU
        # steps let beta grow on every pixel and mute the static field's gradients: at 300 steps on
        # demo/kitchen_dynamic the frames stayed fog (beta 0.09 on static pixels, no stream claimed
        # the hand). Here a transient stream earns pixels only by explaining them better.
        residual = sq.detach().mean(-1, keepdim=True)
        beta_term = torch.mean(residual * (beta_min / beta) ** 2 + 2 * beta_min**2 * torch.log(beta / beta_min))
        colour_term = rgb_loss + (beta_term if self.config.uncertainty_loss else 0.0)
        feat_loss = torch.mean((out["feature"] - target_feat.to(dev)) ** 2 * self.data.feature_loss_weights.to(dev))
        loss = (
            colour_term
            + cfg.feature_weight * feat_loss
            + cfg.transient_sparsity * out["actor_sigma"]
            + cfg.dynamic_sparsity * out["dynamic_sigma"]
        )
        if cfg.dynamic_entropy > 0:
            loss = loss + cfg.dynamic_entropy * out["dynamic_entropy"]
        if flagged is not None:
            held = out["share/dynamic"]
            if cfg.motion_share_streams == "transient":
                held = held + out["share/actor"] * (1.0 if actor_may_hold is None else actor_may_hold.to(dev, held.dtype)[:, None])
            loss = loss + cfg.motion_share_weight * ((1 - held[:, 0]) * flagged.to(dev, held.dtype)).sum() / len(frame)
        if cfg.static_alone_weight > 0:
            alone_rgb, alone_feat = static_alone_loss(
                out, target_rgb.to(dev), target_feat.to(dev), self.data.feature_loss_weights.to(dev), cfg.static_alone_scale
            )
            loss = loss + cfg.static_alone_weight * (alone_rgb + cfg.feature_weight * alone_feat)
            if cfg.distortion_weight > 0:
                loss = loss + cfg.distortion_weight * out["static/distortion"].mean()
        share = len(frame) / n_rays
        self._optimise(loss, share)
        return self._finish_step(loss, rgb_loss, feat_loss, out, n_rays, share, sq)

    def _static_gate(self, target_rgb: torch.Tensor, moving: torch.Tensor | None = None):
        """The gate of :func:`n3f.student.render_streams.render_streams` for this step: rays whose
        static render misses the pixel's colour (mean squared error) by more than ``static_trim``
        times the batch's median miss, and by more than ``static_trim_floor``, give the static
        field no gradient, and so do the rays ``moving`` (n,) bool flags. None when neither
        applies (before ``static_trim_after`` steps or with the trim off, and no flags)."""
        cfg = self.config
        keep = None if moving is None else (~moving).to(target_rgb.dtype)
        if cfg.static_trim <= 0 or self.step < cfg.static_trim_after:
            return None if keep is None else (lambda alone: keep)

        def gate(alone: dict[str, torch.Tensor]) -> torch.Tensor:
            miss = ((alone["rgb"] - target_rgb) ** 2).mean(-1)
            threshold = torch.clamp_min(cfg.static_trim * miss.median(), cfg.static_trim_floor)
            trimmed = (miss <= threshold).to(target_rgb.dtype)
            return trimmed if keep is None else trimmed * keep

        return gate

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def render_pixels(
        self,
        frame,
        xy: torch.Tensor,
        chunk: int = 8192,
        features: bool = True,
        field=None,
        surface_window: float | None = None,
        streams: str = "static",
    ) -> dict[str, torch.Tensor]:
        """Render the rays through pixel positions ``xy`` (N, 2) (continuous pixel coordinates,
        centres at +0.5) of a frame: ``rgb`` (N, 3), ``depth`` (N,) world distance along the ray,
        ``opacity`` (N,) and ``feature`` (N, D). ``field`` replaces the student (edited renders).
        ``surface_window`` (space units) adds the surface composites ``surface/<channel>``,
        ``surface/depth`` (N,) and ``surface/share`` (N,) (see :func:`n3f.render.volume.surface_composite`).
        ``streams``: ``static`` renders the static field only (what query, evaluation and export use
        by default); ``all`` adds a dynamic run's transient streams with the frame's embeddings and
        also returns ``share/static``, ``share/dynamic``, ``share/actor`` (N,) and ``beta`` (N,)."""
        from n3f.render.rays import pixel_rays
        from n3f.render.render import render_rays
        from n3f.student.transient import STREAM_CHOICES

        if streams not in STREAM_CHOICES:
            raise N3FError(f"unknown streams {streams!r}; use one of {', '.join(STREAM_CHOICES)}")
        if streams == "all" and self.transient is None:
            raise N3FError(
                "--streams all needs a run fitted with transient streams (n3f fit --dynamic); this run has the static field only"
            )
        if streams == "all" and field is not None:
            raise N3FError("edited renders use the static field only; drop --streams all")

        coeffs = frame.distortion.opencv_coefficients() if frame.distortion is not None else None
        origins, dirs = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy, coeffs)
        parts: dict[str, list] = {}
        if streams == "all":
            from n3f.student.render_streams import render_streams

            index = self.frame_index(frame)
            w2c = self._w2c(torch.tensor(frame.c2w, dtype=torch.float32)[None])
        for start in range(0, len(xy), chunk):
            if streams == "all":
                n = len(origins[start : start + chunk])
                out = render_streams(
                    self.model,
                    self.transient,
                    origins[start : start + chunk].to(self.device),
                    dirs[start : start + chunk].to(self.device),
                    torch.full((n,), index, dtype=torch.long, device=self.device),
                    w2c.expand(n, -1, -1).to(self.device),
                    self.space,
                    self.grid,
                    self.step_size,
                    features=features,
                    surface_window=surface_window,
                )
                out.pop("dynamic_sigma"), out.pop("actor_sigma")
                for k, v in out.items():
                    if k != "n_samples":
                        parts.setdefault(k, []).append(v.cpu())
                continue
            out = render_rays(
                field or self.field_fn(features),
                origins[start : start + chunk].to(self.device),
                dirs[start : start + chunk].to(self.device),
                self.space,
                self.grid,
                self.step_size,
                density_fn=(field or self.model).density,
                surface_window=surface_window,
                near=self.static_near,
                decoders=None if field is not None else self.model.render_decoders(features),
            )
            for k, v in out.items():
                if k != "n_samples":
                    parts.setdefault(k, []).append(v.cpu())
        scalar = ("depth", "opacity", "surface/depth", "surface/share", "beta", "share/static", "share/dynamic", "share/actor")
        return {k: torch.cat(v).squeeze(-1) if k in scalar else torch.cat(v) for k, v in parts.items()}

    @torch.no_grad()
    def actor_opacity(self, frame, xy: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """(N,) opacity of the actor stream alone on the rays through pixel positions ``xy`` (N, 2)
        of a frame of a three-stream run (see :func:`n3f.student.render_streams.actor_opacity`)."""
        from n3f.render.rays import pixel_rays
        from n3f.student.render_streams import actor_opacity

        coeffs = frame.distortion.opencv_coefficients() if frame.distortion is not None else None
        _, dirs = pixel_rays(torch.tensor(frame.K), torch.tensor(frame.c2w), xy, coeffs)
        w2c = self._w2c(torch.tensor(frame.c2w, dtype=torch.float32)[None]).to(self.device)
        ids = torch.full((chunk,), self.frame_index(frame), dtype=torch.long, device=self.device)
        parts = []
        for start in range(0, len(xy), chunk):
            d = dirs[start : start + chunk].to(self.device)
            parts.append(actor_opacity(self.transient, d, ids[: len(d)], w2c.expand(len(d), -1, -1)).cpu())
        return torch.cat(parts)

    @torch.no_grad()
    def render_frame(self, frame, chunk: int = 8192, features: bool = True, field=None) -> dict[str, torch.Tensor]:
        """Render a whole frame: ``rgb`` (H, W, 3), ``depth`` (H, W), ``opacity`` and ``feature`` (H, W, D)."""
        from n3f.render.rays import pixel_grid

        r = self.render_pixels(frame, pixel_grid(frame.width, frame.height), chunk, features, field)
        H, W = frame.height, frame.width
        return {k: v.reshape(H, W) if v.dim() == 1 else v.reshape(H, W, -1) for k, v in r.items()}

    @torch.no_grad()
    def evaluate(self, ids: list[int], write_renders: bool = True) -> dict:
        """PSNR, SSIM and feature cosine to the teacher on frames ``ids``; renders pictures."""
        from kornia.metrics import ssim

        from n3f.scene.images import load_frame_image

        psnrs, ssims, cosines = [], [], []
        feats = self.cache.features()
        out_dir = self.run_dir / "renders" / f"step-{self.step:07d}"
        for i in ids:
            frame = self.scene.frames[i]
            r = self.render_frame(frame)
            gt = torch.from_numpy(load_frame_image(frame))
            mse = float(torch.mean((r["rgb"].clamp(0, 1) - gt) ** 2))
            psnrs.append(-10 * math.log10(max(mse, 1e-10)))
            ssims.append(float(ssim(r["rgb"].clamp(0, 1).permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], 11).mean()))
            teacher = self._teacher_at_pixels(np.asarray(feats[i], dtype=np.float32), frame)
            cosines.append(
                float(
                    torch.nn.functional.cosine_similarity(
                        r["feature"].reshape(-1, teacher.shape[-1]), teacher.reshape(-1, teacher.shape[-1]), dim=-1
                    ).mean()
                )
            )
            if write_renders:
                self._write_render(out_dir / f"{safe_name(frame.image_path.stem)}.png", r, gt)
        return {
            "eval/psnr": float(np.mean(psnrs)),
            "eval/ssim": float(np.mean(ssims)),
            "eval/feature_cosine": float(np.mean(cosines)),
            "eval/frames": len(ids),
        }

    def _teacher_at_pixels(self, feats: np.ndarray, frame) -> torch.Tensor:
        from n3f.render.rays import pixel_grid

        xy = pixel_grid(frame.width, frame.height)
        t = torch.from_numpy(feats / self.data.feature_scale)[None]
        return sample_features(t, torch.zeros(len(xy), dtype=torch.long), xy, self.data.geometry).reshape(frame.height, frame.width, -1)

    def _write_render(self, path: Path, r: dict, gt: torch.Tensor) -> None:
        import cv2

        from n3f.pipeline.visualise import depth_to_rgb, features_to_rgb

        rgb = (r["rgb"].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        truth = (gt.numpy() * 255 + 0.5).astype(np.uint8)
        depth = depth_to_rgb(r["depth"].numpy())
        feat = features_to_rgb(r["feature"].numpy())
        panel = np.concatenate([truth, rgb, depth, feat], axis=1)
        atomic_write_bytes(path, cv2.imencode(".png", panel[:, :, ::-1])[1].tobytes())

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "student_config": self.model.config.to_dict(),
            "grid": self.grid.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "n_rays": self.n_rays,
            "space": self.space.state(),
            "step_size": self.step_size,
            "feature_scale": self.data.feature_scale,
            "feature_cache": str(self.cache.folder),
            "teacher": self.cache.teacher,
            **(
                {"transient": self.transient.state_dict(), "transient_config": self.transient.config.to_dict()}
                if self.transient is not None
                else {}
            ),
            **({"error_map": self.error_map.state_dict()} if self.error_map is not None else {}),
            **({"moving_pixels": self.moving.state_dict()} if self.moving is not None else {}),
        }

    def save_checkpoint(self) -> Path:
        import io

        buf = io.BytesIO()
        torch.save(self.state(), buf)
        path = checkpoint_path(self.run_dir, self.step)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore model, grid, optimisers, RNGs and step from ``path``.

        Raises:
            N3FError: the file is unreadable, from a newer n3f, or does not fit this run's config,
                scene or teacher features (the message names the file and the mismatch).
        """
        # read onto the CPU: load_state_dict copies into each module's own device, and the random
        # generators' states must stay CPU tensors (a run resumes or loads on a GPU too)
        state = read_checkpoint(path)
        if state.get("schema_version", 0) > SCHEMA_VERSION:
            raise N3FError(f"checkpoint {path} is from a newer n3f (schema {state['schema_version']}); upgrade n3f")
        if state.get("teacher") not in (None, self.cache.teacher):
            raise N3FError(
                f"checkpoint {path} was fitted to {state['teacher']} features but this run's feature cache is {self.cache.teacher}; "
                "the run's config.toml no longer matches its checkpoints"
            )
        try:
            self._load_states(state, path)
        except (RuntimeError, KeyError) as exc:  # shapes differ: config.toml edited, or a checkpoint of another run
            first = str(exc).strip().splitlines()
            raise N3FError(
                f"checkpoint {path} does not fit this run's config ({' '.join(first[:2])[:300]}); "
                "load it with the config.toml it was written with"
            ) from exc

    def _load_states(self, state: dict, path: Path) -> None:
        self.model.load_state_dict(state["model"])
        if (self.transient is not None) != ("transient" in state):
            has = "has" if "transient" in state else "has no"
            raise N3FError(
                f"checkpoint {path} {has} transient streams but this run's config says dynamic = {bool(self.transient)}; "
                "resume with the config the run was started with"
            )
        if self.transient is not None:
            emb = state["transient"].get("dynamic.embedding.weight")
            if emb is None or tuple(emb.shape) != tuple(self.transient.dynamic.embedding.weight.shape):
                shape = "missing" if emb is None else f"of shape {tuple(emb.shape)}"
                raise N3FError(
                    f"checkpoint {path}: the frame embeddings are {shape}, but scene {self.scene.name} has {len(self.scene.frames)} frames "
                    f"(expected {tuple(self.transient.dynamic.embedding.weight.shape)}); the scene changed since the run started"
                )
            self.transient.load_state_dict(state["transient"])
        if self.error_map is not None:
            if "error_map" not in state:
                raise N3FError(
                    f"checkpoint {path} has no error map but this run's config draws pixels from one (error_sampling = "
                    f"{self.config.error_sampling}); resume with the config the run was started with"
                )
            self.error_map.load_state_dict(state["error_map"])
        if self.moving is not None:
            if "moving_pixels" not in state:
                raise N3FError(
                    f"checkpoint {path} has no moving-pixel flags but this run's config detects them (motion_after = "
                    f"{self.config.motion_after}); resume with the config the run was started with"
                )
            self.moving.load_state_dict(state["moving_pixels"])
        self.grid.load_state_dict(state["grid"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.n_rays = state["n_rays"]
        self.step = state["step"]


def read_checkpoint(path: Path, device="cpu") -> dict:
    """The state dict saved at ``path``.

    Raises:
        N3FError: the file is torn, not a checkpoint, or unreadable (the message names it).
    """
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:  # torn or foreign file
        raise N3FError(f"checkpoint {path} cannot be read ({str(exc)[:200]}); delete it to resume from the one before") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise N3FError(f"{path} is not an n3f checkpoint")
    return state


def _append_metrics(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only metric rows up to ``step`` (so a resumed run's log equals an uninterrupted one's)."""
    if not path.is_file():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                rows.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):  # a row torn by a kill mid-write: rewritten by the resumed run
            continue
    atomic_write_text(path, "".join(r + "\n" for r in rows))


def new_run_dir(output: Path, scene_name: str, teacher: str) -> Path:
    """``<output>/<scene>/<teacher>/<YYYYmmdd-HHMMSS>`` (a suffix is added rather than overwrite)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output) / safe_name(scene_name) / safe_name(teacher) / stamp
    run, k = base, 1
    while run.exists():
        run = base.with_name(f"{stamp}-{k}")
        k += 1
    return run


def write_config(run_dir: Path, config: FitConfig, extra: dict) -> None:
    from n3f.config import dumps_toml

    doc = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in dataclasses.asdict(config).items() if k != "teacher_options"}}
    doc["teacher_options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.teacher_options.items() if v is not None}
    doc["resolved"] = extra
    atomic_write_text(run_dir / "config.toml", dumps_toml(doc))


def read_config(run_dir: Path) -> FitConfig:
    """The FitConfig stored in a run folder."""
    from n3f.config import load_toml

    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise N3FError(f"{run_dir} is not a run folder (no config.toml)")
    doc = load_toml(path)
    if doc.get("schema_version", 0) > SCHEMA_VERSION:
        raise N3FError(f"{path} is from a newer n3f; upgrade n3f")
    known = {f.name for f in dataclasses.fields(FitConfig)}
    doc.setdefault("mlp_precision", "fp32")  # runs from before the option were fitted in float32
    doc.setdefault("static_alone_weight", 0.0)  # and without the static field's own loss
    doc.setdefault("dynamic_time_grid", False)  # and with a dynamic stream that knew frames by embedding alone
    doc.setdefault("error_sampling", 0.0)  # and with uniform pixel draws
    doc.setdefault("background", "black")  # and over a black background
    doc.setdefault("motion_sample_opening", 0)  # and drew rays from every flag of the detector
    doc.setdefault("motion_gate_opening", 0)
    return FitConfig(**{k: v for k, v in doc.items() if k in known})


def fit(
    config: FitConfig,
    output: Path = Path("runs"),
    resume: Path | None = None,
    progress_factory: Callable | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Run (or resume) a fit; returns the run folder.

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this: the process group is joined here,
    rank 0 prepares the scene, the features and the run folder before the others read them, and
    the ranks train together (see :mod:`n3f.pipeline.distributed`). A distributed run's folder and
    checkpoints are a single-process run's; either resumes the other.

    Raises:
        N3FError: bad input, or a NaN/diverging loss (the last good checkpoint is kept and named).
    """
    from n3f.pipeline.features import compute_features
    from n3f.progress import make_progress
    from n3f.scene.catalog import load_scene

    if resume is not None:
        config = read_config(Path(resume))
    if not 0 <= config.error_sampling <= 1:
        raise N3FError(f"error_sampling is a share of the rays, between 0 and 1 (got {config.error_sampling})")
    check_background(config)  # a bad name fails before the scene is loaded
    if config.feature_rendering not in FEATURE_RENDERING_CHOICES:
        resolve_feature_rendering(config)  # raises, naming the choices
    check_contraction(config)  # before the scene is loaded
    if config.aabb_margin < 0:
        raise N3FError(f"aabb_margin grows the scene box by a share of its half-size, at least 0 (got {config.aabb_margin})")
    if config.error_sampling > 0 and config.error_tile < 1:
        raise N3FError(f"error_tile is the error map's tile side in pixels, at least 1 (got {config.error_tile})")
    ctx, device = distributed.init_from_env(config.device)
    if ctx.active and config.error_sampling > 0:
        raise N3FError("--error-sampling is not supported in multi-process fits yet (each rank would keep its own map); use --devices 1")
    track = make_progress(quiet or not ctx.is_main)
    with distributed.main_first(ctx):  # rank 0 renders/caches first; the others then read the cache
        scene = load_scene(config.scene, downscale=config.downscale or None, progress=track)
        cache = compute_features(
            scene, config.teacher or None, {"device": device, **config.teacher_options}, pca=config.pca, seed=config.seed, progress=track
        )
    if config.mlp_precision == "auto":  # record what auto meant, so a resume under a later meaning computes alike
        from n3f.student.field import resolve_mlp_precision

        config = dataclasses.replace(config, mlp_precision=resolve_mlp_precision("auto"))
    if config.dynamic is None:  # a new run follows its recipe; runs from before the option were static
        config = dataclasses.replace(config, dynamic=resume is None and bool(scene.metadata.get("recipe_dynamic", False)))
    config = dataclasses.replace(
        config, feature_rendering=resolve_feature_rendering(config), contraction=resolve_contraction(config, scene)
    )
    check_motion(config)  # before any run folder exists
    if config.dynamic and config.distortion_weight > 0 and config.static_alone_weight <= 0:
        raise N3FError(
            "with transient streams distortion_weight charges the static field's own render, which static_alone_weight 0 turns off; "
            "set static_alone_weight above 0 or distortion_weight to 0"
        )
    if resume is not None:
        run_dir = Path(resume)
    elif ctx.is_main:
        run_dir = new_run_dir(output, scene.name, cache.meta["teacher"])
        run_dir.mkdir(parents=True)
        write_config(run_dir, config, {"teacher": cache.teacher, "feature_cache": str(cache.folder), "scene_source": str(scene.source)})
    run_dir = distributed.broadcast_object(run_dir if ctx.is_main else None, ctx)
    trainer = Trainer(dataclasses.replace(config, device=device), scene, cache, run_dir, progress=track)
    metrics_path = run_dir / "metrics.jsonl"
    if resume is not None:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            trainer.load_checkpoint(ckpt)
            if ctx.is_main:
                log(f"resumed {run_dir} from {ckpt.name}")
        distributed.barrier(ctx)  # every rank has read the checkpoint before rank 0 touches the log
        if ctx.is_main:
            _truncate_metrics(metrics_path, trainer.step)
    _loop(trainer, metrics_path, quiet or not ctx.is_main)
    distributed.barrier(ctx)
    return run_dir


def _loop(trainer: Trainer, metrics_path: Path, quiet: bool) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cfg = trainer.config
    columns = [
        TextColumn("fit"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    last_good = latest_checkpoint(trainer.run_dir)
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as bar:
        task = bar.add_task("fit", total=cfg.steps, completed=trainer.step, info="")
        window_start, window_rays = time.perf_counter(), 0
        while trainer.step < cfg.steps:
            try:
                stats = trainer.train_step()
            except FloatingPointError as exc:
                where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
                raise N3FError(f"training diverged at step {trainer.step + 1} ({exc}); {where}. Try a lower --lr.") from exc
            window_rays += stats["rays"]
            if not trainer.dist.is_main:  # rank 0 alone writes metrics, renders and checkpoints
                continue
            if "motion" in stats:  # the moving-pixel detector ran before this step
                _append_metrics(metrics_path, {"step": trainer.step - 1, **{f"motion/{k}": v for k, v in stats["motion"].items()}})
            if trainer.step % 25 == 0 or trainer.step == cfg.steps:
                now = time.perf_counter()
                rays_s = window_rays / max(now - window_start, 1e-9)
                window_start, window_rays = now, 0
                bar.update(
                    task,
                    completed=trainer.step,
                    info=f"loss {stats['loss']:.4f}  psnr {stats['psnr']:.2f}  {rays_s:,.0f} rays/s  {stats['samples'] / stats['rays']:.0f} spr",
                )
                _append_metrics(
                    metrics_path,
                    {
                        "step": trainer.step,
                        "train/loss": stats["loss"],
                        "train/psnr": stats["psnr"],
                        "train/feature_loss": stats["feature_loss"],
                        "train/rays": stats["rays"],
                        "train/samples": stats["samples"],
                    },
                )
            final = trainer.step == cfg.steps
            if final or (cfg.eval_every and trainer.step % cfg.eval_every == 0):
                ids = trainer.eval_ids if final else trainer.eval_ids[: cfg.eval_frames]
                _append_metrics(metrics_path, {"step": trainer.step, **trainer.evaluate(ids)})
            if final or trainer.step % cfg.checkpoint_every == 0:
                last_good = trainer.save_checkpoint()


def check_motion(config: FitConfig) -> None:
    """Refuse moving-pixel detector settings that cannot work (``motion_*`` of :class:`FitConfig`),
    ``config.dynamic`` already resolved.

    Raises:
        N3FError: naming the setting and what it takes.
    """
    if config.motion_after < 0 or config.motion_every < 0:
        raise N3FError(f"motion_after and motion_every are step counts, at least 0 (got {config.motion_after}, {config.motion_every})")
    if config.motion_share_weight < 0:
        raise N3FError(f"motion_share_weight is a loss weight, at least 0 (got {config.motion_share_weight})")
    if config.motion_share_streams not in ("transient", "dynamic"):
        raise N3FError(f"motion_share_streams is transient or dynamic (got {config.motion_share_streams!r})")
    if not 0 <= config.motion_camera_fixed < 1:
        raise N3FError(
            f"motion_camera_fixed is a mean absolute RGB difference (0-1 units) within which a cell looks fixed to the camera: "
            f"at least 0 and below 1; got {config.motion_camera_fixed}"
        )
    if config.motion_camera_fixed > 0 and not (config.motion_share_weight > 0 and config.motion_share_streams == "transient"):
        raise N3FError(
            "motion_camera_fixed says where the actor's share may answer the share loss's flags; "
            "set motion_share_weight above 0 with motion_share_streams = transient, or drop it"
        )
    if config.motion_after == 0:
        if config.motion_share_weight > 0:
            raise N3FError(
                "motion_share_weight charges the pixels the moving-pixel detector flags, and no detector runs; set motion_after too"
            )
        return
    if not config.dynamic:
        raise N3FError(
            "--motion-after detects moving pixels for the transient streams; this fit has none. Fit with --dynamic, or drop --motion-after"
        )
    if not 0 <= config.motion_sampling <= 1:
        raise N3FError(f"motion_sampling is a share of the rays, between 0 and 1 (got {config.motion_sampling})")
    if not 0 <= config.motion_grow_threshold < config.motion_threshold:
        raise N3FError(
            f"motion_grow_threshold grows flags through cells scoring above it: at least 0 and below motion_threshold "
            f"({config.motion_threshold}); got {config.motion_grow_threshold}"
        )
    if not 0 <= config.motion_static_agrees < 1:
        raise N3FError(
            f"motion_static_agrees is a mean absolute RGB difference (0-1 units) below which the static field explains a cell: "
            f"at least 0 and below 1; got {config.motion_static_agrees}"
        )
    if not 0 <= config.motion_quantile <= 0.5:
        raise N3FError(
            f"motion_quantile picks which neighbour frame's difference scores a pixel: 0 (the best-agreeing) to 0.5 (the median); "
            f"got {config.motion_quantile}"
        )
    from n3f.pipeline.motion import neighbour_offsets

    try:
        neighbour_offsets(config.motion_span, config.motion_view_step)
    except ValueError:
        raise N3FError(
            f"motion_span and motion_view_step pick the neighbour frames each frame is compared with (every "
            f"motion_view_step-th up to motion_span frames away): 1 <= motion_view_step <= motion_span; got "
            f"{config.motion_view_step} and {config.motion_span}"
        ) from None
    counts = ("motion_gate_dilation", "motion_sample_radius", "motion_sample_opening", "motion_gate_opening", "motion_stride")
    if any(getattr(config, name) < 0 for name in counts):
        raise N3FError(f"{', '.join(counts)} are cell counts, at least 0")


def load_run(run_dir: Path, quiet: bool = True, step: int | None = None) -> Trainer:
    """Rebuild a fitted run (scene, features, model at its last checkpoint, or at ``step``) for
    rendering or queries.

    The run loads on the device it was fitted on, or on the CPU when that was a GPU this machine
    lacks (a run fitted on a GPU is queried on a laptop); the checkpoint is the same for every
    encoding backend.

    Raises:
        N3FError: not a run folder, a run without checkpoints, or none at ``step``.
    """
    from n3f.pipeline.features import FeatureCache
    from n3f.progress import make_progress
    from n3f.scene.catalog import load_scene

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    ckpt = latest_checkpoint(run_dir) if step is None else checkpoint_at(run_dir, step)
    if ckpt is None:
        raise N3FError(f"run {run_dir} has no checkpoint yet; let `n3f fit` write one (or resume it)")
    state = read_checkpoint(ckpt)
    track = make_progress(quiet)
    scene = load_scene(config.scene, downscale=config.downscale or None, progress=track)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        config = dataclasses.replace(config, device="cpu")
    trainer = Trainer(config, scene, FeatureCache.open(Path(state["feature_cache"])), run_dir, progress=track)
    trainer.load_checkpoint(ckpt)
    return trainer


def orbit_path(scene, n_frames: int = 60) -> list:
    """Novel cameras circling the scene: around the point the training cameras look at, at their
    mean distance and height (a small circle around the mean camera for forward-facing scenes).

    Returns:
        Frames (copies of frame 0 with new ``c2w``).
    """
    centres = np.stack([f.camera_centre for f in scene.frames])
    axes = np.stack([f.c2w[:3, 2] for f in scene.frames])
    # point closest to every optical axis (least squares)
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c, a in zip(centres, axes):
        P = np.eye(3) - np.outer(a, a)
        A += P
        b += P @ c
    target = np.linalg.lstsq(A, b, rcond=None)[0]
    mean_down = np.mean([f.c2w[:3, 1] for f in scene.frames], axis=0)
    up = -mean_down / np.linalg.norm(mean_down)
    offsets = centres - target
    height = float(np.mean(offsets @ up))
    radial = offsets - np.outer(offsets @ up, up)
    radius = float(np.mean(np.linalg.norm(radial, axis=1)))
    e1 = radial[0] / np.linalg.norm(radial[0])
    e2 = np.cross(up, e1)
    if scene.contraction == "ndc":
        radius, height = 0.15 * float(np.ptp(centres, axis=0).max() or 0.1), 0.0
        target = centres.mean(0) + axes.mean(0) * 10.0
        base = centres.mean(0)
    frames = []
    for k in range(n_frames):
        angle = 2 * np.pi * k / n_frames
        if scene.contraction == "ndc":
            eye = base + radius * (np.cos(angle) * e1 + np.sin(angle) * e2)
        else:
            eye = target + up * height + radius * (np.cos(angle) * e1 + np.sin(angle) * e2)
        forward = (target - eye) / np.linalg.norm(target - eye)
        right = np.cross(forward, up)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
        frames.append(dataclasses.replace(scene.frames[0], c2w=c2w, image_path=Path(f"orbit_{k:04d}.png"), split="test"))
    return frames
