"""A run folder's checkpoints: where the one of step N lives (``checkpoints/step-NNNNNNN.pt``) and
which ones a run has. Fits (:mod:`n3f.pipeline.fit`) and correspondence runs
(:mod:`n3f.correspond.train`) name them alike."""

from __future__ import annotations

from pathlib import Path

from n3f.errors import N3FError


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint file of a run's highest step, or None when it has none."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where a run keeps its checkpoint of ``step`` (zero-padded, so names sort by step)."""
    return Path(run_dir) / "checkpoints" / f"step-{step:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoint files, lowest step first (empty when it has none)."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*.pt"))


def checkpoint_at(run_dir: Path, step: int) -> Path:
    """The checkpoint a run saved at ``step``.

    Raises:
        N3FError: the run saved none at that step (the message lists the steps it has).
    """
    path = checkpoint_path(run_dir, step)
    if not path.is_file():
        have = [int(p.stem.split("-")[1]) for p in list_checkpoints(run_dir)]
        raise N3FError(f"run {run_dir} has no checkpoint at step {step}; it has steps {have or 'none'}")
    return path
