"""Atomic file and folder writes: a result either exists whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from n3f.errors import N3FError


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``final`` and rename it into place on success.

    Raises:
        N3FError: ``final`` already exists (results are never overwritten), another process
            created it while the block ran, or it cannot be created.
    On any exception inside the block the temporary folder is removed and ``final`` is untouched.
    A process killed inside the block (SIGKILL, power loss) leaves its temporary folder behind; it
    is named after the host and process, and the next call for the same ``final`` on this host
    removes it once that process is gone.
    """
    final = Path(final)
    if final.exists():
        raise N3FError(f"{final} already exists; n3f never overwrites results. Choose another --output or remove it.")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{_HOST}-{os.getpid()}-", dir=final.parent))
    except OSError as exc:
        raise N3FError(f"cannot create {final}: {exc}{_hint(exc)}") from exc
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and final.exists():
                raise N3FError(f"{final} was created by another process while this one built it; n3f never overwrites results.") from exc
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_HOST = socket.gethostname().replace("/", "_")


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove the temporary folders that killed processes of this host left for ``final``.

    Returns:
        The folders removed. Folders of live processes and of other hosts are kept.
    """
    removed = []
    for partial in Path(final).parent.glob(f".{Path(final).name}.partial-{_HOST}-*"):
        pid = partial.name[len(f".{Path(final).name}.partial-{_HOST}-") :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
        raise N3FError(f"cannot write {path}: {exc}{_hint(exc)}") from exc


def _hint(exc: OSError) -> str:
    """What to do about a failed write, from its errno ('' when there is nothing useful to say)."""
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return " (the folder cannot be written: choose another --output, or fix its permissions)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return " (the disk is full or over quota: free space and rerun; earlier results are intact)"
    return ""


def is_writable(folder: Path) -> bool:
    """Whether files can be created in ``folder``, or (if it does not exist yet) in its nearest existing parent."""
    probe = _nearest_existing(Path(folder))
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: Path) -> None:
    """Raise :class:`N3FError` now, before long work, if files cannot be created in ``folder``.

    ``folder`` need not exist: its nearest existing parent is checked (it will be created there).
    Catches read-only mounts and missing permissions; a full disk is only found when writing.
    """
    probe = _nearest_existing(Path(folder))
    if not probe.is_dir():
        raise N3FError(f"cannot write into {folder}: {probe} is not a folder")
    if not is_writable(probe):
        reason = "read-only file system" if _read_only_mount(probe) else "permission denied"
        raise N3FError(f"cannot write into {folder}: {probe} is not writable ({reason}); choose another --output, or fix its permissions")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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
