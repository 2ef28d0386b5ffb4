"""The ``n3f`` command. Each sub-command is one function; heavy imports happen inside them.

Every command takes ``--quiet`` and ``--seed``; commands that write take ``--output``. Errors a user
can cause print one message (no traceback) and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from n3f.errors import N3FError
from n3f.io import check_writable

app = typer.Typer(
    name="n3f",
    help=(
        "Feature-field distillation on real scenes: fit a NeRF student that renders colour and "
        "3D-consistent features distilled from a 2D teacher, then click a patch to find an object "
        "in every frame and in 3D.\n\n"
        "Start with: n3f scenes, then n3f inspect --scene demo/tabletop"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

SceneOpt = Annotated[
    str,
    typer.Option(
        "--scene",
        "-s",
        help="A catalog name (see `n3f scenes`), an alias such as epic_kitchens/P01, or a path to a scene folder (COLMAP, LLFF, transforms.json, EPIC-Diff, EPIC Fields or n3f).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed; for procedural scenes it picks the generated variant (0 = the catalog's).")
]


@app.command("scenes")
def scenes_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON for scripts.")] = False,
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """List the scene catalog (scenes/<family>/<name>.toml) and whether each scene's data is present.

    Example: n3f scenes
    """
    from n3f.scene.catalog import data_root, load_catalog

    catalog = load_catalog()
    rows = []
    for name, r in catalog.items():
        where = r.locate()
        status = "ready" if where else ("rendered on first use" if r.generator else "missing")
        rows.append(
            {
                "name": name,
                "aliases": r.aliases,
                "format": r.format,
                "status": status,
                "path": str(where or r.candidates()[0]),
                "description": r.description,
            }
        )
    if as_json:
        print(json.dumps({"data_root": str(data_root()), "scenes": rows}, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"n3f scene catalog (data root: {data_root()})", title_justify="left")
    for col in ("scene", "format", "status", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
        colour = {"ready": "green", "missing": "red"}.get(row["status"], "yellow")
        table.add_row(name, row["format"], f"[{colour}]{row['status']}[/]", row["description"])
    Console().print(table)
    print("Missing data: `n3f inspect --scene NAME` says where to get it and where to put it.")


def _scene_json(scene) -> dict:
    return {
        "name": scene.name,
        "format": scene.format,
        "source": str(scene.source) if scene.source else None,
        "contraction": scene.contraction,
        "aabb": scene.aabb.tolist(),
        "normalisation": scene.normalisation.tolist(),
        "splits": scene.split_counts(),
        "frames": [
            {
                "file": str(f.image_path),
                "K": f.K.tolist(),
                "c2w": f.c2w.tolist(),
                "width": f.width,
                "height": f.height,
                "split": f.split,
                **({"distortion": {"model": f.distortion.model, "params": list(f.distortion.params)}} if f.distortion else {}),
                **({"near": f.near, "far": f.far} if f.near is not None else {}),
            }
            for f in scene.frames
        ],
        "objects": scene.objects,
    }


def _print_summary(scene, sheet: Path | None) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    f0 = scene.frames[0]
    sizes = sorted({(f.width, f.height) for f in scene.frames})
    shared_K = all(np.allclose(f.K, f0.K) for f in scene.frames)
    counts = scene.split_counts()
    nears = [f.near for f in scene.frames if f.near is not None]
    fars = [f.far for f in scene.frames if f.far is not None]
    table = Table(title=f"scene {scene.name}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("source", f"{scene.source} ({scene.format})")
    table.add_row("frames", f"{len(scene)}: {counts['train']} train, {counts['val']} val, {counts['test']} test")
    table.add_row("image size", ", ".join(f"{w}x{h}" for w, h in sizes))
    table.add_row(
        "intrinsics",
        f"fx={f0.K[0, 0]:.2f} fy={f0.K[1, 1]:.2f} cx={f0.K[0, 2]:.2f} cy={f0.K[1, 2]:.2f} px"
        + (" (shared)" if shared_K else " (frame 0; frames differ)"),
    )
    table.add_row("distortion", f0.distortion.model + " " + str(list(f0.distortion.params)) if f0.distortion else "none (pinhole)")
    table.add_row(
        "scene box",
        f"min {np.round(scene.aabb[0], 3).tolist()} max {np.round(scene.aabb[1], 3).tolist()} (normalised world, cameras and content in [-1, 1]^3)",
    )
    table.add_row("normalisation", f"scale {scene.scale:.4g} from the source's units; contraction: {scene.contraction}")
    if nears:
        table.add_row("near / far", f"{min(nears):.3f} .. {max(fars) if fars else float('nan'):.3f} (normalised units)")
    if scene.points is not None:
        table.add_row("sparse points", str(len(scene.points)))
    extras = [k for k, ok in (("masks", f0.mask_path is not None), ("depth", f0.depth_path is not None)) if ok]
    table.add_row("ground truth", ", ".join(extras) if extras else "none")
    if scene.objects:
        table.add_row("objects", ", ".join(f"{o['id']}:{o['name']}" for o in scene.objects))
    if sheet:
        table.add_row("contact sheet", str(sheet))
    console = Console()
    console.print(table)
    _print_frame_list(console, scene)


def _print_frame_list(console, scene, limit: int = 200) -> None:
    """Frames as `index file split`, several per line; the index is what --frame takes later."""
    n = len(scene.frames)
    shown = list(range(n)) if n <= limit else list(range(limit // 2)) + list(range(n - limit // 2, n))
    entries = [f"{i:>4} {scene.frames[i].name} {scene.frames[i].split[:2]}" for i in shown]
    width = max(len(e) for e in entries) + 2
    per_line = max(1, (console.width or 80) // width)
    console.print(
        f"frames (index, file, split; tr = train, va = val, te = test){'' if n <= limit else f', first and last {limit // 2} of {n} (all with --json)'}:"
    )
    for start in range(0, len(entries), per_line):
        console.print("".join(e.ljust(width) for e in entries[start : start + per_line]), highlight=False)


@app.command("inspect")
def inspect_command(
    scene: SceneOpt,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print frames (file, K, c2w in the normalised OpenCV world, width, height, split) as JSON; write nothing."
        ),
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the contact sheet PNG.")] = Path("runs/inspect"),
    downscale: Annotated[int, typer.Option("--downscale", help="Load images at 1/N size (0 = the catalog's choice).")] = 0,
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Print a scene's frames, intrinsics, bounds and splits, and write a contact-sheet PNG.

    Procedural scenes (demo/*) are rendered into the data root on first use.

    \b
    Examples:
      n3f inspect --scene demo/tabletop
      n3f inspect --scene llff/fern --json > fern.json
      n3f inspect --scene path/to/colmap_folder
    """
    from n3f.progress import make_progress
    from n3f.scene.catalog import load_scene
    from n3f.scene.preview import contact_sheet

    loaded = load_scene(scene, seed=seed or None, downscale=downscale or None, progress=make_progress(quiet or as_json))
    if as_json:
        print(json.dumps(_scene_json(loaded)))
        return
    from n3f.io import safe_name

    sheet = contact_sheet(loaded, output / f"{safe_name(loaded.name)}-contact-sheet.png")
    _print_summary(loaded, sheet)


