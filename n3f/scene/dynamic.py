"""The procedural dynamic scene ``demo/kitchen_dynamic``: the tabletop plus a moving object and a hand.

It is :mod:`n3f.scene.synthetic`'s room and table (same objects, same cameras, same seed) with two
things that break the static-world assumption, the way an egocentric kitchen video does:

- a **moving object** (a kitchen sponge, instance id :data:`MOVING_ID`) that slides across the
  table along a smooth world path, a function of the frame's time (:func:`sponge_pose`);
- a **hand** (instance id :data:`HAND_ID`): a skin-coloured forearm, palm, four fingers and a
  thumb, fixed in *camera* coordinates and entering the lower right of every frame
  (:func:`hand_parts`).

Both are ray cast with the static scene in each frame, so every pixel's instance id and z-depth
are exact at the pixel centre and an occluded static object loses the pixels its occluder covers.
Neither casts a shadow on the static scene, so a static pixel away from the dynamic ones has
exactly the colour ``demo/tabletop`` gives it from the same camera.

The scene folder is the native layout (:mod:`n3f.scene.formats.native`) with, in addition:

- per frame ``time`` = index / (n_frames - 1) in [0, 1] (``Frame.time``); the frame's index in
  ``Scene.frames`` (also its ``frame_id``) is what a per-frame embedding is looked up by;
- ``masks/`` holding ids 0 (room, floor, table), 1..7 (the static objects, as in the tabletop),
  :data:`MOVING_ID` and :data:`HAND_ID`;
- ``scene.objects``: the static objects only (they keep their fixed world boxes), so retrieval
  scores only static objects;
- top-level ``dynamic`` (``Scene.metadata["dynamic"]``): the NeuralDiff stream of each id
  (``streams``), the moving object's record with its per-frame world pose and box (metres, the
  stored world), and the hand's record with its parts in camera coordinates. :func:`stream_labels`
  turns a mask into per-pixel stream labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from n3f.scene.raycast import Primitive
from n3f.scene.synthetic import GENERATOR_VERSION, TABLE_TOP, TabletopConfig, TabletopRenderer, write_procedural_scene

# Bump when this scene's moving object or hand changes (the tabletop's own version is part of the
# folder name too, so a change to the room or table re-renders this scene as well).
DYNAMIC_VERSION = 1
MOVING_ID = 8
HAND_ID = 9
STATIC, DYNAMIC, ACTOR = 0, 1, 2  # per-pixel stream labels (NeuralDiff: static, transient, actor)

SPONGE_COLOUR = (0.95, 0.8, 0.2)
SPONGE_BOX = ([-0.065, -0.0425, 0.0], [0.065, 0.0425, 0.045])  # object-local, metres (z up, base at 0)
SKIN_COLOUR = (0.86, 0.63, 0.5)


@dataclass
class KitchenDynamicConfig(TabletopConfig):
    """How to render ``demo/kitchen_dynamic``: the tabletop's options (same defaults, same cameras).

    ``exclude`` may also name ``"sponge"`` or ``"hand"`` to leave the moving object or the hand out.
    """


def frame_time(index: int, n_frames: int) -> float:
    """Time of frame ``index`` of ``n_frames``, normalised to [0, 1] (0 when there is one frame)."""
    return index / (n_frames - 1) if n_frames > 1 else 0.0


def sponge_pose(time: float) -> tuple[np.ndarray, float]:
    """World pose of the moving sponge at ``time`` in [0, 1].

    It slides along the table's free middle lane (between the objects at y > 0.1 and y < -0.05)
    from x = -0.45 to x = +0.45 with an eased start and stop, wobbling a little sideways and in yaw.

    Returns:
        position: (3,) world metres of the sponge's base centre (on the table top).
        yaw: rotation about world z, radians.
    """
    ease = 0.5 - 0.5 * np.cos(np.pi * time)
    wobble = np.sin(2 * np.pi * time)
    position = np.array([-0.45 + 0.9 * ease, 0.01 + 0.005 * wobble, TABLE_TOP])
    return position, float(0.1 * wobble)


def sponge_world_box(time: float) -> np.ndarray:
    """(2, 3) world axis-aligned box [min, max] of the sponge at ``time`` (metres)."""
    position, yaw = sponge_pose(time)
    lo, hi = np.asarray(SPONGE_BOX[0]), np.asarray(SPONGE_BOX[1])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners @ Primitive("box", {}, position, yaw).rotation.T + position
    return np.stack([world.min(0), world.max(0)])


def _axis_frame(z_axis, y_hint) -> np.ndarray:
    """(3, 3) rotation whose third column is ``z_axis`` and second is ``y_hint`` made orthogonal."""
    z = np.asarray(z_axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    y = np.asarray(y_hint, dtype=np.float64) - np.dot(y_hint, z) * z
    y = y / np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z], 1)


def hand_parts() -> list[tuple[str, dict, np.ndarray, np.ndarray]]:
    """The hand's solids in camera coordinates (OpenCV: x right, y down, z forward; metres).

    A right forearm comes in from beyond the lower-right corner of the image, palm facing down,
    fingers reaching towards the image centre. The hand frame has its origin at the wrist, z along
    the arm towards the fingers and y out of the palm.

    Returns:
        One ``(kind, params, position (3,), rotation (3, 3))`` per solid: a :class:`Primitive` of
        that kind and params whose local frame sits at ``position`` with ``rotation`` (local to
        camera) in camera coordinates.
    """
    wrist = np.array([0.10, 0.076, 0.28])
    hand = _axis_frame([-0.35, -0.25, 0.9], [0.0, 1.0, 0.0])
    local: list[tuple[str, dict, list, np.ndarray]] = [
        ("frustum", {"r0": 0.036, "r1": 0.028, "z0": -0.22, "z1": 0.01}, [0, 0, 0], np.eye(3)),  # forearm
        ("box", {"lo": [-0.043, -0.013, 0.0], "hi": [0.043, 0.013, 0.088]}, [0, 0, 0], np.eye(3)),  # palm
    ]
    for x, length in ((-0.028, 0.07), (-0.0095, 0.078), (0.0095, 0.072), (0.028, 0.056)):  # fingers
        local.append(("frustum", {"r0": 0.0088, "r1": 0.0082, "z0": 0.0, "z1": length}, [x, 0.0, 0.084], np.eye(3)))
        local.append(("sphere", {"radius": 0.0082}, [x, 0.0, 0.084 + length], np.eye(3)))
    thumb, base, length = _axis_frame([-0.5, 0.2, 0.85], [0.0, 1.0, 0.0]), np.array([-0.034, 0.004, 0.014]), 0.05
    local.append(("frustum", {"r0": 0.0115, "r1": 0.0098, "z0": 0.0, "z1": length}, base, thumb))
    local.append(("sphere", {"radius": 0.0098}, base + length * thumb[:, 2], thumb))
    return [(kind, params, wrist + hand @ np.asarray(offset, dtype=np.float64), hand @ rot) for kind, params, offset, rot in local]


def hand_frame() -> tuple[np.ndarray, np.ndarray]:
    """(wrist position (3,), rotation (3, 3)) of the hand frame in camera coordinates."""
    _, _, position, rotation = hand_parts()[1]  # the palm's frame is the hand frame
    return position, rotation


def stream_labels(mask: np.ndarray, dynamic: dict) -> np.ndarray:
    """Per-pixel stream of an instance mask of this scene.

    Args:
        mask: (H, W) instance ids (``load_frame_mask``).
        dynamic: the scene's ``metadata["dynamic"]`` record.

    Returns:
        (H, W) uint8: :data:`STATIC` (0), :data:`DYNAMIC` (1, the moving object) or :data:`ACTOR` (2, the hand).
    """
    labels = np.zeros(mask.shape, dtype=np.uint8)
    labels[np.isin(mask, dynamic["streams"]["dynamic"])] = DYNAMIC
    labels[np.isin(mask, dynamic["streams"]["actor"])] = ACTOR
    return labels


class KitchenDynamicRenderer(TabletopRenderer):
    """Renders colour, instance ids and z-depth of ``demo/kitchen_dynamic`` at a camera and a time.

    The static part is the :class:`TabletopRenderer`'s; the sponge and the hand are posed for each
    call and added after it, so static hits and static shadows are computed exactly as there.
    """

    def __init__(self, config: KitchenDynamicConfig):
        super().__init__(config)
        self.static_primitives = list(self.primitives)
        self.static_owner = list(self.owner)
        self.static_groups = list(self.groups)
        self.with_sponge = "sponge" not in config.exclude
        self.with_hand = "hand" not in config.exclude

    def pose(self, c2w: np.ndarray, time: float) -> None:
        """Place the sponge at ``time`` and the hand in front of camera ``c2w`` (4, 4) for the next render."""
        primitives, owner, groups = list(self.static_primitives), list(self.static_owner), list(self.static_groups)

        def add(solids: list[Primitive], instance_id: int, material: str, colour, frame: Primitive) -> None:
            for solid in solids:  # one culling group per solid: few rays meet each finger
                groups.append((*solid.bounding_sphere(), [len(primitives)]))
                primitives.append(solid)
                owner.append((instance_id, material, colour, frame))

        if self.with_sponge:
            position, yaw = sponge_pose(time)
            box = Primitive("box", {"lo": SPONGE_BOX[0], "hi": SPONGE_BOX[1]}, position, yaw)
            add([box], MOVING_ID, "sponge", SPONGE_COLOUR, Primitive("sphere", {"radius": 0.0}, position, yaw))
        if self.with_hand:
            R, t = c2w[:3, :3], c2w[:3, 3]
            solids = [Primitive(kind, params, R @ pos + t, orientation=R @ rot) for kind, params, pos, rot in hand_parts()]
            wrist, rotation = hand_frame()
            add(solids, HAND_ID, "skin", SKIN_COLOUR, Primitive("sphere", {"radius": 0.0}, R @ wrist + t, orientation=R @ rotation))
        self.primitives, self.owner, self.groups = primitives, owner, groups
        self.instance_of = np.array([ow[0] for ow in owner] + [0])
        self.shiny = np.array([ow[1] in ("ceramic", "glass", "can") for ow in owner] + [False])
        # self.occluder_groups stays the static scene's: the sponge and the hand cast no shadows

    def render(self, K: np.ndarray, c2w: np.ndarray, time: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render one view at ``time`` in [0, 1].

        Returns:
            rgb: (H, W, 3) uint8 sRGB; instance: (H, W) uint8 ids (0 = room, floor, table;
            1..7 static objects; :data:`MOVING_ID`; :data:`HAND_ID`); depth: (H, W) float32
            z-depth in metres.
        """
        self.pose(c2w, time)
        return super().render(K, c2w)


