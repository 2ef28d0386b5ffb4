"""One progress line per preprocessing stage (rich, on stderr): spinner, bar when the work is countable, elapsed time."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


class StageProgress:
    """Shows each stage as a line that stays on screen once done; ``quiet`` shows nothing.

    Example:
        >>> stages = StageProgress(quiet=False)
        >>> with stages.stage("extracting features", total=96) as advance:
        ...     for batch in batches:
        ...         advance(len(batch))
        >>> stages.close()
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._progress = None

    def _ensure_started(self):
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(finished_text="[green]done[/]"),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
        return self._progress

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """Show ``description`` while the block runs; yields ``advance(n=1)`` for countable work."""
        if self.quiet:
            yield lambda n=1: None
            return
        progress = self._ensure_started()
        task = progress.add_task(description, total=total, count="")

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            done = int(progress.tasks[progress.task_ids.index(task)].completed)
            progress.update(task, count=f"{min(done, total)}/{total}" if total else "")

        try:
            yield advance
        except BaseException:
            progress.update(task, description=f"{description} [red](failed)[/]")
            raise
        else:
            progress.update(task, total=total or 1, completed=total or 1)
        finally:
            progress.stop_task(task)

    def close(self) -> None:
        """Stop the display (call once at the end, also after an error)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextlib.contextmanager
def silenced_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while the block runs (C++ libraries that print warnings).

    Python's own ``sys.stderr`` goes there too, so keep such blocks short.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
