"""The click-to-query server: its API over real HTTP on loopback, bad requests, and the page in a
real headless browser (Debian's chromium through Playwright; skipped when either is absent)."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def server(fitted_run):
    from n3f.pipeline.fit import load_run
    from n3f.pipeline.maps import student_maps
    from n3f.pipeline.pointcloud import scene_points
    from n3f.serve.server import QueryService, make_server

    trainer = load_run(fitted_run)
    maps = student_maps(trainer, 4)
    service = QueryService(trainer, maps, scene_points(trainer.scene, maps))
    srv = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, service
    srv.shutdown()
    srv.server_close()


def _request(srv, method, path, body=None, headers=None):
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), data


def _query(srv, doc):
    return _request(srv, "POST", "/api/query", json.dumps(doc).encode(), {"Content-Type": "application/json"})


def test_binds_loopback_and_serves_the_page_and_frames(server):
    srv, service = server
    assert srv.server_address[0] == "127.0.0.1"
    status, ctype, body = _request(srv, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"click to query" in body
    status, _, body = _request(srv, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and len(info["frames"]) == 96 and info["frames"][5]["name"] == "0005.png"
    status, ctype, body = _request(srv, "GET", "/frames/5.png")
    assert status == 200 and ctype == "image/png" and body[:4] == b"\x89PNG"


def test_query_matches_the_engine_and_offers_heat_maps_and_a_ply(server, tmp_path):
    import open3d as o3d

    from n3f.pipeline.query import Patch, frame_score

    srv, service = server
    status, _, body = _query(srv, {"frame": 0, "point": [30, 30], "size": 8, "best": 5})
    doc = json.loads(body)
    assert status == 200 and len(doc["ranking"]) == 5 and doc["query"]["box"] == [26, 26, 34, 34]
    # the same ranking as the engine computes directly
    vec = service.engine.vector(Patch(0, (26, 26, 34, 34)), "student")
    sims = service.engine.similarity(vec, "student", list(range(96)))
    expected = sorted(range(96), key=lambda i: -frame_score(sims[i]))[:5]
    assert [r["frame"] for r in doc["ranking"]] == expected
    status, ctype, png = _request(srv, "GET", doc["heatmap"].replace("{frame}", str(expected[0])))
    assert status == 200 and ctype == "image/png" and png[:4] == b"\x89PNG"
    status, _, ply = _request(srv, "GET", doc["export"])
    assert status == 200 and ply.startswith(b"ply")
    (tmp_path / "seg.ply").write_bytes(ply)
    cloud = o3d.t.io.read_point_cloud(str(tmp_path / "seg.ply"))
    assert len(cloud.point.positions) > 0 and "similarity" in cloud.point


@pytest.mark.parametrize(
    "method, path, body, expected",
    [
        ("POST", "/api/query", {"frame": 400, "point": [3, 3]}, 404),
        ("POST", "/api/query", {"frame": 0, "box": [0, 0, 90, 10]}, 400),
        ("POST", "/api/query", {"frame": 0, "point": [3, 3], "source": "clip"}, 400),
        ("POST", "/api/query", {"frame": "0", "point": [3, 3]}, 400),
        ("POST", "/api/query", {"frame": 0}, 400),
        ("POST", "/api/query", b"{not json", 400),
        ("POST", "/api/query", b"x" * 70000, 413),
        ("GET", "/frames/999.png", None, 404),
        ("GET", "/api/heat/q999/0.png", None, 404),
        ("GET", "/../../etc/passwd", None, 404),
        ("GET", "/frames/..%2f..%2fconfig.toml", None, 404),
        ("GET", "/static/../checkpoints", None, 404),
    ],
)
def test_bad_requests_answer_4xx_and_the_server_keeps_running(server, method, path, body, expected):
    srv, _ = server
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, ctype, reply = _request(srv, method, path, data, {"Content-Type": "application/json"} if data else {})
    assert status == expected, reply
    assert "error" in json.loads(reply)
    assert _request(srv, "GET", "/api/info")[0] == 200


CHROMIUM = Path("/usr/bin/chromium")


def test_page_in_a_headless_browser(server, tmp_path, demo_scene):
    if not CHROMIUM.is_file():
        pytest.skip(f"no browser at {CHROMIUM} (Debian's chromium; `bash tools/setup.sh --dev` installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from n3f.scene.images import load_frame_mask

    srv, service = server
    scene = service.scene
    frame0 = scene.frames[0]
    mask = load_frame_mask(frame0)
    red = next(o["id"] for o in scene.objects if o["name"] == "mug_red")
    ys, xs = np.nonzero(mask == red)
    x, y = float(np.median(xs)) + 0.5, float(np.median(ys)) + 0.5
    assert mask[int(y), int(x)] == red
    host, port = srv.server_address[:2]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://{host}:{port}/")
        page.wait_for_function("document.querySelector('#frame-view').naturalWidth > 0")
        page.fill("#size", "4")
        box = page.locator("#frame-view").bounding_box()
        page.mouse.click(box["x"] + x / frame0.width * box["width"], box["y"] + y / frame0.height * box["height"])
        page.wait_for_selector(".result", timeout=120_000)
        page.wait_for_function("Array.from(document.querySelectorAll('.result img')).every(i => i.complete && i.naturalWidth > 0)")
        frames = [int(v) for v in page.eval_on_selector_all(".result", "els => els.map(e => e.dataset.frame)")]
        status = page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "query-page.png"), full_page=True)
        browser.close()
    assert "query" in status and len(frames) == 12
    # the top-ranked frames show the clicked object (exact masks)
    for i in frames[:3]:
        assert (load_frame_mask(scene.frames[i]) == red).sum() > 0, i
    print(f"screenshot: {tmp_path / 'query-page.png'}")
