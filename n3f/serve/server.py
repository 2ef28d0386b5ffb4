"""A small local HTTP server for click-to-query (standard library only, no front-end build).

Routes (all under one run):

- ``GET /`` the page; ``GET /api/info`` the run and its frames;
- ``GET /frames/<i>.png`` a frame as loaded;
- ``POST /api/query`` JSON ``{"frame": i, "box": [x0, y0, x1, y1]}`` or ``{"frame": i, "point": [x, y],
  "size": 32}`` (optional ``"source"``: student | teacher, ``"best"``) -> the ranking and the URLs of
  heat maps and of the segmented PLY;
- ``GET /api/heat/<query>/<i>.png`` and ``GET /api/export/<query>.ply``.

Bad requests answer 4xx with ``{"error": message}`` and the server keeps running. It binds
127.0.0.1 unless told otherwise and serves nothing but these routes.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import io
import json
import math
import re
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from n3f.errors import N3FError

MAX_BODY = 64 * 1024
KEEP_QUERIES = 16
STATIC = Path(__file__).with_name("static")


class RequestError(Exception):
    """A client error: HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class QueryService:
    """The state behind the page: a loaded run, its maps and point cloud, recent query results.

    Args:
        trainer: a loaded run; maps: its StudentMaps; points: its ScenePoints (or None).
    """

    def __init__(self, trainer, maps, points=None):
        from n3f.pipeline.query import QueryEngine

        self.trainer, self.scene, self.maps, self.points = trainer, trainer.scene, maps, points
        self.engine = QueryEngine(trainer, maps)
        self.lock = threading.Lock()  # torch and the engine's caches are used by one request at a time
        self.results: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.frame_png: dict[int, bytes] = {}
        self.counter = 0

    def info(self) -> dict:
        return {
            "run": str(self.trainer.run_dir),
            "scene": self.scene.name,
            "teacher": self.trainer.cache.teacher,
            "step": self.trainer.step,
            "frames": [
                {"index": i, "name": f.name, "split": f.split, "width": f.width, "height": f.height}
                for i, f in enumerate(self.scene.frames)
            ],
        }

    def frame_image(self, index: int) -> bytes:
        from n3f.scene.images import load_frame_image

        self._check_frame(index)
        if index not in self.frame_png:
            self.frame_png[index] = _png((load_frame_image(self.scene.frames[index]) * 255 + 0.5).astype(np.uint8))
        return self.frame_png[index]

    def _check_frame(self, index) -> int:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.scene.frames):
            raise RequestError(
                HTTPStatus.NOT_FOUND if isinstance(index, int) and not isinstance(index, bool) else HTTPStatus.BAD_REQUEST,
                f"frame {index!r} is out of range 0..{len(self.scene.frames) - 1}",
            )
        return index

    def query(self, body: dict) -> dict:
        from n3f.pipeline.query import SOURCES, Patch, check_box, frame_score, point_box

        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        frame = self._check_frame(body.get("frame"))
        f = self.scene.frames[frame]
        source = body.get("source", "student")
        if source not in SOURCES:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown source {source!r}; use student or teacher")
        best = body.get("best", 12)
        if not isinstance(best, int) or not 1 <= best <= len(self.scene.frames):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"best must be an integer in 1..{len(self.scene.frames)}")
        try:
            if "box" in body:
                box = body["box"]
                if not (isinstance(box, list) and len(box) == 4 and all(_finite_number(v) for v in box)):
                    raise RequestError(HTTPStatus.BAD_REQUEST, "box must be [x0, y0, x1, y1] in pixels")
                patch = Patch(frame, check_box(tuple(int(round(v)) for v in box), f.width, f.height))
            elif "point" in body:
                pt, size = body["point"], body.get("size", 32)
                if not (isinstance(pt, list) and len(pt) == 2 and all(_finite_number(v) for v in pt)) or not _finite_number(size, int):
                    raise RequestError(HTTPStatus.BAD_REQUEST, "point must be [x, y] in pixels and size an integer")
                patch = Patch(frame, point_box(float(pt[0]), float(pt[1]), size, f.width, f.height))
            else:
                raise RequestError(HTTPStatus.BAD_REQUEST, "give a box [x0, y0, x1, y1] or a point [x, y]")
        except N3FError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        with self.lock:
            vector = self.engine.vector(patch, source)
            frames = list(range(len(self.scene.frames)))
            sims = self.engine.similarity(vector, source, frames)
            self.counter += 1
            qid = f"q{self.counter}"
            from n3f.pipeline.query_report import colour_range

            self.results[qid] = {"patch": patch, "sims": sims, "vector": vector, "source": source, "range": colour_range(sims.values())}
            while len(self.results) > KEEP_QUERIES:
                self.results.popitem(last=False)
        ranking = sorted(
            (
                {"frame": i, "name": self.scene.frames[i].name, "split": self.scene.frames[i].split, "score": frame_score(sims[i])}
                for i in frames
            ),
            key=lambda r: -r["score"],
        )
        return {
            "id": qid,
            "query": {"frame": frame, "box": list(patch.box), "source": source},
            "ranking": ranking[:best],
            "heatmap": f"/api/heat/{qid}/{{frame}}.png",
            "export": f"/api/export/{qid}.ply" if source == "student" and self.points is not None else None,
        }

    def _result(self, qid: str) -> dict:
        if qid not in self.results:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no query {qid!r} (only the last {KEEP_QUERIES} are kept)")
        return self.results[qid]

    def heatmap(self, qid: str, index: int) -> bytes:
        from n3f.pipeline.query_report import heatmap_overlay
        from n3f.scene.images import load_frame_image

        res = self._result(qid)
        self._check_frame(index)
        image = (load_frame_image(self.scene.frames[index]) * 255 + 0.5).astype(np.uint8)
        box = res["patch"].box if index == res["patch"].frame else None
        return _png(heatmap_overlay(image, res["sims"][index], box, *res["range"]))

    def export(self, qid: str) -> bytes:
        from n3f.pipeline.pointcloud import segment, write_ply
        from n3f.pipeline.query_report import point_similarity, points_pca_basis

        res = self._result(qid)
        if self.points is None or res["source"] != "student":
            raise RequestError(HTTPStatus.NOT_FOUND, "no point cloud for this query (student queries only)")
        sim = point_similarity(self.points, res["vector"])
        with self.lock:
            anchor = self.engine.anchor(res["patch"])
        chosen, _ = segment(self.points, sim, anchor=anchor)
        if not chosen.any():
            raise RequestError(HTTPStatus.NOT_FOUND, "no point passed the similarity threshold")
        with tempfile.TemporaryDirectory() as tmp:
            path = write_ply(
                Path(tmp) / "segment.ply",
                self.scene,
                self.points.subset(chosen),
                {"similarity": sim[chosen]},
                pca_basis=points_pca_basis(self.points.features),
            )
            return path.read_bytes()