@app.command("preprocess")
def preprocess_command(
    out: Annotated[Path, typer.Option("--out", "--output", "-o", help="Scene folder to create (must not exist, or be empty).")],
    images: Annotated[Path | None, typer.Option("--images", help="Folder of photos (png, jpg...) of one scene.")] = None,
    video: Annotated[Path | None, typer.Option("--video", help="Video file (mp4, mov, avi... anything OpenCV/FFmpeg decodes).")] = None,
    fps: Annotated[float, typer.Option("--fps", help="Video frames kept per second of video.")] = 2.0,
    downscale: Annotated[int, typer.Option("--downscale", help="Shrink frames or photos by this integer factor before SfM.")] = 1,
    blur_ratio: Annotated[
        float,
        typer.Option(
            "--blur-ratio",
            help="Drop a video frame whose sharpness (variance of the Laplacian) is below this fraction of the median of its 3 neighbours on each side; 0 keeps all.",
        ),
    ] = 0.5,
    matcher: Annotated[
        str,
        typer.Option(
            "--matcher",
            help="auto (exhaustive up to 100 images, else sequential for a video, vocabtree for photos), exhaustive, sequential or vocabtree.",
        ),
    ] = "auto",
    loop_detection: Annotated[
        bool,
        typer.Option(
            "--loop-detection/--no-loop-detection",
            help="Sequential matching also matches frames with similar far-away frames (vocabulary built from the scene itself).",
        ),
    ] = True,
    mapper: Annotated[str, typer.Option("--mapper", help="incremental (COLMAP) or global (GLOMAP).")] = "incremental",
    camera_model: Annotated[
        str,
        typer.Option("--camera-model", help="Lens model fitted during mapping: SIMPLE_RADIAL, RADIAL, OPENCV, SIMPLE_PINHOLE or PINHOLE."),
    ] = "SIMPLE_RADIAL",
    camera_per_image: Annotated[
        bool, typer.Option("--camera-per-image", help="Fit one camera per photo (photos from several cameras or zoom levels).")
    ] = False,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for every stage (0 = all cores).")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show COLMAP's own log.")] = False,
    quiet: QuietOpt = False,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of COLMAP's RANSAC, mapper and the vocabulary.")] = 0,
) -> None:
    """Recover camera poses from photos or a video (structure from motion) and write a scene folder.

    Steps: frames from the video at --fps, blurry ones dropped (or the photos as they are); SIFT
    features; matching; mapping (the largest model is kept); undistortion to a pinhole model. The
    folder (images/, sparse/0/, distorted/, preprocess.json) is what --scene reads; it appears only
    when every step succeeded.

    Loop detection and vocabtree matching use a visual vocabulary built from the scene's own
    features (COLMAP's pretrained one is a download, unavailable offline).

    \b
    Examples:
      n3f preprocess --images photos/ --out scenes/desk
      n3f preprocess --video walk.mp4 --fps 3 --downscale 2 --out scenes/kitchen
      n3f preprocess --images photos/ --mapper global --out scenes/desk-glomap
      n3f inspect --scene scenes/desk
    """
    from n3f.scene.preprocess import PreprocessOptions, preprocess
    from n3f.scene.preprocess.options import SfmOptions

    sfm = SfmOptions(
        matcher=matcher,
        loop_detection=loop_detection,
        mapper=mapper,
        camera_model=camera_model,
        single_camera=not camera_per_image,
        threads=threads,
        seed=seed,
        verbose=verbose,
        quiet=quiet,
    )
    options = PreprocessOptions(fps=fps, downscale=downscale, blur_ratio=blur_ratio, sfm=sfm)
    summary = preprocess(out, images=images, video=video, options=options)
    result = summary["sfm"]
    if "frames" in summary:
        frames = summary["frames"]
        print(
            f"frames:     {frames['sampled']} sampled at {fps:g} fps from {frames['source_frames']} video frames "
            f"({frames['source_fps']:.3g} fps), {len(frames['rejected'])} blurry ones dropped"
        )
    print(f"registered: {result['registered']} of {result['images']} images ({result['matcher']} matching, {result['mapper']} mapping)")
    print(f"reprojection error: {result['mean_reprojection_error_px']:.3f} px (mean), {result['points']} points")
    print(f"scene:      {out}  (try: n3f inspect --scene {out})")


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