def dynamic_record(config: KitchenDynamicConfig) -> dict:
    """The scene file's ``dynamic`` record (JSON-ready; world metres, camera coordinates for the hand)."""
    times = [frame_time(i, config.n_frames) for i in range(config.n_frames)]
    record: dict = {"streams": {"dynamic": [], "actor": []}, "time": "frame index / (n_frames - 1)"}
    if "sponge" not in config.exclude:
        poses = [sponge_pose(t) for t in times]
        record["streams"]["dynamic"].append(MOVING_ID)
        record["moving_object"] = {
            "id": MOVING_ID,
            "name": "sponge",
            "category": "sponge",
            "colour": list(SPONGE_COLOUR),
            "local_box": [list(SPONGE_BOX[0]), list(SPONGE_BOX[1])],
            "poses": [[*p.tolist(), yaw] for p, yaw in poses],  # per frame: x, y, z (base centre), yaw
            "boxes": [sponge_world_box(t).tolist() for t in times],  # per frame: world [min, max]
        }
    if "hand" not in config.exclude:
        record["streams"]["actor"].append(HAND_ID)
        record["hand"] = {
            "id": HAND_ID,
            "name": "hand",
            "attached_to": "camera",
            "colour": list(SKIN_COLOUR),
            "parts": [{"kind": k, "params": p, "position": pos.tolist(), "rotation": rot.tolist()} for k, p, pos, rot in hand_parts()],
        }
    return record


def render_kitchen_dynamic(out_dir: Path, config: KitchenDynamicConfig | None = None, progress: Callable | None = None) -> Path:
    """Render ``demo/kitchen_dynamic`` into a scene folder, atomically.

    Args:
        out_dir: the folder to create; it must not exist yet (nothing is overwritten).
        config: rendering options (defaults: 96 frames at 256x192, seed 0, the tabletop's cameras).
        progress: optional ``progress(iterable, description, total)`` wrapper (e.g. a rich bar).

    Returns:
        ``out_dir``, holding ``scene.json``, ``images/``, ``masks/`` and ``depth/`` (see the module docstring).
    """

    config = config or KitchenDynamicConfig()
    generator = {
        "name": "kitchen_dynamic",
        "version": f"{GENERATOR_VERSION}.{DYNAMIC_VERSION}",
        **dataclasses.asdict(config),
        "exclude": list(config.exclude),
    }
    times = [frame_time(i, config.n_frames) for i in range(config.n_frames)]
    return write_procedural_scene(
        out_dir,
        "demo/kitchen_dynamic",
        config,
        KitchenDynamicRenderer(config),
        generator,
        times=times,
        extra={"dynamic": dynamic_record(config)},
        progress=progress,
    )
