"""A small exact ray caster over analytic primitives (numpy), used to render procedural scenes.

Every primitive lives in a local frame given by a yaw about the world z axis (or any rotation) and
a translation.
Intersections are closed-form, so depth and instance masks are exact at the pixel centres.

All functions take ray origins ``o`` and directions ``d`` as (N, 3) float64 arrays; directions need
not be unit length, and the returned ``t`` is in units of ``|d|`` (pass camera rays whose camera-z
component is 1 and ``t`` is the z-depth). Misses are ``t = inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-7


def yaw_matrix(yaw: float) -> np.ndarray:
    """(3, 3) rotation by ``yaw`` radians about +z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def intersect_box(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray, inside: bool = False):
    """Ray / axis-aligned box [lo, hi].

    Args:
        inside: hit the walls from the inside (a room) rather than the outside.

    Returns:
        t: (N,) distance to the hit, inf on a miss.
        normal: (N, 3) unit normal facing the ray's origin side.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (lo - o) * inv
        t2 = (hi - o) * inv
    tnear, tfar = np.minimum(t1, t2), np.maximum(t1, t2)
    t_enter, t_exit = tnear.max(axis=1), tfar.min(axis=1)
    n = len(o)
    if inside:
        t = np.where((t_exit > EPS) & (t_enter <= t_exit), t_exit, np.inf)
        axis = tfar.argmin(axis=1)
    else:
        hit = (t_exit >= t_enter) & (t_enter > EPS)
        t = np.where(hit, t_enter, np.inf)
        axis = tnear.argmax(axis=1)
    normal = np.zeros((n, 3))
    normal[np.arange(n), axis] = -np.sign(d[np.arange(n), axis])
    return t, normal


def intersect_frustum(o: np.ndarray, d: np.ndarray, r0: float, r1: float, z0: float, z1: float):
    """Ray / capped cone frustum about the z axis: radius r0 at z0, r1 at z1 (a cylinder if equal).

    Returns:
        t: (N,) distance, inf on a miss; normal: (N, 3) unit outward normal.
    """
    k = (r1 - r0) / (z1 - z0)
    q = r0 - k * z0
    rq = q + k * o[:, 2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - (k * d[:, 2]) ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] - k * d[:, 2] * rq)
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - rq**2
    disc = b * b - 4 * a * c
    ok = (disc >= 0) & (np.abs(a) > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    safe_a = np.where(ok, a, 1.0)
    t = np.full(len(o), np.inf)
    for root in ((-b - sq) / (2 * safe_a), (-b + sq) / (2 * safe_a)):
        z = o[:, 2] + root * d[:, 2]
        valid = ok & (root > EPS) & (z >= z0) & (z <= z1) & (root < t)
        t = np.where(valid, root, t)
    side = np.isfinite(t)
    normal = np.zeros((len(o), 3))
    p = o + np.where(side, t, 0.0)[:, None] * d
    normal[:, 0], normal[:, 1] = p[:, 0], p[:, 1]
    normal[:, 2] = -k * (q + k * p[:, 2])
    for zc, radius, nz in ((z0, r0, -1.0), (z1, r1, 1.0)):
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (zc - o[:, 2]) / d[:, 2]
        pc = o + np.nan_to_num(tc, posinf=0, neginf=0)[:, None] * d
        valid = (tc > EPS) & (pc[:, 0] ** 2 + pc[:, 1] ** 2 <= radius**2) & (tc < t)
        t = np.where(valid, tc, t)
        normal[valid] = [0.0, 0.0, nz]
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return t, normal


def intersect_sphere(o: np.ndarray, d: np.ndarray, radius: float):
    """Ray / sphere of ``radius`` at the local origin. Returns t (N,) and unit normal (N, 3)."""
    a = _dot(d, d)
    b = 2 * _dot(o, d)
    c = _dot(o, o) - radius**2
    disc = b * b - 4 * a * c
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0.0))
    t0, t1 = (-b - sq) / (2 * a), (-b + sq) / (2 * a)
    t = np.where(ok & (t0 > EPS), t0, np.where(ok & (t1 > EPS), t1, np.inf))
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return t, p / radius


@dataclass
class Primitive:
    """One analytic solid placed in the world.

    Attributes:
        kind: ``box`` (params lo, hi), ``frustum`` (r0, r1, z0, z1), ``sphere`` (radius) or
            ``room`` (a box seen from inside: lo, hi).
        params: the shape's parameters in its local frame.
        position: (3,) local origin in the world.
        yaw: rotation about world z, radians.
        orientation: optional (3, 3) local-to-world rotation that replaces ``yaw`` (for solids
            that are not upright, e.g. ones attached to a camera).
    """

    kind: str
    params: dict
    position: np.ndarray
    yaw: float = 0.0
    orientation: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.position = np.asarray(self.position, dtype=np.float64)
        if self.orientation is None:
            self.rotation = yaw_matrix(self.yaw)
        else:
            self.rotation = np.asarray(self.orientation, dtype=np.float64).reshape(3, 3)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) to this primitive's local frame."""
        return (points - self.position) @ self.rotation

    def intersect(self, o: np.ndarray, d: np.ndarray):
        """World rays to (t (N,), world unit normal (N, 3))."""
        lo_, ld = self.to_local(o), d @ self.rotation
        p = self.params
        if self.kind == "box":
            t, n = intersect_box(lo_, ld, np.asarray(p["lo"]), np.asarray(p["hi"]))
        elif self.kind == "room":
            t, n = intersect_box(lo_, ld, np.asarray(p["lo"]), np.asarray(p["hi"]), inside=True)
        elif self.kind == "frustum":
            t, n = intersect_frustum(lo_, ld, p["r0"], p["r1"], p["z0"], p["z1"])
        elif self.kind == "sphere":
            t, n = intersect_sphere(lo_, ld, p["radius"])
        else:
            raise ValueError(f"unknown primitive kind {self.kind!r}")
        return t, n @ self.rotation.T

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        """(centre (3,), radius) of a world sphere enclosing the primitive."""
        p = self.params
        if self.kind in ("box", "room"):
            lo, hi = np.asarray(p["lo"]), np.asarray(p["hi"])
            centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2)
        elif self.kind == "frustum":
            centre = np.array([0.0, 0.0, (p["z0"] + p["z1"]) / 2])
            radius = float(np.hypot(max(p["r0"], p["r1"]), (p["z1"] - p["z0"]) / 2))
        else:
            centre, radius = np.zeros(3), float(p["radius"])
        return self.position + self.rotation @ centre, radius

    def world_box(self) -> np.ndarray:
        """(2, 3) world axis-aligned box enclosing the primitive (from its bounding sphere)."""
        centre, radius = self.bounding_sphere()
        return np.stack([centre - radius, centre + radius])


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def rays_hit_sphere(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: does each ray pass within ``radius`` of ``centre`` in front of its origin."""
    oc = o - centre
    b = _dot(oc, d)
    c = _dot(oc, oc) - radius**2
    return (b * b - _dot(d, d) * c >= 0) & ((b <= 0) | (c <= 0))


def cast(
    o: np.ndarray,
    d: np.ndarray,
    primitives: list[Primitive],
    t_max: np.ndarray | None = None,
    groups: list[tuple[np.ndarray, float, list[int]]] | None = None,
):
    """Closest hit of each ray among ``primitives``.

    Args:
        o, d: (N, 3) rays.
        primitives: the scene's solids.
        t_max: optional (N,) upper bound on t (for shadow rays).
        groups: optional culling groups ``(centre, radius, primitive indices)``: a ray is tested
            against a group's primitives only if it passes through the group's bounding sphere.
            Default: one group per primitive (rooms are never culled).

    Returns:
        t: (N,) distance (inf on a miss); index: (N,) int primitive index (-1 on a miss);
        normal: (N, 3) unit world normal at the hit.
    """
    n = len(o)
    t_best = np.full(n, np.inf) if t_max is None else np.asarray(t_max, dtype=np.float64).copy()
    index = np.full(n, -1, dtype=np.int64)
    normal = np.zeros((n, 3))
    if groups is None:
        groups = [(*p.bounding_sphere(), [i]) if p.kind != "room" else (None, 0.0, [i]) for i, p in enumerate(primitives)]
    everything = np.arange(n)
    for centre, radius, members in groups:
        group_rows = everything if centre is None else np.nonzero(rays_hit_sphere(o, d, centre, radius))[0]
        if group_rows.size == 0:
            continue
        go, gd = o[group_rows], d[group_rows]
        for i in members:
            t, nrm = primitives[i].intersect(go, gd)
            better = t < t_best[group_rows]
            rows = group_rows[better]
            t_best[rows] = t[better]
            index[rows] = i
            normal[rows] = nrm[better]
    if t_max is not None:
        t_best[index < 0] = np.inf
    return t_best, index, normal
