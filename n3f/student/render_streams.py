"""Render the static student together with its transient streams (see :mod:`n3f.student.transient`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from n3f.render.sampling import merge_packed, stratified
from n3f.render.volume import composite, distortion_loss, render_weight_from_density, surface_composite
from n3f.student.field import StudentField
from n3f.student.transient import TransientStreams, mix_streams, share_entropy


def render_streams(
    static: StudentField,
    transient: TransientStreams,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    frame_ids: torch.Tensor,
    w2c: torch.Tensor,
    space,
    grid,
    step: float,
    jitter: torch.Tensor | None = None,
    detach_weights: tuple[str, ...] = (),
    features: bool = True,
    min_transmittance: float = 1e-4,
    surface_window: float | None = None,
    static_alone: bool = False,
    static_gate: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
    entropy_skew: float | None = None,
    background: torch.Tensor | None = None,
    static_distortion: bool = False,
) -> dict[str, torch.Tensor]:
    """Render world rays through all three streams.

    Args:
        static, transient: the static student and the transient streams.
        origins, dirs: (n_rays, 3) world rays with unit directions (a box or contracted space: the
            actor stream needs metric camera coordinates, which NDC does not keep).
        frame_ids: (n_rays,) scene index of each ray's frame (selects the embeddings).
        w2c: (n_rays, 3, 4) world-to-camera transform of each ray's frame.
        space, grid, step: the static field's space, occupancy grid and marching step. Static and
            dynamic samples start at ``actor_depth`` (the actor's range is the actor's alone).
        jitter: (n_rays,) offsets in [0, 1) for stratified training samples (both samplers).
        detach_weights: channels composited with detached weights.
        features: render features too.
        background: (n_rays, 3) colours behind the rays (all streams' render and the static
            field's own), or None for black.
        min_transmittance: samples behind this transmittance (static + dynamic densities, no
            gradients) are dropped before the full streams run.
        surface_window: also composite near each ray's most visible surface (as
            :func:`n3f.render.render.render_rays`).
        static_alone: also composite the static field by itself over the same samples (what
            ``streams="static"`` renders), for a loss that keeps the static field whole.
        static_gate: called with the static field's own render of this batch (``rgb`` (n_rays, 3),
            ``opacity`` (n_rays, 1), no gradients); returns (n_rays,) weights in [0, 1] that scale
            every gradient the static field gets through each ray. The rendered values do not
            change. The trainer uses it to keep pixels the static field cannot explain (things that
            moved) from pulling it towards them (``FitConfig.static_trim``).
        entropy_skew: also return ``dynamic_entropy``: the binary entropy of every world sample's
            dynamic share ``s = sigma_dynamic / (sigma_static + sigma_dynamic)`` raised to this
            power, ``H(s^k)``, weighted by the sample's (detached) rendering weight and summed per
            ray, mean over rays (D^2NeRF's skewed entropy; ``k > 1`` leans undecided samples
            towards the static field). None: not computed.
        static_distortion: with ``static_alone``, also return ``static/distortion`` (n_rays,):
            mip-NeRF 360's distortion loss (:func:`n3f.render.volume.distortion_loss`, units of t)
            of the static field's own weights, small when each ray's static weight sits in one
            short stretch (a sharp surface depth).

    Returns:
        ``rgb`` (n_rays, 3), ``feature`` (n_rays, D), ``beta`` (n_rays, 1) composited uncertainty,
        ``share/static|dynamic|actor`` (n_rays, 1) (each stream's part of the pixel; they sum to
        ``opacity``), ``opacity``, ``depth`` (n_rays, 1), ``n_samples``, ``dynamic_sigma`` and
        ``actor_sigma`` (each stream's mean density over its samples, for the sparsity loss),
        with ``surface_window`` ``surface/<channel>``, and with ``static_alone``
        ``static/rgb``, ``static/feature`` and ``static/opacity``.
    """
    n_rays = len(origins)
    # The static world starts beyond the actor's range: close to a camera, a static field could
    # paint the hand into floaters seen by that camera alone, and it is not charged for density
    # the way the transient streams are, so it would win the hand.
    o, d, t_max = space.to_space(origins, dirs)
    ri, ts, te = space.march(o, d, t_max, grid, step, near=transient.config.actor_depth, jitter=jitter)
    if len(ri):
        with torch.no_grad():
            mids = (ts + te) / 2
            pts = space.points(o[ri], d[ri], mids)
            sigma = static.density(pts) + transient.dynamic_fields(pts, frame_ids[ri], features=False)["sigma"]
            _, trans, alphas = render_weight_from_density(ts, te, sigma, ri)
            keep = (trans > min_transmittance) & (alphas > 1e-6)
        ri, ts, te = ri[keep], ts[keep], te[keep]
    a_ri, a_ts, a_te = actor_samples(transient, n_rays, jitter, o.device)

    mids = (ts + te) / 2
    pts = space.points(o[ri], d[ri], mids)
    static_out = static(pts, dirs[ri], features=features)
    if static_gate is not None:
        # A separate render without gradients, not the ``static_alone`` one below: computing that
        # one here, before the streams, would change the order of the backward's float sums, and a
        # gate of ones would no longer train exactly as no gate does.
        with torch.no_grad():
            gate_weights, _, _ = render_weight_from_density(ts, te, static_out["sigma"], ri)
            alone = composite(gate_weights, {"rgb": static_out["rgb"]}, mids, ri, n_rays)
        gate = static_gate(alone).detach()[ri]
        static_out = {k: scale_gradient(v, gate if v.dim() == 1 else gate[:, None]) for k, v in static_out.items()}
    world = mix_streams({"static": static_out, "dynamic": transient.dynamic_fields(pts, frame_ids[ri], features)}, features)
    actor = mix_streams({"actor": _actor_at_samples(transient, dirs, frame_ids, w2c, a_ri, a_ts, a_te, features)}, features)

    ray_indices, t_starts, t_ends, source = merge_packed((ri, ts, te), (a_ri, a_ts, a_te))
    values = {k: torch.cat([world[k], actor[k]])[source] for k in world}
    sigma = values.pop("sigma")
    weights, _, _ = render_weight_from_density(t_starts, t_ends, sigma, ray_indices)
    t_mids = (t_starts + t_ends) / 2
    behind = None if background is None else {"rgb": background}
    out = composite(weights, values, t_mids, ray_indices, n_rays, detach_weights=detach_weights, background=behind)
    if surface_window is not None:
        surface = surface_composite(
            weights.detach(), {k: v.detach() for k, v in values.items()}, t_mids, ray_indices, n_rays, surface_window
        )
        out.update({f"surface/{k}": v for k, v in surface.items()})
    out["depth"] = space.world_depth(origins, dirs, out["depth"][:, 0])[:, None]
    out["dynamic_sigma"] = (sigma * values["share/dynamic"][:, 0]).sum() / max(len(ri), 1)
    out["actor_sigma"] = (sigma * values["share/actor"][:, 0]).sum() / max(len(a_ri), 1)
    out["n_samples"] = torch.tensor(len(ray_indices))
    if entropy_skew is not None:
        is_world = source < len(ri)  # merge_packed's source indexes the world samples first
        entropy = share_entropy(values["share/dynamic"][is_world, 0], entropy_skew)
        out["dynamic_entropy"] = (weights.detach()[is_world] * entropy).sum() / n_rays
    if static_alone:
        channels = {k: static_out[k] for k in ("rgb", "feature") if k in static_out}
        alone_weights, _, _ = render_weight_from_density(ts, te, static_out["sigma"], ri)
        alone = composite(alone_weights, channels, mids, ri, n_rays, detach_weights=detach_weights, background=behind)
        out.update({f"static/{k}": alone[k] for k in (*channels, "opacity")})
        if static_distortion:
            out["static/distortion"] = distortion_loss(alone_weights, ts, te, ri, n_rays)
    return out


def actor_samples(
    transient: TransientStreams, n_rays: int, jitter: torch.Tensor | None, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The actor stream's packed samples: ``actor_samples`` stratified intervals per ray over
    [0, ``actor_depth``] from the camera (``jitter`` (n_rays,) in [0, 1) or None for midpoints).
    Returns ray indices, t_starts and t_ends, (n_rays * actor_samples,) each."""
    n = transient.config.actor_samples
    zeros = torch.zeros(n_rays, device=device)
    a_jitter = None if jitter is None else jitter[:, None].expand(-1, n)
    a_ts, a_te = stratified(zeros, zeros + transient.config.actor_depth, n, a_jitter)
    return torch.arange(n_rays, device=device).repeat_interleave(n), a_ts.reshape(-1), a_te.reshape(-1)


def _actor_at_samples(transient, dirs, frame_ids, w2c, a_ri, a_ts, a_te, features: bool) -> dict[str, torch.Tensor]:
    """The actor stream's outputs at its packed samples (camera-coordinate points ``t * dir``)."""
    cam = torch.einsum("nij,nj->ni", w2c[:, :3, :3], dirs)  # ray directions in camera coordinates
    return transient.actor_fields((a_ts + a_te)[:, None] / 2 * cam[a_ri], frame_ids[a_ri], features)


@torch.no_grad()
def actor_opacity(transient: TransientStreams, dirs: torch.Tensor, frame_ids: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """How much of each ray the actor stream alone covers: (n_rays,) opacity in [0, 1] of its
    density over [0, ``actor_depth``], midpoint samples. The actor lies in front of every other
    stream, so this is also the share of the ray it holds in the render of all streams when that
    render is opaque.

    Args:
        transient: the transient streams; dirs: (n_rays, 3) unit world directions.
        frame_ids: (n_rays,) scene index of each ray's frame; w2c: (n_rays, 3, 4) world-to-camera.
    """
    a_ri, a_ts, a_te = actor_samples(transient, len(dirs), None, dirs.device)
    sigma = _actor_at_samples(transient, dirs, frame_ids, w2c, a_ri, a_ts, a_te, features=False)["sigma"]
    weights, _, _ = render_weight_from_density(a_ts, a_te, sigma, a_ri)
    return torch.zeros(len(dirs), device=dirs.device, dtype=weights.dtype).index_add_(0, a_ri, weights)


def scale_gradient(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged in value, its gradient multiplied by ``scale`` (broadcast against ``x``)."""
    return x.detach() + (x - x.detach()) * scale
