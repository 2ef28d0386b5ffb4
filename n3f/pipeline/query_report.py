"""What ``n3f query`` writes: heat-map overlays, a contact sheet of the best frames, the ranking,
the scene's point cloud coloured by similarity, and optionally the raw similarity maps."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from n3f.io import atomic_directory, atomic_write_bytes
from n3f.pipeline.query import SCORE_PERCENTILE, Patch, QueryEngine, frame_score


def colour_range(similarities, low_percentile: float = 50.0) -> tuple[float, float]:
    """One colour scale for all heat maps of a query: from the median similarity (over every
    searched pixel) to the highest, so the colours separate matches from the rest even when a
    field's similarities are all close to 1."""
    values = np.concatenate([np.asarray(s, np.float32).reshape(-1)[::7] for s in similarities])
    lo, hi = float(np.percentile(values, low_percentile)), float(values.max())
    return lo, max(hi, lo + 1e-6)


def heatmap_overlay(
    image: np.ndarray, similarity: np.ndarray, box: tuple[int, int, int, int] | None = None, lo: float = 0.0, hi: float = 1.0
) -> np.ndarray:
    """Blend a turbo colour map of ``similarity`` (H, W) over ``image`` (H, W, 3) uint8.

    Similarity below ``lo`` shows the image alone; from ``lo`` to ``hi`` the colour map fades in.
    ``box`` (the query patch) is outlined in white. Returns (H, W, 3) uint8 RGB.
    """
    import cv2

    s = np.clip((similarity - lo) / max(hi - lo, 1e-6), 0, 1)
    colours = cv2.applyColorMap((s * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[:, :, ::-1].astype(np.float32)
    alpha = (0.7 * s)[..., None]
    out = (image.astype(np.float32) * (1 - alpha) + colours * alpha).astype(np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
    return out


def ranking_sheet(tiles: list[tuple[np.ndarray, str]], title: str, columns: int = 4) -> bytes:
    """A PNG contact sheet of labelled tiles (RGB uint8, one size), best first, with a title."""
    from PIL import Image, ImageDraw

    from n3f.scene.preview import _font

    h, w = tiles[0][0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    pad, label, head = 6, 16, 26
    sheet = Image.new("RGB", (columns * (w + pad) + pad, head + rows * (h + label + pad) + pad), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 6), title, fill=(235, 235, 235), font=_font(14))
    for k, (tile, text) in enumerate(tiles):
        x = pad + (k % columns) * (w + pad)
        y = head + (k // columns) * (h + label + pad)
        sheet.paste(Image.fromarray(tile), (x, y))
        draw.text((x, y + h + 1), text, fill=(210, 210, 210), font=_font(12))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def run_query(
    engine: QueryEngine,
    patch: Patch,
    source: str,
    frames: list[int],
    output: Path,
    save_similarity: bool = False,
    best: int = 12,
    points=None,
    progress=None,
) -> dict:
    """Run one query and write its results into the new folder ``output`` (atomically).

    Writes ``heatmaps/<frame>.png`` for every searched frame, ``contact_sheet.png`` (the ``best``
    frames), ``ranking.json``, ``points.ply`` (the scene points with their similarity, when
    ``points`` is given) and ``similarity.npz`` (float16 per frame, keyed by file name) if asked.

    Returns:
        The ranking document (also in ranking.json).
    """
    from n3f.scene.images import load_frame_image

    scene = engine.scene
    vector = engine.vector(patch, source)
    sims = engine.similarity(vector, source, frames)
    ranking = sorted(
        ({"frame": i, "name": scene.frames[i].name, "split": scene.frames[i].split, "score": frame_score(sims[i])} for i in frames),
        key=lambda r: -r["score"],
    )
    doc = {
        "query": {"frame": patch.frame, "name": scene.frames[patch.frame].name, "box": list(patch.box), "source": source},
        "score": f"percentile {SCORE_PERCENTILE:g} of the frame's cosine similarity",
        "ranking": ranking,
    }
    with atomic_directory(output) as tmp:
        tiles = {}
        lo, hi = colour_range(sims.values())
        doc["colour_range"] = [lo, hi]
        it = progress(frames, "heat maps", len(frames)) if progress else frames
        for i in it:
            image = (load_frame_image(scene.frames[i]) * 255 + 0.5).astype(np.uint8)
            over = heatmap_overlay(image, sims[i], patch.box if i == patch.frame else None, lo, hi)
            tiles[i] = over
            _write_png(tmp / "heatmaps" / f"{Path(scene.frames[i].name).stem}.png", over)
        top = ranking[:best]
        title = f"query: frame #{patch.frame} {scene.frames[patch.frame].name} box {patch.box} ({source} features)"
        query_tile = tiles.get(patch.frame)
        if query_tile is None:  # the query frame was not searched: show it anyway, with its box
            image = (load_frame_image(scene.frames[patch.frame]) * 255 + 0.5).astype(np.uint8)
            query_tile = heatmap_overlay(image, np.zeros(image.shape[:2], np.float32), patch.box, lo=1.0, hi=2.0)
        sheet = [(query_tile, f"query #{patch.frame} {scene.frames[patch.frame].name}")]
        sheet += [(tiles[r["frame"]], f"#{r['frame']} {r['name']} {r['split']} {r['score']:.2f}") for r in top]
        atomic_write_bytes(tmp / "contact_sheet.png", ranking_sheet(sheet, title))
        atomic_write_bytes(tmp / "ranking.json", json.dumps(doc, indent=1).encode())
        if points is not None and source == "student":  # the teacher has no 3D features
            from n3f.pipeline.pointcloud import write_ply

            write_ply(
                tmp / "points.ply",
                scene,
                points,
                {"similarity": point_similarity(points, vector)},
                pca_basis=points_pca_basis(points.features),
            )
        if save_similarity:
            buf = io.BytesIO()
            np.savez_compressed(buf, **{scene.frames[i].name: sims[i].astype(np.float16) for i in frames})
            atomic_write_bytes(tmp / "similarity.npz", buf.getvalue())
    return doc


def point_similarity(points, vector: np.ndarray) -> np.ndarray:
    """Cosine similarity (N,) of each point's feature to a unit query vector."""
    f = points.features / np.maximum(np.linalg.norm(points.features, axis=1, keepdims=True), 1e-8)
    return f @ vector.astype(np.float32)


def points_pca_basis(features: np.ndarray) -> np.ndarray:
    """(D, 3) projection of point features onto their top three principal directions (for PLYs)."""
    from n3f.pipeline.visualise import pca_basis

    return pca_basis(features).T


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    atomic_write_bytes(path, cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())
