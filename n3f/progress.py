"""Progress bars (rich, on stderr) that every long step uses; ``quiet`` turns them off."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def make_progress(quiet: bool = False) -> Callable:
    """Return ``track(iterable, description, total)`` that shows a rich progress bar on stderr.

    With ``quiet`` the iterable is returned unchanged.
    """

    def track(iterable: Iterable, description: str, total: int | None = None):
        if quiet:
            return iterable
        from rich.console import Console
        from rich.progress import track as rich_track

        return rich_track(iterable, description=description, total=total, console=Console(stderr=True), transient=False)

    return track
