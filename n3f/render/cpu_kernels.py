"""Fused CPU kernels, compiled once per machine with PyTorch's C++ extension loader.

The hash grid's pure-PyTorch form builds (N, L, 8) index and weight tensors and spends its time
in memory traffic; the fused kernel in ``csrc/hashgrid_cpu.cpp`` walks each sample's corners in
registers (OpenMP over samples). The same module holds the hash table's sparse Adam step and the
march through an occupancy grid. ``tools/setup.sh`` compiles it (about 40 s, needs a C++ compiler
and ninja), or else the first use does; later processes load the cached build in about a second.
When compilation is impossible, callers fall back to the pure-PyTorch forms and say so once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path

_LOCK = threading.Lock()
_MODULE = None
_FAILED: str | None = None


def hashgrid_module():
    """The compiled hash-grid module, or None when it cannot be built (reason in :func:`failure`)."""
    global _MODULE, _FAILED
    if _MODULE is not None or _FAILED is not None:
        return _MODULE
    with _LOCK:
        if _MODULE is None and _FAILED is None:
            try:
                # torch logs a CUDA_HOME notice when this module is imported; irrelevant on the CPU
                logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
                from torch.utils.cpp_extension import load

                # the ninja that pip installs lives beside this interpreter, which may not be on PATH
                bindir = str(Path(sys.executable).parent)
                if bindir not in os.environ.get("PATH", "").split(os.pathsep):
                    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
                source = Path(__file__).with_name("csrc") / "hashgrid_cpu.cpp"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _MODULE = load(
                        "n3f_hashgrid_cpu",
                        [str(source)],
                        extra_cflags=["-O3", "-fopenmp"],
                        extra_ldflags=["-fopenmp"],
                        build_directory=_build_directory(),
                        verbose=False,
                    )
            except Exception as exc:  # no compiler, no ninja, a build error
                _FAILED = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
                warnings.warn(
                    f"n3f: the fused CPU hash-grid kernel could not be built ({_FAILED}); using the slower pure-PyTorch encoding",
                    stacklevel=2,
                )
    return _MODULE


def _build_directory() -> str | None:
    """Where the build lives: inside this environment (``<venv>/n3f-kernels``) when it is writable,
    else PyTorch's shared cache (None). Two checkouts with their own environments would otherwise
    share one build folder and rebuild it, 40 s each time, whenever the other one last built it."""
    folder = Path(sys.prefix) / "n3f-kernels"
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        return None
    return str(folder) if os.access(folder, os.W_OK) else None


def failure() -> str | None:
    """Why the CPU kernel could not be built, or None."""
    return _FAILED
