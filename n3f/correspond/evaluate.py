"""``n3f correspond eval``: score a run's deformation field beside the baselines and write the results.

Writes into the run folder (never overwriting): ``metrics.json``
(``{"learned"|"identity"|"feature_nn"|"oracle": {"pck@0.05", "pck@0.1", "miou", "miou_masked",
"cycle_error", ...}}`` plus ``"eval"`` with the settings), ``metrics.md`` (the same as a table) and
``eval/`` pictures: ``labels.png`` (true labels | learned | identity, one row per held-out
instance), ``coordinates.png`` (rgb and rendered template-coordinate maps, learned vs oracle) and
``texture.png`` (source | target | target shape with the source texture, learned vs oracle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from n3f.errors import N3FError

PALETTE = np.array([[20, 20, 20], [230, 159, 0], [86, 180, 233], [0, 158, 115], [213, 94, 0], [204, 121, 167], [240, 228, 66]], np.uint8)


def metrics_markdown(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of methods (rows) by metrics (columns); PCK and mIoU in percent."""
    keys = ["pck@0.05", "pck@0.1", "pck@0.1_template_nn", "miou", "miou_masked", "miou_warped", "miou_warped_masked", "cycle_error"]
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for method, row in results.items():
        cells = []
        for k in keys:
            v = row.get(k)
            cells.append("-" if v is None else (f"{v:.4f}" if k == "cycle_error" else f"{100 * v:.1f}"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nPCK and mIoU in percent; cycle error as a fraction of the bounding-box diagonal.\n"


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).numpy() * 255).astype(np.uint8)


def _grid(rows: list[list[np.ndarray]], scale: int = 3) -> np.ndarray:
    """Tile equal-size (H, W, 3) uint8 images, upscaled by ``scale``, with 2-pixel white gaps."""
    h, w, _ = rows[0][0].shape
    gap = 2
    out = np.full((len(rows) * (h * scale + gap), max(len(r) for r in rows) * (w * scale + gap), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            big = img.repeat(scale, 0).repeat(scale, 1)
            out[i * (h * scale + gap) : i * (h * scale + gap) + h * scale, j * (w * scale + gap) : j * (w * scale + gap) + w * scale] = big
    return out


@torch.no_grad()
def write_pictures(family, model, folder: Path, n_instances: int = 3, size: int = 64, seed: int = 777) -> list[Path]:
    """Render the transfer pictures (see module docstring) into ``folder``; returns the paths."""
    from PIL import Image

    from n3f.correspond.match import IdentityMaps
    from n3f.correspond.metrics import learned_template_field
    from n3f.correspond.transfer import (
        coordinate_map_field,
        default_views,
        label_transfer_field,
        labels_from_render,
        render_image,
        texture_transfer_field,
    )
    from n3f.io import atomic_save_image

    latents = family.sample_latents(n_instances, generator=torch.Generator().manual_seed(seed))
    view = default_views(1)[0]
    template = learned_template_field(family)
    lo, hi = family.aabb[0], family.aabb[1]
    paths = []

    label_rows = []
    for z in latents:
        row = [PALETTE[labels_from_render(render_image(family.field(z, labels=True), family.aabb, view, size)).numpy()]]
        for maps in (model, IdentityMaps()):
            row.append(
                PALETTE[
                    labels_from_render(
                        render_image(label_transfer_field(maps, template, z, family.field(z)), family.aabb, view, size)
                    ).numpy()
                ]
            )
        label_rows.append(row)
    paths.append(folder / "labels.png")
    atomic_save_image(paths[-1], Image.fromarray(_grid(label_rows)))

    coord_rows = []
    oracle_lo, oracle_hi = torch.tensor([-0.6, -0.8, -0.6]), torch.tensor([0.6, 0.95, 0.6])
    for z in latents:
        row = []
        for maps, a, b in ((model, lo * 0.5, hi * 0.5), (family, oracle_lo, oracle_hi)):
            out = render_image(coordinate_map_field(maps, family.field(z), z), family.aabb, view, size)
            if not row:
                row.append(_to_uint8(out["rgb"] + (1 - out["opacity"])))
            coords = (out["template_coords"] / out["opacity"].clamp_min(1e-6) - a) / (b - a)
            row.append(_to_uint8(torch.where(out["opacity"] > 0.5, coords, torch.ones_like(coords))))
        coord_rows.append(row)
    paths.append(folder / "coordinates.png")
    atomic_save_image(paths[-1], Image.fromarray(_grid(coord_rows)))

    texture_rows = []
    for i, z in enumerate(latents):
        source = latents[(i + 1) % len(latents)]
        row = [
            _to_uint8(o["rgb"] + (1 - o["opacity"])) for o in (render_image(family.field(f), family.aabb, view, size) for f in (source, z))
        ]
        for maps in (model, family):
            out = render_image(texture_transfer_field(maps, family.field(source), source, z), family.aabb, view, size)
            row.append(_to_uint8(out["rgb"] + (1 - out["opacity"])))
        texture_rows.append(row)
    paths.append(folder / "texture.png")
    atomic_save_image(paths[-1], Image.fromarray(_grid(texture_rows)))
    return paths


def evaluate_run(
    run_dir: Path,
    n_instances: int = 8,
    n_views: int = 2,
    size: int = 48,
    seed: int = 12345,
    picture_size: int = 64,
    invert: bool = True,
    quiet: bool = True,
) -> dict:
    """Score the run's model on held-out instances and write metrics.json, metrics.md and eval/*.png.

    Args:
        run_dir: a finished correspondence run folder.
        n_instances, n_views, size: held-out instances, label views per instance, label image side (pixels).
        seed: seed of the held-out latents (training never draws from it).
        picture_size: side of the pictures' panels (pixels); 0 writes no pictures.
        invert: also score the maps on latents recovered from three rendered 24 x 24 views per instance.
        quiet: no progress bar.

    Returns:
        the results dict written to metrics.json.

    Raises:
        N3FError: ``run_dir`` is not a finished correspondence run, or it was already evaluated.
    """
    from n3f.correspond.families import create_family
    from n3f.correspond.metrics import evaluate_all, make_eval_set
    from n3f.correspond.train import load_model, read_config
    from n3f.io import atomic_write_json, atomic_write_text
    from n3f.progress import make_progress

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise N3FError(f"run folder {run_dir} does not exist; give a folder written by `n3f correspond fit`")
    config = read_config(run_dir)
    if (run_dir / "metrics.json").exists():
        raise N3FError(f"{run_dir / 'metrics.json'} already exists; n3f never overwrites results")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    family = create_family(config.family, seed=0)
    model = load_model(run_dir)
    data = make_eval_set(family, n_instances=n_instances, n_views=n_views, size=size, seed=seed)
    results = evaluate_all(family, model, data, invert=invert, progress=make_progress(quiet))
    results["eval"] = {"instances": n_instances, "views": n_views, "size": size, "seed": seed, "keypoints": int(data.keypoints.shape[1])}
    if picture_size:
        write_pictures(family, model, run_dir / "eval", size=picture_size)
    atomic_write_text(run_dir / "metrics.md", metrics_markdown({k: v for k, v in results.items() if k != "eval"}))
    atomic_write_json(run_dir / "metrics.json", results)
    return results
