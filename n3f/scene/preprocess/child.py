"""Run one preprocessing stage in a child Python process and carry its result or error back.

OpenCV (video decoding, resizing) and pycolmap (structure from motion) are never used in the same
process: with pycolmap 4.2.1 and OpenCV 5 one such process aborted with "double free or
corruption". Each stage therefore runs as ``python -m n3f.scene.preprocess.<stage> REQUEST RESULT``:
the request and the result are JSON files, the child's progress bars go to the inherited stderr,
and an :class:`~n3f.errors.N3FError` raised in the child is raised again here with its class and
message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import n3f.errors
from n3f.errors import N3FError, PreprocessError


def run_child(module: str, request: dict, what: str) -> dict:
    """Run ``python -m module`` on ``request`` and return the dict it produced.

    Args:
        module: a module whose ``__main__`` block calls :func:`child_main`.
        request: JSON-serialisable input of the stage.
        what: the stage in words, for the error message when the child dies.

    Raises:
        N3FError: the child raised one (same class and message), or it exited without a result.
    """
    package_root = Path(n3f.__file__).resolve().parents[1]  # the child must run this very n3f
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(package_root), *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="n3f-stage-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", module, str(request_path), str(result_path)], env=env, check=False, preexec_fn=_die_with(os.getpid())
        )
        if not result_path.is_file():
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with status {proc.returncode}"
            raise PreprocessError(
                f"the {what} process {how} without a result (its messages, if any, are above). "
                "Run again with --verbose to see the full log, and report it if it persists."
            )
        doc = json.loads(result_path.read_text(encoding="utf-8"))
    if "error" in doc:
        cls = getattr(n3f.errors, doc["error"], None)
        if not (isinstance(cls, type) and issubclass(cls, N3FError)):
            cls = N3FError
        raise cls(doc["message"])
    return doc["result"]


def _die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux kill the child when ``parent`` dies, even by SIGKILL, so a
    killed ``n3f preprocess`` leaves no structure from motion running on; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def child_main(handler: Callable[[dict], dict]) -> None:
    """Entry point of a stage's child process: ``handler(request) -> result``, both JSON dicts.

    Reads ``sys.argv[1]`` (request) and writes ``sys.argv[2]`` (``{"result": ...}`` or
    ``{"error": class name, "message": ...}``). Other exceptions propagate (traceback on stderr).
    """
    request_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    request = json.loads(request_path.read_text(encoding="utf-8"))
    try:
        doc = {"result": handler(request)}
    except N3FError as exc:
        doc = {"error": type(exc).__name__, "message": str(exc)}
    result_path.write_text(json.dumps(doc), encoding="utf-8")
    if "error" in doc:
        sys.exit(2)
