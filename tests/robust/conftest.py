"""Fixtures of the robustness tests: a private mount namespace, to make real read-only folders and
real full disks without touching the machine's own mounts."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def unshare_mount() -> list[str]:
    """``["unshare", flags]`` that runs a command in a private mount namespace where it may mount
    (``-m`` as root, ``-rm`` in a user namespace otherwise); skips where neither is allowed."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not found: no private mount namespace for read-only or full folders")
    for flags in ("-m", "-rm"):
        probe = subprocess.run(["unshare", flags, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["unshare", flags]
    pytest.skip(f"this machine allows no private mount namespace (unshare -m / -rm: {probe.stderr.strip()[:200]})")
