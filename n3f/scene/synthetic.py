"""The procedural demo scene: a furnished room with a table of textured objects, ray cast exactly.

``render_tabletop`` writes a scene folder in the toolkit's own layout (see
:mod:`n3f.scene.formats.native`): ``images/``, exact per-object instance ``masks/``, exact z-depth
``depth/`` (world metres) and ``scene.json`` with the true cameras and every object's record. The
same seed always gives the same bytes.

World: metres, z up, the table top at z = 0.75 centred on the origin; cameras on a varying-height
orbit looking at the table. Objects include two mugs (one category, two colours) so that retrieval
has several true answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from n3f.scene.raycast import Primitive, cast, yaw_matrix
from n3f.scene.types import Frame

# Bump when the rendered scene changes: cached renders live in version-named folders, so a data
# root never serves a stale scene to newer code.
GENERATOR_VERSION = 2
TABLE_TOP = 0.75
ROOM = ([-2.4, -2.2, 0.0], [2.4, 2.2, 2.6])  # walls, floor and ceiling (metres)
TABLE_REGION = ([-0.6, -0.4, 0.0], [0.6, 0.4, TABLE_TOP + 0.25])  # the table and its objects


@dataclass
class TabletopConfig:
    """How to render the demo scene.

    Attributes:
        n_frames: number of cameras on the orbit (60-120 is the intended range).
        width: image width in pixels.
        height: image height in pixels.
        fov_x_deg: horizontal field of view in degrees.
        seed: seeds object placement jitter, textures and camera jitter.
        supersample: anti-aliasing samples per pixel axis for colour (masks and depth are exact
            at pixel centres).
        exclude: object names to leave out (for "what lies behind it" ground truth).
        holdout_every: every n-th frame (0, n, 2n...) is a test frame.
        bounds: the content box the scene file gives: ``room`` (the whole room: a bounded scene)
            or ``table`` (the table, what stands on it and the cameras; walls and ceiling lie
            beyond it, and the file asks for contraction ``sphere``: an unbounded capture with
            exact depth everywhere).
    """

    n_frames: int = 96
    width: int = 256
    height: int = 192
    fov_x_deg: float = 62.0
    seed: int = 0
    supersample: int = 2
    exclude: tuple[str, ...] = ()
    holdout_every: int = 8
    bounds: str = "room"


@dataclass
class SceneObject:
    """One object of the demo: its primitives (object-local), placement and look."""

    name: str
    category: str
    colour: tuple[float, float, float]
    parts: list[tuple[str, dict, tuple[float, float, float], str]]  # kind, params, offset, material
    position: tuple[float, float, float]
    yaw: float = 0.0
    instance_id: int = 0
    primitives: list[Primitive] = field(default_factory=list)

    def place(self) -> None:
        """Build the world-space primitives from the object-local parts."""
        R = yaw_matrix(self.yaw)
        pos = np.asarray(self.position)
        self.primitives = [Primitive(kind, params, pos + R @ np.asarray(off), self.yaw) for kind, params, off, _ in self.parts]

    def world_box(self) -> np.ndarray:
        """(2, 3) tight-ish world box of the object (union of its parts' boxes)."""
        boxes = np.stack([_exact_world_box(p) for p in self.primitives])
        return np.stack([boxes[:, 0].min(0), boxes[:, 1].max(0)])


def _exact_world_box(prim: Primitive) -> np.ndarray:
    p = prim.params
    if prim.kind == "box":
        lo, hi = np.asarray(p["lo"]), np.asarray(p["hi"])
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        world = corners @ prim.rotation.T + prim.position
        return np.stack([world.min(0), world.max(0)])
    if prim.kind == "frustum":
        r = max(p["r0"], p["r1"])
        return np.stack([prim.position + [-r, -r, p["z0"]], prim.position + [r, r, p["z1"]]])
    r = p["radius"]
    return np.stack([prim.position - r, prim.position + r])


# --------------------------------------------------------------------------------------------------
# procedural textures


class Noise:
    """Seeded 2D value noise with a few octaves, vectorised over points."""

    def __init__(self, seed: int, size: int = 64):
        self.grid = np.random.default_rng(seed).random((size, size))
        self.size = size

    def __call__(self, u: np.ndarray, v: np.ndarray, octaves: int = 3) -> np.ndarray:
        total, amp, norm = np.zeros_like(u), 1.0, 0.0
        for o in range(octaves):
            f = 2**o
            total += amp * self._sample(u * f + 17.3 * o, v * f + 5.1 * o)
            norm += amp
            amp *= 0.5
        return total / norm

    def _sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        s = self.size
        u0, v0 = np.floor(u), np.floor(v)
        fu, fv = u - u0, v - v0
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
        i0, j0 = u0.astype(np.int64) % s, v0.astype(np.int64) % s
        i1, j1 = (i0 + 1) % s, (j0 + 1) % s
        g = self.grid
        top = g[i0, j0] * (1 - fu) + g[i1, j0] * fu
        bottom = g[i0, j1] * (1 - fu) + g[i1, j1] * fu
        return top * (1 - fv) + bottom * fv


def _mix(a, b, t):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a + (b - a) * np.clip(t, 0, 1)[:, None]


def _material(name: str, colour, p: np.ndarray, n: np.ndarray, noise: Noise) -> np.ndarray:
    """Albedo (N, 3) of material ``name`` at object-local points ``p`` with local normals ``n``."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    colour = np.asarray(colour, dtype=np.float64)
    if name == "wood":
        grain = np.sin((y * 40 + 6 * noise(x * 2, y * 8)) * 2.0)
        t = 0.5 + 0.5 * grain * (0.6 + 0.4 * noise(x * 20, y * 3))
        return _mix([0.45, 0.27, 0.13], [0.62, 0.42, 0.22], t)
    if name == "floor":
        tile = 0.5
        u, v = x / tile, y / tile
        grout = (np.abs(u - np.round(u)) < 0.03) | (np.abs(v - np.round(v)) < 0.03)
        checker = (np.floor(u) + np.floor(v)) % 2
        base = _mix([0.55, 0.52, 0.48], [0.70, 0.67, 0.62], checker * 0.7 + 0.3 * noise(x * 4, y * 4))
        base[grout] = [0.30, 0.29, 0.27]
        return base
    if name == "wall":
        # paint with a low-frequency blotch, a skirting board and framed pictures
        out = colour * (0.9 + 0.15 * noise(x * 2 + y * 2, z * 2))[:, None]
        out[z < 0.12] = [0.85, 0.85, 0.82]
        horiz = np.where(np.abs(n[:, 0]) > 0.5, y, x)
        for c0, width, bottom, top, art in ((-0.9, 0.8, 1.2, 1.8, 11), (0.6, 0.6, 1.1, 1.9, 29)):
            frame = (np.abs(horiz - c0) < width / 2) & (z > bottom) & (z < top)
            inner = (np.abs(horiz - c0) < width / 2 - 0.04) & (z > bottom + 0.04) & (z < top - 0.04)
            out[frame] = [0.12, 0.10, 0.08]
            if inner.any():
                # a small landscape: hills under a sky, different for each picture
                frac = (z[inner] - bottom) / (top - bottom)
                hills = 0.45 + 0.15 * noise(horiz[inner] * 2 + art, np.full(inner.sum(), art), octaves=2)
                sky = _mix([0.55, 0.7, 0.9], [0.95, 0.8, 0.6], frac * 0.6 + 0.4 * noise(horiz[inner] * 6, z[inner] * 6))
                land = _mix([0.2, 0.45, 0.15], [0.55, 0.45, 0.2], noise(horiz[inner] * 10 + art, z[inner] * 10))
                out[inner] = np.where((frac > hills)[:, None], sky, land)
        return out
    if name == "ceramic":
        out = np.tile(colour, (len(p), 1)) * (0.92 + 0.08 * noise(x * 30, z * 30))[:, None]
        stripe = np.abs(z - 0.07) < 0.006
        out[stripe] = [0.95, 0.93, 0.88]
        out[(n[:, 2] > 0.9) & (z > 0.09)] = [0.25, 0.14, 0.07]  # coffee
        return out
    if name == "book":
        out = np.tile(colour, (len(p), 1))
        pages = (np.abs(n[:, 2]) < 0.5) & ~(n[:, 0] < -0.5)
        out[pages] = _mix([0.92, 0.9, 0.82], [0.8, 0.78, 0.7], 0.5 + 0.5 * np.sin(z[pages] * 900))
        top = n[:, 2] > 0.5
        title = top & (np.abs(y) < 0.025) & (np.abs(x) < 0.07)
        out[title] = [0.95, 0.85, 0.3]
        band = top & (np.abs(x + 0.09) < 0.01)
        out[band] = [0.95, 0.85, 0.3]
        return out
    if name == "orange":
        dimples = noise(x * 300, y * 300 + z * 300, octaves=1)
        out = colour * (0.85 + 0.2 * dimples)[:, None]
        out[(n[:, 2] > 0.97)] = [0.2, 0.45, 0.1]
        return out
    if name == "glass":
        out = colour * (0.85 + 0.15 * noise(z * 10, x * 10))[:, None]
        label = (z > 0.04) & (z < 0.11)
        out[label] = [0.93, 0.9, 0.8]
        out[label & (np.abs(z - 0.075) < 0.012)] = [0.75, 0.1, 0.1]
        return out
    if name == "can":
        angle = np.arctan2(y, x)
        out = np.tile([0.75, 0.75, 0.78], (len(p), 1))
        body = (z > 0.012) & (z < 0.103)
        out[body] = colour
        letters = body & (np.abs(z - 0.058) < 0.014) & (np.sin(angle * 14) > 0.2)
        out[letters] = [0.98, 0.98, 0.95]
        return out
    if name == "rubik":
        faces = np.array([[0.9, 0.1, 0.1], [0.1, 0.6, 0.15], [0.1, 0.2, 0.8], [0.95, 0.55, 0.05], [0.95, 0.95, 0.95], [0.95, 0.85, 0.1]])
        axis = np.abs(n).argmax(1)
        face = axis * 2 + (np.take_along_axis(n, axis[:, None], 1)[:, 0] > 0)
        out = faces[face]
        centred = p - [0.0, 0.0, 0.035]
        uv = np.where(axis[:, None] == 0, centred[:, [1, 2]], np.where(axis[:, None] == 1, centred[:, [0, 2]], centred[:, [0, 1]]))
        frac = ((uv + 0.035) / (0.07 / 3)) % 1.0
        out[((frac < 0.08) | (frac > 0.92)).any(1)] = [0.05, 0.05, 0.05]
        return out
    if name == "plain":
        return np.tile(colour, (len(p), 1)) * (0.9 + 0.1 * noise(x * 8, y * 8 + z * 8))[:, None]
    if name == "sponge":  # demo/kitchen_dynamic's moving object: foam under a scouring pad
        pores = noise(x * 250 + z * 90, y * 250 + z * 90, octaves=1)
        out = colour * (0.95 - 0.35 * (pores > 0.72))[:, None]
        pad = z > 0.035
        out[pad] = _mix([0.05, 0.3, 0.12], [0.15, 0.5, 0.2], noise(x[pad] * 120, y[pad] * 120 + z[pad] * 60, octaves=2))
        return out
    if name == "skin":  # demo/kitchen_dynamic's hand (local z along the arm, wrist at z = 0)
        out = colour * (0.9 + 0.12 * noise(x * 25 + 3.0, y * 25 + z * 25))[:, None]
        sleeve = z < -0.04
        knit = 0.5 + 0.5 * np.sin(np.arctan2(y[sleeve], x[sleeve]) * 24)
        out[sleeve] = _mix([0.16, 0.2, 0.35], [0.24, 0.3, 0.48], knit * 0.6 + 0.4 * noise(x[sleeve] * 60, z[sleeve] * 60))
        return out
    raise ValueError(f"unknown material {name!r}")


# --------------------------------------------------------------------------------------------------
# the scene


def _mug(name: str, colour, position, yaw) -> SceneObject:
    r, h = 0.045, 0.095
    parts = [
        ("frustum", {"r0": r, "r1": r, "z0": 0.0, "z1": h}, (0, 0, 0), "ceramic"),
        ("box", {"lo": [0.0, -0.007, 0.022], "hi": [0.03, 0.007, 0.03]}, (r - 0.003, 0, 0), "ceramic"),
        ("box", {"lo": [0.0, -0.007, 0.07], "hi": [0.03, 0.007, 0.078]}, (r - 0.003, 0, 0), "ceramic"),
        ("box", {"lo": [0.022, -0.007, 0.022], "hi": [0.03, 0.007, 0.078]}, (r - 0.003, 0, 0), "ceramic"),
    ]
    return SceneObject(name, "mug", colour, parts, position, yaw)


def build_objects(seed: int) -> list[SceneObject]:
    """The demo's objects, placed with small seeded jitter. Instance ids are 1..N in this order."""
    rng = np.random.default_rng(seed + 1000)

    def at(x, y):
        jx, jy = rng.uniform(-0.015, 0.015, 2)
        return (x + jx, y + jy, TABLE_TOP)

    def yaw():
        return float(rng.uniform(0, 2 * np.pi))

    objects = [
        _mug("mug_red", (0.75, 0.1, 0.08), at(-0.33, 0.17), yaw()),
        _mug("mug_blue", (0.1, 0.25, 0.75), at(0.30, -0.21), yaw()),
        SceneObject(
            "book",
            "book",
            (0.12, 0.35, 0.3),
            [("box", {"lo": [-0.12, -0.085, 0.0], "hi": [0.12, 0.085, 0.04]}, (0, 0, 0), "book")],
            at(0.02, 0.19),
            0.35 + rng.uniform(-0.1, 0.1),
        ),
        SceneObject(
            "orange", "fruit", (0.95, 0.45, 0.05), [("sphere", {"radius": 0.055}, (0, 0, 0.055), "orange")], at(-0.14, -0.13), yaw()
        ),
        SceneObject(
            "bottle",
            "bottle",
            (0.12, 0.42, 0.2),
            [
                ("frustum", {"r0": 0.04, "r1": 0.04, "z0": 0.0, "z1": 0.15}, (0, 0, 0), "glass"),
                ("frustum", {"r0": 0.04, "r1": 0.016, "z0": 0.15, "z1": 0.2}, (0, 0, 0), "glass"),
                ("frustum", {"r0": 0.016, "r1": 0.016, "z0": 0.2, "z1": 0.24}, (0, 0, 0), "glass"),
                ("frustum", {"r0": 0.018, "r1": 0.018, "z0": 0.24, "z1": 0.26}, (0, 0, 0), "plain"),
            ],
            at(0.42, 0.14),
            yaw(),
        ),
        SceneObject(
            "can",
            "can",
            (0.8, 0.08, 0.12),
            [("frustum", {"r0": 0.033, "r1": 0.033, "z0": 0.0, "z1": 0.115}, (0, 0, 0), "can")],
            at(-0.43, -0.19),
            yaw(),
        ),
        SceneObject(
            "cube",
            "toy",
            (0.5, 0.5, 0.5),
            [("box", {"lo": [-0.035, -0.035, 0.0], "hi": [0.035, 0.035, 0.07]}, (0, 0, 0), "rubik")],
            at(0.12, -0.1),
            yaw(),
        ),
    ]
    # the bottle cap is red plastic, not glass
    objects[4].parts[3] = (*objects[4].parts[3][:3], "plain")
    for i, obj in enumerate(objects, start=1):
        obj.instance_id = i
        obj.place()
    return objects


def _furniture() -> list[tuple[Primitive, str, tuple]]:
    """Room, floor and table primitives with their materials (instance id 0)."""
    top = Primitive("box", {"lo": [-0.6, -0.4, TABLE_TOP - 0.03], "hi": [0.6, 0.4, TABLE_TOP]}, np.zeros(3))
    items = [
        (Primitive("room", {"lo": [-2.4, -2.2, 0.0], "hi": [2.4, 2.2, 2.6]}, np.zeros(3)), "room", (0.78, 0.74, 0.66)),
        (top, "wood", (0, 0, 0)),
    ]
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = Primitive(
                "box", {"lo": [-0.025, -0.025, 0.0], "hi": [0.025, 0.025, TABLE_TOP - 0.03]}, np.array([sx * 0.54, sy * 0.34, 0.0])
            )
            items.append((leg, "plain", (0.3, 0.18, 0.09)))
    return items


def write_rendered_frame(
    folder: Path,
    index: int,
    rgb: np.ndarray,
    ids: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    split: str,
    time: float | None = None,
) -> Frame:
    """Write one procedural frame into ``folder`` (``images/NNNN.png``, ``masks/NNNN.png``,
    ``depth/NNNN.npy``; the sub-folders must exist) and return its :class:`Frame`.

    Args:
        rgb: (H, W, 3) uint8 sRGB; ids: (H, W) uint8 instance ids; depth: (H, W) z-depth in metres.
        K: (3, 3) intrinsics; c2w: (4, 4) OpenCV camera-to-world; split: train/test/val.
        time: the frame's time in [0, 1] for dynamic scenes, or None.
    """
    import cv2

    stem = f"{index:04d}"
    cv2.imwrite(str(folder / "images" / f"{stem}.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(folder / "masks" / f"{stem}.png"), ids)
    np.save(folder / "depth" / f"{stem}.npy", depth)
    return Frame(
        image_path=folder / "images" / f"{stem}.png",
        K=K,
        c2w=c2w,
        width=rgb.shape[1],
        height=rgb.shape[0],
        split=split,
        mask_path=folder / "masks" / f"{stem}.png",
        depth_path=folder / "depth" / f"{stem}.npy",
        near=0.05,
        far=float(depth.max()) * 1.01,
        frame_id=index,
        time=time,
    )


def orbit_cameras(config: TabletopConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cameras on a varying-height orbit around the table.

    Returns:
        K: (3, 3) shared intrinsics (fx = fy, principal point at the image centre).
        c2w: (n_frames, 4, 4) OpenCV camera-to-world in world metres.
    """
    rng = np.random.default_rng(config.seed + 2000)
    f = (config.width / 2) / np.tan(np.radians(config.fov_x_deg) / 2)
    K = np.array([[f, 0, config.width / 2], [0, f, config.height / 2], [0, 0, 1.0]])
    poses = []
    for i in range(config.n_frames):
        theta = 2 * np.pi * i / config.n_frames + rng.uniform(-0.02, 0.02)
        radius = 1.2 + 0.12 * np.sin(3 * theta)
        height = TABLE_TOP + 0.5 + 0.25 * np.sin(2 * theta + 0.5)
        eye = np.array([radius * np.cos(theta), radius * np.sin(theta), height])
        target = np.array([0.0, 0.0, TABLE_TOP + 0.05]) + rng.uniform(-0.04, 0.04, 3)
        forward = (target - eye) / np.linalg.norm(target - eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
        poses.append(c2w)
    return K, np.stack(poses)


def camera_rays(K: np.ndarray, c2w: np.ndarray, width: int, height: int, offsets: np.ndarray):
    """World rays through sub-pixel ``offsets`` (S, 2) of every pixel (COLMAP pixel convention).

    Returns:
        o, d: (S * H * W, 3), sample-major; ``d`` has camera-z component 1 so t is z-depth.
    """
    jj, ii = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    dirs = []
    for ox, oy in offsets:
        x = (ii + ox - K[0, 2]) / K[0, 0]
        y = (jj + oy - K[1, 2]) / K[1, 1]
        dirs.append(np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3))
    d = np.concatenate(dirs) @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], d.shape).copy(), d


class TabletopRenderer:
    """Renders colour, instance ids and z-depth of the demo scene from any camera."""

    LIGHT = np.array([0.7, -0.6, 2.35])

    def __init__(self, config: TabletopConfig):
        self.config = config
        self.noise = Noise(config.seed)
        self.objects = [o for o in build_objects(config.seed) if o.name not in config.exclude]
        self.primitives: list[Primitive] = []
        self.owner: list[tuple[int, str, tuple, Primitive]] = []  # instance id, material, colour, frame
        for prim, material, colour in _furniture():
            self.primitives.append(prim)
            self.owner.append((0, material, colour, prim))
        for obj in self.objects:
            frame = Primitive("sphere", {"radius": 0.0}, np.asarray(obj.position), obj.yaw)
            for prim, (_, _, _, material) in zip(obj.primitives, obj.parts):
                self.primitives.append(prim)
                self.owner.append((obj.instance_id, material, obj.colour, frame))
        self.instance_of = np.array([ow[0] for ow in self.owner] + [0])  # index -1 (miss) -> 0
        self.shiny = np.array([ow[1] in ("ceramic", "glass", "can") for ow in self.owner] + [False])
        # culling groups: furniture primitive by primitive, each object as a whole
        self.groups: list = []
        for i, prim in enumerate(self.primitives):
            if self.owner[i][0] == 0:
                self.groups.append((None, 0.0, [i]) if prim.kind == "room" else (*prim.bounding_sphere(), [i]))
        for obj in self.objects:
            members = [i for i, ow in enumerate(self.owner) if ow[0] == obj.instance_id]
            box = obj.world_box()
            self.groups.append(((box[0] + box[1]) / 2, float(np.linalg.norm(box[1] - box[0]) / 2), members))
        self.occluder_groups = [g for g in self.groups if g[0] is not None]

    def render(self, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render one view.

        Colour is shaded at pixel centres and supersampled (``supersample``^2 samples) only where
        the visible primitive or the depth changes between neighbours, which is where aliasing is.

        Returns:
            rgb: (H, W, 3) uint8 sRGB; instance: (H, W) uint8 ids (0 = room, floor, table);
            depth: (H, W) float32 z-depth in metres.
        """
        c = self.config
        w, h = c.width, c.height
        o, d = camera_rays(K, c2w, w, h, np.array([[0.5, 0.5]]))
        hits = cast(o, d, self.primitives, groups=self.groups)
        t, index, _ = hits
        ids = self.instance_of[index].reshape(h, w)
        depth = t.reshape(h, w)
        linear = self._shade(o, d, *hits).reshape(h, w, 3)

        prim = index.reshape(h, w)
        edge = np.zeros((h, w), dtype=bool)
        for axis in (0, 1):
            change = (np.diff(prim, axis=axis) != 0) | (np.abs(np.diff(np.log(depth), axis=axis)) > 0.02)
            if axis == 0:
                edge[1:] |= change
                edge[:-1] |= change
            else:
                edge[:, 1:] |= change
                edge[:, :-1] |= change
        s = c.supersample
        if s > 1 and edge.any():
            grid = (np.arange(s) + 0.5) / s
            offsets = np.stack(np.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)
            jj, ii = np.nonzero(edge)
            px = np.concatenate([np.stack([ii + ox, jj + oy], 1) for ox, oy in offsets])
            cam = np.stack([(px[:, 0] - K[0, 2]) / K[0, 0], (px[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(px))], 1)
            sd = cam @ c2w[:3, :3].T
            so = np.broadcast_to(c2w[:3, 3], sd.shape).copy()
            samples = self._shade(so, sd, *cast(so, sd, self.primitives, groups=self.groups))
            linear[jj, ii] = samples.reshape(len(offsets), -1, 3).mean(0)
        rgb = np.clip(linear, 0, 1) ** (1 / 2.2)
        return (rgb * 255 + 0.5).astype(np.uint8), ids.astype(np.uint8), depth.astype(np.float32)

    def _shade(self, o: np.ndarray, d: np.ndarray, t: np.ndarray, index: np.ndarray, normal: np.ndarray) -> np.ndarray:
        p = o + t[:, None] * d
        albedo = np.zeros_like(p)
        for i, (_, material, colour, frame) in enumerate(self.owner):
            rows = index == i
            if not rows.any():
                continue
            if material == "room":
                albedo[rows] = self._room(p[rows], normal[rows], colour)
            else:
                local_p = frame.to_local(p[rows])
                local_n = normal[rows] @ frame.rotation
                albedo[rows] = _material(material, colour, local_p, local_n, self.noise)
        to_light = self.LIGHT - p
        dist = np.linalg.norm(to_light, axis=1)
        ldir = to_light / dist[:, None]
        start = p + normal * 1e-4
        t_block, _, _ = cast(start, to_light, self.primitives, t_max=np.full(len(p), 1.0 - 1e-4), groups=self.occluder_groups)
        lit = ~np.isfinite(t_block)
        diffuse = np.clip(np.einsum("ij,ij->i", normal, ldir), 0, None) * lit * 2.2 / (1 + 0.35 * dist**2)
        ambient = 0.22 + 0.1 * normal[:, 2]
        view = -d / np.linalg.norm(d, axis=1, keepdims=True)
        half = (ldir + view) / np.linalg.norm(ldir + view, axis=1, keepdims=True)
        specular = self.shiny[index] * lit * np.clip(np.einsum("ij,ij->i", normal, half), 0, 1) ** 40 * 0.6
        return albedo * (ambient + diffuse)[:, None] + specular[:, None]

    def _room(self, p: np.ndarray, n: np.ndarray, colour) -> np.ndarray:
        out = np.zeros_like(p)
        floor = n[:, 2] > 0.5
        ceiling = n[:, 2] < -0.5
        wall = ~(floor | ceiling)
        out[floor] = _material("floor", colour, p[floor], n[floor], self.noise)
        out[ceiling] = [0.9, 0.9, 0.88]
        wall_colour = np.where((np.abs(n[wall, 0]) > 0.5)[:, None], [0.62, 0.70, 0.72], [0.80, 0.74, 0.62])
        out[wall] = _material("wall", (1.0, 1.0, 1.0), p[wall], n[wall], self.noise) * wall_colour
        return out


def render_tabletop(out_dir: Path, config: TabletopConfig | None = None, progress: Callable | None = None) -> Path:
    """Render the demo scene into a scene folder, atomically.

    Args:
        out_dir: the folder to create; it must not exist yet (nothing is overwritten).
        config: rendering options (defaults: 96 frames at 256x192, seed 0).
        progress: optional ``progress(iterable, description, total)`` wrapper (e.g. a rich bar).

    Returns:
        ``out_dir``, holding ``scene.json``, ``images/``, ``masks/`` and ``depth/``.
    """
    config = config or TabletopConfig()
    generator = {"name": "tabletop", "version": GENERATOR_VERSION, **dataclasses.asdict(config), "exclude": list(config.exclude)}
    name = "demo/tabletop" if config.bounds == "room" else "demo/tabletop_unbounded"
    return write_procedural_scene(out_dir, name, config, TabletopRenderer(config), generator, progress=progress)


def write_procedural_scene(
    out_dir: Path,
    name: str,
    config: TabletopConfig,
    renderer: TabletopRenderer,
    generator: dict,
    times: list[float] | None = None,
    extra: dict | None = None,
    progress: Callable | None = None,
) -> Path:
    """Render every orbit camera of ``config`` with ``renderer`` into a scene folder, atomically.

    Args:
        out_dir: the folder to create; it must not exist yet (nothing is overwritten).
        name: the scene's catalog name; config: cameras, size and split.
        renderer: a tabletop renderer (or subclass); ``renderer.render(K, c2w[, time])``.
        generator: the scene file's ``generator`` record.
        times: per-frame times in [0, 1] passed to the renderer and stored per frame (dynamic
            scenes), or None.
        extra: more top-level records of the scene file.
        progress: optional ``progress(iterable, description, total)`` wrapper.

    Returns:
        ``out_dir``, holding ``scene.json``, ``images/``, ``masks/`` and ``depth/``.
    """
    from n3f.io import atomic_directory
    from n3f.scene.formats.native import write_scene_json
    from n3f.scene.normalise import holdout_every
    from n3f.scene.types import Scene

    if config.bounds not in ("room", "table"):
        raise ValueError(f"bounds must be room or table, got {config.bounds!r}")
    K, poses = orbit_cameras(config)
    splits = holdout_every(config.n_frames, config.holdout_every)
    indices = range(config.n_frames)
    if progress is not None:
        indices = progress(indices, f"rendering {name}", config.n_frames)
    with atomic_directory(Path(out_dir)) as tmp:
        for sub in ("images", "masks", "depth"):
            (tmp / sub).mkdir()
        frames = []
        for i in indices:
            time = None if times is None else times[i]
            rgb, ids, depth = renderer.render(K, poses[i]) if time is None else renderer.render(K, poses[i], time)
            frames.append(write_rendered_frame(tmp, i, rgb, ids, depth, K, poses[i], splits[i], time))
        objects = [
            {
                "id": o.instance_id,
                "name": o.name,
                "category": o.category,
                "colour": list(o.colour),
                "box": o.world_box().tolist(),
            }
            for o in renderer.objects
        ]
        # The room encloses everything: a bounded scene. With the table and the cameras alone,
        # the walls and the ceiling lie beyond.
        centres = poses[:, :3, 3]
        lo, hi = np.minimum(TABLE_REGION[0], centres.min(0)), np.maximum(TABLE_REGION[1], centres.max(0))
        content = np.array(ROOM) if config.bounds == "room" else np.stack([lo, hi])
        contraction = "none" if config.bounds == "room" else "sphere"
        scene = Scene(frames=frames, name=name, format="n3f", objects=objects, contraction=contraction)
        write_scene_json(tmp, scene, content_box=content, extra={"generator": generator, **(extra or {})})
    return Path(out_dir)
