"""``n3f correspond``: fit a dual deformation field on a shape family and score its correspondences."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="correspond",
    help=(
        "Category-level dense correspondence: train a latent-conditioned deformation field that maps every "
        "instance of a generator's category to a shared template, then transfer keypoints, part labels and "
        "texture between instances.\n\n"
        "Start with: n3f correspond fit --family chairs, then n3f correspond eval --run <the printed folder>"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed of the training latents and the model's initialisation.")]


@app.command("fit")
def fit_command(
    family: Annotated[str, typer.Option("--family", "-f", help="Shape family (generator) to learn; built in: chairs.")] = "chairs",
    steps: Annotated[int, typer.Option("--steps", help="Optimisation steps, each on --batch fresh instances.")] = 1500,
    batch: Annotated[int, typer.Option("--batch", help="Fresh instances per step.")] = 4,
    points: Annotated[int, typer.Option("--points", help="Near-surface points per instance per step.")] = 256,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (cosine decay).")] = 2e-3,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0: torch's default).")] = 1,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Run folder to create (default runs/correspond/<family>/<time>); never overwritten."),
    ] = None,
    quiet: QuietOpt = False,
    seed: SeedOpt = 0,
) -> None:
    """Train a dual deformation field (instance <-> template) on endless fresh instances of a family.

    Writes the run folder with config.toml, checkpoints/ and metrics.jsonl (losses).

    \b
    Examples:
      n3f correspond fit --family chairs
      n3f correspond fit --family chairs --steps 300 --output runs/correspond/quick
    """
    from n3f.correspond.families import create_family
    from n3f.correspond.train import CorrespondConfig, fit_correspondence, new_run_dir

    create_family(family)  # unknown names fail before anything is written
    config = CorrespondConfig(family=family, steps=steps, batch=batch, points=points, lr=lr, seed=seed, threads=threads)
    run = fit_correspondence(config, output or new_run_dir(Path("runs/correspond"), family), quiet=quiet)
    print(f"run:     {run}")
    print(f"next:    n3f correspond eval --run {run}")


@app.command("eval")
def eval_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="A run folder written by `n3f correspond fit`.")],
    instances: Annotated[int, typer.Option("--instances", help="Held-out instances (keypoint pairs i -> i+1, label renders).")] = 8,
    views: Annotated[int, typer.Option("--views", help="Rendered views per instance for label-transfer mIoU.")] = 2,
    size: Annotated[int, typer.Option("--size", help="Side of the rendered label images, pixels.")] = 48,
    picture_size: Annotated[int, typer.Option("--picture-size", help="Side of each panel of the eval/*.png pictures (0: none).")] = 64,
    invert: Annotated[
        bool, typer.Option("--invert/--no-invert", help="Also score on latents recovered from 3 rendered views per instance.")
    ] = True,
    quiet: QuietOpt = False,
    seed: SeedOpt = 12345,
) -> None:
    """Score a run on held-out instances beside identity, raw-feature nearest neighbour and the exact oracle.

    Writes metrics.json, metrics.md and eval/{labels,coordinates,texture}.png into the run folder.

    \b
    Example:
      n3f correspond eval --run runs/correspond/chairs/20261122-101500
    """
    from n3f.correspond.evaluate import evaluate_run

    results = evaluate_run(
        run, n_instances=instances, n_views=views, size=size, seed=seed, picture_size=picture_size, invert=invert, quiet=quiet
    )
    for method, row in results.items():
        if method != "eval":
            print(
                f"{method:11s} PCK@0.05 {100 * row['pck@0.05']:5.1f}  PCK@0.1 {100 * row['pck@0.1']:5.1f}  "
                f"mIoU {100 * row['miou']:5.1f}  mIoU(masked) {100 * row['miou_masked']:5.1f}  cycle {row['cycle_error']:.4f}"
            )
    print(f"wrote:   {run / 'metrics.json'}, {run / 'metrics.md'}, {run / 'eval'}")