TeacherOpt = Annotated[
    str,
    typer.Option(
        "--teacher",
        "-t",
        help="Teacher name (see `n3f teachers`). Default: DINO ViT-B/8 or ViT-S/8 when their weights are on this machine, else the offline effnet_lite0.",
    ),
]


@app.command("features")
def features_command(
    scene: SceneOpt,
    teacher: TeacherOpt = "",
    teacher_weights: Annotated[
        Path | None, typer.Option("--teacher-weights", help="Weights file: an official DINO/DINOv2 .pth or a timm .pth/.safetensors.")
    ] = None,
    stride: Annotated[
        int,
        typer.Option("--stride", help="ViT patch-embedding stride (< patch size: overlapping patches, denser features). 0 = patch size."),
    ] = 0,
    layer: Annotated[int, typer.Option("--layer", help="ViT block to read (negative counts from the end).")] = -1,
    facet: Annotated[str, typer.Option("--facet", help="ViT facet: token, key, query or value.")] = "token",
    input_scale: Annotated[float, typer.Option("--input-scale", help="Resize images by this factor before the teacher.")] = 1.0,
    pca: Annotated[int, typer.Option("--pca", help="PCA dimensions fitted over the scene (0 keeps all channels).")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per teacher batch.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    half: Annotated[bool, typer.Option("--half", help="fp16 teacher on CUDA.")] = False,
    preview: Annotated[bool, typer.Option("--preview", help="Write PCA-to-RGB pictures into the cache's preview/ folder.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Cache root (default $N3F_DATA/cache/features).")] = None,
    shard: Annotated[
        str,
        typer.Option(
            "--shard",
            help="i/n: extract only the i-th of n contiguous frame ranges (0-based) into the shared cache; run once more "
            "without --shard to check completeness and fit the PCA. Under torchrun each rank takes its shard and rank 0 gathers.",
        ),
    ] = "",
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Run a 2D teacher over every frame and cache its features (fp16 memory map + scene PCA).

    A valid cache is reused; any change (teacher, options, weights, images) makes a new one; an
    interrupted run resumes from the frames already done.

    \b
    Examples:
      n3f features --scene demo/tabletop --preview
      n3f features --scene llff/fern --teacher dino_vits8 --teacher-weights dino_deitsmall8_pretrain.pth --stride 4
      n3f features --scene demo/tabletop --shard 0/2 ; n3f features --scene demo/tabletop --shard 1/2 ; n3f features --scene demo/tabletop
      torchrun --nproc-per-node 2 -m n3f features --scene demo/tabletop
    """
    import time

    from n3f.pipeline import distributed
    from n3f.pipeline.features import compute_features
    from n3f.progress import make_progress
    from n3f.scene.catalog import load_scene

    parts = shard.split("/") if shard else []
    if shard and (len(parts) != 2 or not all(p.isdigit() for p in parts)):
        from n3f.errors import N3FError

        raise N3FError(f"--shard takes i/n, e.g. 0/4 (got {shard!r})")
    ctx, dev = distributed.init_from_env(_device(device))
    if ctx.active and not shard:
        parts = [str(ctx.rank), str(ctx.world_size)]
    track = make_progress(quiet or not ctx.is_main)
    with distributed.main_first(ctx):  # a demo scene renders itself once, on rank 0
        loaded = load_scene(scene, seed=seed or None, progress=track)
    options = {"device": dev, "batch_size": batch_size, "half": half, "input_scale": input_scale, "weights": teacher_weights}
    if (teacher or "").startswith("dino"):
        options.update(stride=stride or None, layer=layer, facet=facet)
    elif stride or layer != -1 or facet != "token":
        from n3f.errors import N3FError

        raise N3FError("--stride, --layer and --facet apply to the DINO/DINOv2 ViT teachers only; name one with --teacher")
    started = time.perf_counter()
    common = dict(pca=pca, root=output, preview=preview, seed=seed, progress=track)
    if parts:
        compute_features(loaded, teacher or None, options, shard=(int(parts[0]), int(parts[1])), **common)
        distributed.barrier(ctx)
        if not ctx.is_main or not ctx.active:
            then = "rank 0 gathers the shards" if ctx.active else "run without --shard once every shard is done"
            print(f"shard {parts[0]}/{parts[1]} done in {time.perf_counter() - started:.1f} s; {then}")
            return
    cache = compute_features(loaded, teacher or None, options, **common)
    n, h, w, d = cache.shape
    print(f"teacher:  {cache.teacher}")
    print(f"features: {n} frames x {h}x{w} cells x {d} dims (fp16) in {cache.folder}")
    if cache.meta.get("explained_variance") is not None:
        print(f"PCA:      {d} of {cache.meta['raw_dim']} dims keep {100 * cache.meta['explained_variance']:.1f}% of the variance")
    print(f"time:     {time.perf_counter() - started:.1f} s")
    if preview:
        print(f"preview:  {cache.folder / 'preview' / 'sheet.png'}")


@app.command("teachers")
def teachers_command(quiet: QuietOpt = False, seed: SeedOpt = 0) -> None:
    """List the available teachers and which one is the default on this machine.

    Example: n3f teachers
    """
    import teachers
    from n3f.pipeline.features import default_teacher

    chosen = default_teacher()
    for name in teachers.available():
        print(f"{'*' if name == chosen else ' '} {name}")
    print("* = default here (DINO needs its weights: `n3f features --teacher dino_vits8` says where to get them)")


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (to hand the rest to torchrun's ranks)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


@app.command("fit")
def fit_command(
    scene: Annotated[str, typer.Option("--scene", "-s", help="Catalog name, alias or scene folder (see `n3f scenes`).")] = "demo/tabletop",
    teacher: TeacherOpt = "",
    teacher_weights: Annotated[
        Path | None, typer.Option("--teacher-weights", help="Teacher weights file (DINO/DINOv2 .pth, timm .pth/.safetensors).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Optimisation steps (0: 2400 on CPU, 20000 on CUDA).")] = 0,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-2,
    feature_weight: Annotated[
        float, typer.Option("--feature-weight", help="Weight of the feature loss (teacher features scaled to unit RMS).")
    ] = 0.04,
    feature_grad_to_geometry: Annotated[
        bool,
        typer.Option(
            "--feature-grad-to-geometry", help="Let the feature loss reach the densities (off: rendering weights detached for features)."
        ),
    ] = False,
    feature_whitening: Annotated[
        float,
        typer.Option(
            "--feature-whitening",
            help="Feature-loss weight of each teacher channel: variance^-w. 1 makes the student learn the low-variance "
            "PCA channels that tell objects apart; 0 is plain MSE.",
        ),
    ] = 1.0,
    samples: Annotated[
        int, typer.Option("--samples", help="Samples per step; the ray batch adapts to it (0: 32768 on CPU, 65536 on CUDA).")
    ] = 0,
    grid: Annotated[str, typer.Option("--grid", help="Hash-grid size: cpu (12 levels, 2^17 rows) or ngp (16 levels, 2^19).")] = "",
    march_steps: Annotated[
        int,
        typer.Option(
            "--march-steps",
            help="Samples across the scene box's diagonal (the marching step). 0: 256 on CPU, where a coarser step buys "
            "more rays per step, and 512 on CUDA.",
        ),
    ] = 0,
    aabb_margin: Annotated[
        float,
        typer.Option(
            "--aabb-margin",
            help="Grow the scene box by this share of its half-size on every side, so walls and floors lying on the "
            "box get room for their surface inside it (box scenes; LLFF's NDC ignores it).",
        ),
    ] = 0.1,
    eval_every: Annotated[
        int | None,
        typer.Option(
            "--eval-every",
            help="Steps between held-out evaluations (0: at the end only). Default: 1000 on CUDA; on a CPU the end only "
            "(a mid-run evaluation costs a CPU fit 6-15 s; the progress bar shows the training PSNR meanwhile).",
        ),
    ] = None,
    pca: Annotated[int, typer.Option("--pca", help="PCA dimensions of the teacher features.")] = 64,
    mlp_precision: Annotated[
        str,
        typer.Option(
            "--mlp-precision",
            help="Number format of the student's MLP products: fp32, bf16, or auto (fp32). bf16 makes steps about 1.8x faster "
            "on a CPU with bfloat16 kernels, but its results vary between CPUs by several dB (README).",
        ),
    ] = "auto",
    error_sampling: Annotated[
        float,
        typer.Option(
            "--error-sampling",
            help="Share of each step's rays drawn where the colour error is high (instant-ngp's error map over 8-pixel "
            "tiles); the rest stay uniform. 0 draws every ray uniformly.",
        ),
    ] = 0.0,
    motion_after: Annotated[
        int,
        typer.Option(
            "--motion-after",
            help="Three-stream fits: after this many steps, find the moving pixels of the training frames (colour "
            "consistency with neighbouring frames through the static field's depth; again every 500 steps), draw a "
            "quarter of the rays there and keep the static field from learning them. 0: off.",
        ),
    ] = 0,
    background: Annotated[
        str,
        typer.Option(
            "--background",
            help="What training rays are composited over: random (a random colour per ray, so only opaque surfaces "
            "match the pixels and fog cannot stand in for walls) or black. Renders always use black.",
        ),
    ] = "random",
    feature_rendering: Annotated[
        str,
        typer.Option(
            "--feature-rendering",
            help="How rendered features are made: ray (composite the geometry codes, run the feature head once per ray; "
            "about 15% faster on a CPU), sample (N3F: the feature head on every sample, features composited) or auto "
            "(ray for static fits, sample with transient streams).",
        ),
    ] = "auto",
    contraction: Annotated[
        str,
        typer.Option(
            "--contraction",
            help="Space of a scene that is not forward-facing: none (its box; what lies beyond is painted on the box's "
            "walls), sphere (the box plus the whole world beyond it, contracted into a shell: for captures with a far "
            "background) or auto (what the scene says: sphere for EPIC-KITCHENS).",
        ),
    ] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda.")] = "auto",
    dynamic: Annotated[
        bool | None,
        typer.Option(
            "--dynamic/--static",
            help="Add NeuralDiff's transient streams (moving objects; hands attached to the camera) beside the static field, "
            "for egocentric video. Default: the scene recipe's choice (on for EPIC-KITCHENS and demo/kitchen_dynamic).",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Root of run folders.")] = Path("runs"),
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue this run folder from its last checkpoint (other options come from its config.toml)."),
    ] = None,
    devices: Annotated[
        int,
        typer.Option(
            "--devices",
            help="Train in this many processes on this machine (torchrun; one per GPU, or CPU processes over gloo). "
            "Each takes a slice of every ray batch; gradients are averaged, so the result matches one process.",
        ),
    ] = 1,
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Fit a feature field to a scene: the student renders colour and distilled teacher features.

    Computes the teacher features first when they are not cached. Writes
    <output>/<scene>/<teacher>/<time>/ with config.toml, checkpoints/, metrics.jsonl (eval/psnr...)
    and renders/ of held-out frames (ground truth | RGB | depth | features).

    \b
    Examples:
      n3f fit --scene demo/tabletop
      n3f fit --scene llff/fern --steps 4000 --eval-every 2000
      n3f fit --scene demo/kitchen_dynamic            (transient streams on: the recipe says dynamic)
      n3f fit --scene demo/tabletop_unbounded         (walls beyond the box: contracted, the recipe says sphere)
      n3f fit --resume runs/demo_tabletop/effnet_lite0/20261122-101500
      n3f fit --scene demo/tabletop --devices 2         (2 processes; same as torchrun --nproc-per-node 2 -m n3f fit ...)
    """
    import os

    from n3f.pipeline.fit import BACKGROUNDS, CONTRACTION_CHOICES, FEATURE_RENDERING_CHOICES, FitConfig, fit

    if devices != 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from n3f.pipeline.distributed import launch

        raise typer.Exit(launch(devices, _without_option(sys.argv[1:], "--devices")))

    dev = _device(device)
    from n3f.student.field import MLP_PRECISIONS

    if mlp_precision not in MLP_PRECISIONS:
        raise N3FError(f"--mlp-precision takes {', '.join(MLP_PRECISIONS)} (got {mlp_precision!r})")
    if background not in BACKGROUNDS:
        raise N3FError(f"--background takes {' or '.join(BACKGROUNDS)} (got {background!r})")
    if feature_rendering not in FEATURE_RENDERING_CHOICES:
        raise N3FError(f"--feature-rendering takes {', '.join(FEATURE_RENDERING_CHOICES)} (got {feature_rendering!r})")
    if contraction not in CONTRACTION_CHOICES:
        raise N3FError(f"--contraction takes {', '.join(CONTRACTION_CHOICES)} (got {contraction!r})")
    cuda = dev.startswith("cuda")  # the defaults left at 0 or "" are sized for the device
    config = FitConfig(
        scene=scene,
        teacher=teacher,
        teacher_options={"weights": str(teacher_weights)} if teacher_weights else {},
        pca=pca,
        steps=steps or (20000 if cuda else 2400),
        target_samples=samples or (1 << 16 if cuda else 1 << 15),
        lr=lr,
        feature_weight=feature_weight,
        feature_grad_to_geometry=feature_grad_to_geometry,
        feature_whitening=feature_whitening,
        eval_every=(1000 if cuda else 0) if eval_every is None else eval_every,
        device=dev,
        seed=seed,
        grid_preset=grid or ("ngp" if cuda else "cpu"),
        march_steps=march_steps or (512 if cuda else 256),
        mlp_precision=mlp_precision,
        dynamic=dynamic,
        error_sampling=error_sampling,
        motion_after=motion_after,
        background=background,
        aabb_margin=aabb_margin,
        feature_rendering=feature_rendering,
        contraction=contraction,
    )
    check_writable(resume or output)
    run = fit(config, output=output, resume=resume, quiet=quiet)
    from n3f.pipeline.distributed import context

    if not context().is_main:
        return
    import json as _json

    rows = [_json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "eval/psnr" in r][-1]
    print(f"run:     {run}")
    print(
        f"held-out PSNR {final['eval/psnr']:.2f} dB, SSIM {final['eval/ssim']:.3f}, feature cosine to teacher {final['eval/feature_cosine']:.3f} ({final['eval/frames']} frames, step {final['step']})"
    )


@app.command("render")
def render_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="A run folder written by `n3f fit`.")],
    frames: Annotated[
        str, typer.Option("--frames", help="Frames to render: indices or file names separated by commas, or test, train, all.")
    ] = "test",
    path: Annotated[str, typer.Option("--path", help="Render novel cameras instead: orbit (circle around what the cameras look at).")] = "",
    n_frames: Annotated[int, typer.Option("--n-frames", help="Cameras on the --path.")] = 60,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (default: RUN/renders/render-<time>).")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Edit: remove the object queried with --frame and --point/--box.")] = False,
    recolour: Annotated[str, typer.Option("--recolour", help="Edit: paint the queried object this colour (R,G,B or #rrggbb).")] = "",
    frame: Annotated[str, typer.Option("--frame", "-f", help="Query frame of an edit (index or file name).")] = "",
    box: BoxOpt = "",
    point: PointOpt = "",
    size: SizeOpt = 16,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Similarity above which samples are edited, inside the segmented object's box (default: the segment's cut, as in export).",
        ),
    ] = None,
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Render RGB, depth and features (PCA as RGB) of a fitted run for dataset or novel cameras,
    optionally with a queried object removed or recoloured.

    Each frame gives one PNG: RGB | depth | features; --path also writes an MP4.

    \b
    Examples:
      n3f render --run runs/demo_tabletop/effnet_lite0/20261122-101500
      n3f render --run RUN --frames 0,5,0017.png
      n3f render --run RUN --path orbit --n-frames 90
      n3f render --run RUN --remove --frame 0 --point 120,96
      n3f render --run RUN --recolour 255,0,255 --frame 0 --point 120,96
    """
    import time as _time

    import cv2
    import numpy as np

    from n3f.errors import N3FError
    from n3f.io import atomic_write_bytes, safe_name
    from n3f.pipeline.fit import load_run, orbit_path
    from n3f.pipeline.visualise import depth_to_rgb, features_to_rgb, pca_basis
    from n3f.progress import make_progress

    if remove and recolour:
        raise N3FError("choose one edit: --remove or --recolour")
    if (remove or recolour) and not frame:
        raise N3FError("an edit needs the object's query: --frame F with --point x,y or --box x0,y0,x1,y1")
    trainer = load_run(run, quiet=quiet)
    scene = trainer.scene
    field = None
    if remove or recolour:
        field = _edited_field(trainer, frame, box, point, size, threshold, "remove" if remove else "recolour", recolour, quiet)
    if path:
        if path != "orbit":
            raise N3FError(f"unknown --path {path!r}; use orbit")
        cams = orbit_path(scene, n_frames)
    elif frames in ("test", "train", "all"):
        ids = range(len(scene)) if frames == "all" else scene.split_indices(frames)
        cams = [scene.frames[i] for i in ids]
    else:
        cams = [scene.frames[scene.frame_index(k.strip())] for k in frames.split(",") if k.strip()]
    if not cams:
        raise N3FError(f"no frames selected by --frames {frames!r}")
    out_dir = output or Path(run) / "renders" / f"render-{_time.strftime('%Y%m%d-%H%M%S')}"
    if out_dir.exists() and any(out_dir.iterdir()):
        raise N3FError(f"{out_dir} already holds files; n3f never overwrites results")
    check_writable(out_dir)
    basis = None
    panels = []
    for cam in make_progress(quiet)(cams, "rendering", len(cams)):
        r = trainer.render_frame(cam, field=field)
        feats = r["feature"].numpy()
        if basis is None:  # one colouring for every frame
            basis = pca_basis(feats)
        rgb = (r["rgb"].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        panel = np.concatenate([rgb, depth_to_rgb(r["depth"].numpy()), features_to_rgb(feats, basis)], axis=1)
        atomic_write_bytes(out_dir / f"{safe_name(cam.image_path.stem)}.png", cv2.imencode(".png", panel[:, :, ::-1])[1].tobytes())
        panels.append(panel)
    if path:
        h, w = panels[0].shape[:2]
        tmp = out_dir / ".orbit.partial.mp4"  # the writer picks the container from the suffix
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
        for p in panels:
            writer.write(p[:, :, ::-1])
        writer.release()
        if tmp.is_file() and tmp.stat().st_size > 0:
            tmp.replace(out_dir / "orbit.mp4")
    print(f"rendered {len(cams)} frames (RGB | depth | features) into {out_dir}")


RunOpt = Annotated[Path, typer.Option("--run", "-r", help="A run folder written by `n3f fit`.")]
FrameOpt = Annotated[str, typer.Option("--frame", "-f", help="Query frame: its index (as `n3f inspect` lists them) or its file name.")]
BoxOpt = Annotated[str, typer.Option("--box", help="Query patch x0,y0,x1,y1 in pixels (x1, y1 exclusive).")]
PointOpt = Annotated[str, typer.Option("--point", help="Query point x,y in pixels; the patch is --size pixels around it.")]
SizeOpt = Annotated[int, typer.Option("--size", help="Side of the patch around --point, in pixels.")]
StrideOpt = Annotated[int, typer.Option("--map-stride", help="Student maps are rendered at 1/stride resolution (cached in RUN/maps).")]
CompositeOpt = Annotated[
    str,
    typer.Option(
        "--composite",
        help="Student features and depth from the samples at each ray's most visible surface (surface, robust to the "
        "fog of short fits) or volume-rendered over the whole ray as in N3F (volume).",
    ),
]
StreamsOpt = Annotated[
    str,
    typer.Option(
        "--streams",
        help="Runs fitted with --dynamic: search and export the static scene only (static: moving objects and hands "
        "leave no ghosts) or every stream with each frame's own moving parts (all).",
    ),
]


def _patch(scene, frame: str, box: str, point: str, size: int):
    from n3f.pipeline.query import Patch, parse_box, parse_point, point_box

    if bool(box) == bool(point):
        raise N3FError("give exactly one of --box x0,y0,x1,y1 or --point x,y")
    i = scene.frame_index(frame)
    f = scene.frames[i]
    if box:
        return Patch(i, parse_box(box, f.width, f.height))
    x, y = parse_point(point)
    return Patch(i, point_box(x, y, size, f.width, f.height))


@app.command("query")
def query_command(
    run: RunOpt,
    frame: FrameOpt,
    box: BoxOpt = "",
    point: PointOpt = "",
    size: SizeOpt = 32,
    source: Annotated[str, typer.Option("--source", help="Features to query with: student (the fitted field) or teacher.")] = "student",
    frames: Annotated[str, typer.Option("--frames", help="Frames searched: all, train or test.")] = "all",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Results folder (default: RUN/queries/<time>-f<frame>-<source>).")
    ] = None,
    save_similarity: Annotated[
        bool, typer.Option("--save-similarity", help="Also write similarity.npz (float16 per frame, keyed by file name).")
    ] = False,
    best: Annotated[int, typer.Option("--best", help="Frames on the contact sheet.")] = 12,
    map_stride: StrideOpt = 4,
    composite: CompositeOpt = "surface",
    streams: StreamsOpt = "static",
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Click-to-query: find what a patch of one frame shows in every frame and in 3D.

    The query is the mean feature over the patch; every pixel of every searched frame gets its
    cosine similarity. Writes heatmaps/ (one overlay per frame), contact_sheet.png (the best frames),
    ranking.json (frames by score = 99th percentile of similarity) and points.ply (the scene's point
    cloud with a `similarity` attribute; student source only).

    \b
    Examples:
      n3f query --run RUN --frame 0 --point 120,96
      n3f query --run RUN --frame 0017.png --box 100,80,140,120 --source teacher
    """
    import time as _time

    from n3f.pipeline.query import SOURCES, QueryEngine, select_frames
    from n3f.pipeline.query_report import run_query
    from n3f.progress import make_progress

    if source not in SOURCES:
        raise N3FError(f"unknown --source {source!r}; use student or teacher")
    trainer, maps = _run_with_maps(run, map_stride, quiet, composite, streams)
    patch = _patch(trainer.scene, frame, box, point, size)
    ids = select_frames(trainer.scene, frames)
    out = output or Path(run) / "queries" / f"{_time.strftime('%Y%m%d-%H%M%S')}-f{patch.frame}-{source}"
    check_writable(out)
    points = _points_or_warning(trainer, maps) if source == "student" else None
    doc = run_query(QueryEngine(trainer, maps), patch, source, ids, out, save_similarity, best, points, progress=make_progress(quiet))
    top = ", ".join(f"#{r['frame']} ({r['score']:.2f})" for r in doc["ranking"][:5])
    print(
        f"best frames: {top}\nresults in {out} (contact_sheet.png, heatmaps/, ranking.json{', points.ply' if points is not None else ''})"
    )


