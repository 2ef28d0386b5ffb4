"""Read-only output folders: every command that writes says so before any long work (exit 2, the
folder named, no traceback) and leaves the run untouched; a read-only run can still be queried
(its maps are cached under $XDG_CACHE_HOME instead).

The folder is made read-only for real: as root (which ignores permission bits) it is bind-mounted
read-only in a private mount namespace (``unshare -m``, or ``unshare -rm`` in a user namespace);
as another user its write permission is removed. Skips with a message where root may not mount.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_BIND_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


@pytest.fixture
def read_only(tmp_path, request):
    """``run(folder, *n3f_args)``: the n3f command with ``folder`` read-only."""
    restore = []

    def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "n3f", *args]
        if os.geteuid() == 0:  # root ignores permission bits: bind-mount the folder read-only
            command = [*request.getfixturevalue("unshare_mount"), "sh", "-c", _BIND_READ_ONLY, str(folder), *command]
        else:
            restore.append((folder, folder.stat().st_mode))
            folder.chmod(folder.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    yield run
    for folder, mode in restore:
        folder.chmod(mode)


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_copy(fitted_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run, ignore=shutil.ignore_patterns("maps", "queries", "evaluations"))
    return run


def test_a_read_only_run_is_still_queried(read_only, run_copy, tmp_path):
    before = _fingerprint(run_copy)
    out = tmp_path / "query"
    result = read_only(
        run_copy, "query", "--run", str(run_copy), "--frame", "1", "--point", "30,20", "--size", "8", "--output", str(out), "--quiet"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cannot be written; caching its maps in" in result.stderr
    assert (out / "ranking.json").is_file() and (out / "contact_sheet.png").is_file()
    assert any((tmp_path / "xdg" / "n3f" / "maps").rglob("meta.json"))
    assert _fingerprint(run_copy) == before


@pytest.mark.parametrize(
    "args",
    [
        ("query", "--run", "{run}", "--frame", "1", "--point", "30,20"),  # results default to RUN/queries/
        ("evaluate", "--run", "{run}"),
        ("fit", "--resume", "{run}", "--steps", "80"),
        ("export", "--run", "{run}", "--out", "{run}/scene.ply"),
        ("features", "--scene", "demo/tabletop", "--pca", "4", "--output", "{run}/cache"),
    ],
    ids=lambda a: a[0] + ("-default-output" if a[0] == "query" else ""),
)
def test_writing_into_a_read_only_folder_is_refused_and_loses_nothing(read_only, run_copy, args):
    before = _fingerprint(run_copy)
    result = read_only(run_copy, *(a.format(run=run_copy) for a in args), "--quiet")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "is not writable" in result.stderr and str(run_copy) in result.stderr, result.stderr[-2000:]
    assert _fingerprint(run_copy) == before
