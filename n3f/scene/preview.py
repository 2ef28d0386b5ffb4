"""Pictures of a scene for people: a contact sheet of frames beside a map of the cameras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n3f.scene.images import load_frame_image, load_frame_mask
from n3f.scene.types import Scene

SPLIT_COLOURS = {"train": (150, 150, 150), "val": (240, 200, 40), "test": (240, 110, 30)}
BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _overlay_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tint each instance id with its own colour (id 0 untouched). image: (H, W, 3) uint8."""
    rng = np.random.default_rng(7)
    palette = rng.integers(60, 255, size=(int(mask.max()) + 1, 3))
    out = image.astype(np.float32)
    fg = mask > 0
    out[fg] = 0.45 * out[fg] + 0.55 * palette[mask[fg]]
    return out.astype(np.uint8)


def camera_map(scene: Scene, size: int) -> Image.Image:  # noqa: F821
    """A top-down map of camera centres and viewing directions, coloured by split.

    The view plane is spanned by the two main axes (PCA) of the camera centres, so orbits show as
    rings and forward-facing captures as a fan. The scene box is drawn in grey.
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    centres = np.stack([f.camera_centre for f in scene.frames])
    mean = centres.mean(0)
    if len(centres) >= 3:
        _, _, vt = np.linalg.svd(centres - mean, full_matrices=False)
        axes = vt[:2]
    else:
        axes = np.eye(3)[:2]
    forward = np.stack([f.c2w[:3, 2] for f in scene.frames])
    lo, hi = scene.aabb
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    pts2 = (centres - mean) @ axes.T
    box2 = (corners - mean) @ axes.T
    extent = max(np.abs(np.concatenate([pts2, box2])).max(), 1e-6) * 1.15
    margin = 28

    def to_px(p):
        return (margin + (p[0] / extent + 1) / 2 * (size - 2 * margin), margin + (1 - (p[1] / extent + 1) / 2) * (size - 2 * margin))

    hull = [to_px(p) for p in box2]
    xs, ys = [p[0] for p in hull], [p[1] for p in hull]
    draw.rectangle([min(xs), min(ys), max(xs), max(ys)], outline=(90, 90, 100), width=1)
    arrow = extent * 0.08
    for c, fwd, f in zip(pts2, forward @ axes.T, scene.frames):
        norm = np.linalg.norm(fwd)
        tip = c + (fwd / norm * arrow if norm > 1e-9 else 0)
        colour = SPLIT_COLOURS[f.split]
        draw.line([to_px(c), to_px(tip)], fill=colour, width=1)
        x, y = to_px(c)
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
    draw.text((8, 6), "cameras (top view), scene box", fill=TEXT, font=_font(12))
    legend_y = size - 18
    x = 8
    for split, colour in SPLIT_COLOURS.items():
        draw.ellipse([x, legend_y + 3, x + 8, legend_y + 11], fill=colour)
        draw.text((x + 12, legend_y), split, fill=TEXT, font=_font(12))
        x += 60
    return img


def contact_sheet(scene: Scene, path: Path, max_frames: int = 24, thumb_width: int = 192) -> Path:
    """Write a PNG: title, a grid of evenly spaced frames (split-coloured borders, index labels,
    instance masks tinted on a second copy of the first frame when masks exist) and the camera map.

    Args:
        scene: the scene.
        path: output PNG path (written atomically).
        max_frames: at most this many thumbnails.
        thumb_width: thumbnail width in pixels.

    Returns:
        ``path``.
    """
    import cv2
    from PIL import Image, ImageDraw

    from n3f.io import atomic_save_image

    n = len(scene.frames)
    f0 = scene.frames[0]
    slots = max_frames - (f0.mask_path is not None)  # the mask overlay takes one slot
    picks = np.unique(np.linspace(0, n - 1, min(n, slots)).round().astype(int))
    th = max(1, int(round(thumb_width * f0.height / f0.width)))
    thumbs: list[tuple[np.ndarray, str, str]] = []
    for i in picks:
        frame = scene.frames[i]
        image = (load_frame_image(frame) * 255 + 0.5).astype(np.uint8)
        thumbs.append((cv2.resize(image, (thumb_width, th), interpolation=cv2.INTER_AREA), f"#{i} {frame.name}", frame.split))
    if f0.mask_path is not None:
        mask = load_frame_mask(f0)
        image = (load_frame_image(f0) * 255 + 0.5).astype(np.uint8)
        tinted = _overlay_mask(image, mask)
        thumbs.insert(
            1,
            (
                cv2.resize(tinted, (thumb_width, th), interpolation=cv2.INTER_AREA),
                f"#0 masks ({len(np.unique(mask)) - 1} objects)",
                f0.split,
            ),
        )
    cols = 6 if len(thumbs) > 8 else max(1, min(4, len(thumbs)))
    rows = int(np.ceil(len(thumbs) / cols))
    pad, label_h, title_h = 6, 16, 48
    grid_w = cols * (thumb_width + pad) + pad
    grid_h = rows * (th + label_h + pad) + pad
    map_size = max(grid_h, 260)
    sheet = Image.new("RGB", (grid_w + map_size, title_h + max(grid_h, map_size)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    counts = scene.split_counts()
    title = f"{scene.name}  ·  {scene.format}  ·  {n} frames ({counts['train']} train, {counts['val']} val, {counts['test']} test)  ·  {f0.width}x{f0.height}"
    draw.text((pad, 8), title, fill=TEXT, font=_font(16))
    sub = f"{scene.source}" if scene.source else ""
    draw.text((pad, 28), sub[-140:], fill=(160, 160, 170), font=_font(12))
    for k, (thumb, label, split) in enumerate(thumbs):
        r, c = divmod(k, cols)
        x = pad + c * (thumb_width + pad)
        y = title_h + pad + r * (th + label_h + pad)
        draw.rectangle([x - 2, y - 2, x + thumb_width + 1, y + th + 1], outline=SPLIT_COLOURS[split], width=2)
        sheet.paste(Image.fromarray(thumb), (x, y))
        draw.text((x, y + th + 2), label[:32], fill=TEXT, font=_font(11))
    sheet.paste(camera_map(scene, map_size), (grid_w, title_h))
    atomic_save_image(path, sheet)
    return Path(path)