def _finite_number(value, kind: type | tuple[type, ...] = (int, float)) -> bool:
    """Whether a JSON value is a finite number of ``kind`` (JSON's NaN/Infinity and booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond any float (JSON allows 10**400)
        return False


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


_HEAT = re.compile(r"^/api/heat/(q\d+)/(\d+)\.png$")
_EXPORT = re.compile(r"^/api/export/(q\d+)\.ply$")
_FRAME = re.compile(r"^/frames/(\d+)\.png$")


def _malloc_trim():
    """glibc's ``malloc_trim(0)`` when available, else a no-op."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the heap's freed pages back to the system (glibc only).

    A query renders thousands of samples in a fresh thread; glibc keeps what those temporaries
    freed in per-thread arenas, so without this the server's RSS crept up by 100-250 MiB over 120
    requests (more with the MLPs in bfloat16) although nothing leaked.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def make_handler(service: QueryService):
    """A request handler class bound to ``service``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "n3f"
        protocol_version = "HTTP/1.1"
        timeout = 30  # seconds a client may stall mid-request before its connection is closed

        def log_message(self, format, *args):  # quiet by default; errors still answer the client
            pass

        def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _guard(self, fn) -> None:
            try:
                fn()
            except RequestError as exc:
                self._json(exc.status, {"error": str(exc)})
            except Exception as exc:  # a bug must not take the server down
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(exc).__name__}: {exc}"})
            finally:
                release_free_memory()

        def do_GET(self):
            self._guard(self._get)

        def do_HEAD(self):
            self._guard(self._get)

        def do_POST(self):
            self._guard(self._post)

        def __getattr__(self, name: str):
            if name.startswith("do_"):  # other methods (PUT, DELETE...): 405, not the base class's 501
                return self._not_allowed
            raise AttributeError(name)

        def _not_allowed(self) -> None:
            self.close_connection = True
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED, b'{"error": "use GET, HEAD or POST"}', "application/json", {"Allow": "GET, HEAD, POST"}
            )

        def _get(self):
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                return self._send(200, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")
            if path == "/api/info":
                return self._json(200, service.info())
            if m := _FRAME.match(path):
                return self._send(200, service.frame_image(int(m.group(1))), "image/png")
            if m := _HEAT.match(path):
                return self._send(200, service.heatmap(m.group(1), int(m.group(2))), "image/png")
            if m := _EXPORT.match(path):
                body = service.export(m.group(1))
                return self._send(
                    200, body, "application/octet-stream", {"Content-Disposition": f'attachment; filename="{m.group(1)}.ply"'}
                )
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path[:200]}")

        def _post(self):
            if self.path.split("?", 1)[0] != "/api/query":
                raise RequestError(HTTPStatus.NOT_FOUND, "POST goes to /api/query")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a JSON body with Content-Length is required") from None
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes")
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except TimeoutError:
                self.close_connection = True
                raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"the request body did not arrive within {self.timeout} s") from None
            except (ValueError, UnicodeDecodeError):
                raise RequestError(HTTPStatus.BAD_REQUEST, "the request body is not valid JSON") from None
            self._json(200, service.query(body))

    return Handler


def make_server(service: QueryService, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """Bind the server (port 0 picks a free port; read it from ``server.server_address``)."""
    try:
        server = ThreadingHTTPServer((host, port), make_handler(service))
    except OSError as exc:
        raise N3FError(f"cannot listen on {host}:{port}: {exc}; pick another --port") from exc
    server.daemon_threads = True
    return server
