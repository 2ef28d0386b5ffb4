"""Atomic file and folder writes: a result either exists whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from n3f.errors import N3FError


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``final`` and rename it into place on success.

    Raises:
        N3FError: ``final`` already exists (results are never overwritten) or cannot be created.
    On any exception inside the block the temporary folder is removed and ``final`` is untouched.
    """
    final = Path(final)
    if final.exists():
        raise N3FError(f"{final} already exists; n3f never overwrites results. Choose another --output or remove it.")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    except OSError as exc:
        raise N3FError(f"cannot create {final}: {exc}") from exc
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (replacing any old file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(Exception):
            os.unlink(tmp)
        raise N3FError(f"cannot write {path}: {exc}") from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save_npy(path: Path, array) -> None:
    """Save a numpy array as ``.npy`` at ``path`` atomically."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_image(path: Path, image) -> None:
    """Save a PIL image (format from the suffix, e.g. PNG) at ``path`` atomically."""
    import io

    buf = io.BytesIO()
    image.save(buf, format=Path(path).suffix.lstrip(".").upper() or "PNG")
    atomic_write_bytes(path, buf.getvalue())


def safe_name(name: str) -> str:
    """A file-system-safe version of a scene or teacher name (``demo/tabletop`` -> ``demo_tabletop``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "scene"