@app.command("evaluate")
def evaluate_command(
    run: RunOpt,
    refs: Annotated[int, typer.Option("--refs", help="Reference frames per object.")] = 3,
    patch: Annotated[int, typer.Option("--patch", help="Side of each reference query patch, in pixels.")] = 8,
    map_stride: StrideOpt = 4,
    composite: CompositeOpt = "surface",
    streams: StreamsOpt = "static",
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Score a run on a scene with object masks: retrieval mAP (teacher beside student), held-out
    PSNR and 3D segmentation IoU. Writes RUN/metrics.json and RUN/evaluation.md.

    \b
    Example:
      n3f evaluate --run runs/demo_tabletop/effnet_lite0/20261122-101500
    """
    from n3f.pipeline.evaluate import evaluate_run, markdown_table, write_evaluation
    from n3f.progress import make_progress

    check_writable(Path(run) / "evaluations")
    trainer, maps = _run_with_maps(run, map_stride, quiet, composite, streams)
    result = evaluate_run(trainer, maps, refs, patch, progress=make_progress(quiet))
    path = write_evaluation(run, result)
    print(markdown_table(result))
    print(f"written {path}")


@app.command("export")
def export_command(
    run: RunOpt,
    out: Annotated[Path, typer.Option("--out", help="PLY file to write (with --clusters: a folder of PLYs).")],
    frame: Annotated[str, typer.Option("--frame", "-f", help="Query frame (index or file name); omit to export the whole scene.")] = "",
    box: BoxOpt = "",
    point: PointOpt = "",
    size: SizeOpt = 32,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Similarity threshold of the segment (default: the upper of three multi-Otsu classes of -log(1 - similarity)).",
        ),
    ] = None,
    clusters: Annotated[int, typer.Option("--clusters", help="Export every object found by k-means on the features as its own PLY.")] = 0,
    voxel: Annotated[float, typer.Option("--voxel", help="Voxel size in normalised scene units (the scene box spans about 2).")] = 0.01,
    map_stride: StrideOpt = 4,
    composite: CompositeOpt = "surface",
    streams: StreamsOpt = "static",
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Export the scene's point cloud, a queried object's segment, or one PLY per feature cluster.

    Points: rendered depth of the training views where the field is opaque, kept where other views
    agree, voxel-downsampled (Open3D). Attributes: colour, feature_0..2 (feature PCA), similarity.
    Coordinates are the scene's original ones (those of its COLMAP/dataset poses).

    \b
    Examples:
      n3f export --run RUN --out scene.ply
      n3f export --run RUN --frame 0 --point 120,96 --out mug.ply
      n3f export --run RUN --clusters 8 --out clusters/
    """
    from n3f.pipeline.pointcloud import feature_clusters, scene_points, segment, write_ply
    from n3f.pipeline.query import QueryEngine
    from n3f.pipeline.query_report import point_similarity, points_pca_basis

    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise N3FError(f"{out} already exists; n3f never overwrites results")
    check_writable(out if clusters else out.parent)
    trainer, maps = _run_with_maps(run, map_stride, quiet, composite, streams)
    points = scene_points(trainer.scene, maps, voxel=voxel)
    basis = points_pca_basis(points.features)
    if clusters:
        labels = feature_clusters(points, clusters, seed)
        for k in range(clusters):
            write_ply(out / f"cluster-{k:02d}.ply", trainer.scene, points.subset(labels == k), pca_basis=basis)
        print(f"wrote {clusters} clusters ({len(points)} points) into {out}")
        return
    if not frame:
        if box or point:
            raise N3FError("--box/--point need --frame")
        write_ply(out, trainer.scene, points, pca_basis=basis)
        print(f"wrote {len(points)} points to {out}")
        return
    patch = _patch(trainer.scene, frame, box, point, size)
    engine = QueryEngine(trainer, maps)
    sim = point_similarity(points, engine.vector(patch, "student"))
    chosen, thr = segment(points, sim, threshold, anchor=engine.anchor(patch))
    if not chosen.any():
        raise N3FError(f"no point has similarity above {thr:.3f}; lower --threshold")
    write_ply(out, trainer.scene, points.subset(chosen), {"similarity": sim[chosen]}, pca_basis=basis)
    print(f"wrote {int(chosen.sum())} of {len(points)} points (similarity > {thr:.3f}, the cluster at the clicked point) to {out}")


@app.command("serve")
def serve_command(
    run: RunOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 picks a free one).")] = 8765,
    map_stride: StrideOpt = 4,
    composite: CompositeOpt = "surface",
    streams: StreamsOpt = "static",
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Open the click-to-query page for a run: click or drag on a frame, see the best frames as heat
    maps, download the object's points as a PLY. Stop with Ctrl-C.

    \b
    Example:
      n3f serve --run runs/demo_tabletop/effnet_lite0/20261122-101500   (then open http://127.0.0.1:8765)
    """
    from n3f.serve.server import QueryService, make_server

    trainer, maps = _run_with_maps(run, map_stride, quiet, composite, streams)
    server = make_server(QueryService(trainer, maps, _points_or_warning(trainer, maps)), host, port)
    h, p = server.server_address[:2]
    print(f"n3f serve: http://{h}:{p}/  ({trainer.scene.name}, {len(trainer.scene.frames)} frames); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _edited_field(trainer, frame: str, box: str, point: str, size: int, threshold, mode: str, colour: str, quiet: bool):
    from n3f.pipeline.edit import parse_colour, query_edit
    from n3f.pipeline.maps import student_maps
    from n3f.progress import make_progress

    rgb = parse_colour(colour) if mode == "recolour" else (1.0, 0.0, 1.0)
    patch = _patch(trainer.scene, frame, box, point, size)
    field = query_edit(trainer, student_maps(trainer, 4, progress=make_progress(quiet)), patch, mode, rgb, threshold)
    print(f"{mode}: samples with similarity > {field.threshold:.3f} to the patch {patch.box} of frame #{patch.frame}")
    return field


def _run_with_maps(run: Path, map_stride: int, quiet: bool, composite: str = "surface", streams: str = "static"):
    """Load a run and its rendered maps (rendering them on first use): (trainer, maps)."""
    from n3f.pipeline.fit import load_run
    from n3f.pipeline.maps import student_maps
    from n3f.progress import make_progress

    trainer = load_run(run, quiet=quiet)
    return trainer, student_maps(trainer, map_stride, progress=make_progress(quiet), composite=composite, streams=streams)


def _points_or_warning(trainer, maps):
    """The scene's point cloud, or None with a warning when the field has no usable surface."""
    from n3f.pipeline.pointcloud import scene_points

    try:
        return scene_points(trainer.scene, maps)
    except N3FError as exc:  # 2D results are still worth having
        print(f"n3f: warning: no point cloud: {exc}", file=sys.stderr)
        return None


from n3f.correspond.cli import app as _correspond_app  # noqa: E402

app.add_typer(_correspond_app, name="correspond")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run the app, turning N3FError into exit code 2.

    Usage errors (a missing or malformed option) are reported by the CLI library, also with code 2.
    """
    try:
        app(args=argv)
    except N3FError as exc:
        print(f"n3f: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        from teachers import TeacherError

        if isinstance(exc, TeacherError):
            print(f"n3f: error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise
