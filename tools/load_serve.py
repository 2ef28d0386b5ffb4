"""Load test of ``n3f serve`` on loopback: malformed requests, valid queries, memory, latency.

Starts ``python -m n3f serve --run RUN --port 0`` as a child process, then sends ``--malformed``
malformed requests (raw bytes over sockets and bad HTTP: garbage request lines, path traversal,
oversized bodies and headers, wrong types, NaN/inf coordinates, truncated bodies) and ``--valid``
click queries at random points. Every malformed request must get a 4xx answer (or a closed
connection for bytes that are not HTTP) and every valid one a 200 ranking. Afterwards the first
query is asked again and must return the same ranking as before the load, and the server's RSS
(``/proc/PID/status``) must not grow (see below).

Why this bound: the server keeps the last 16 query results (a similarity map per frame each) and a
PNG per frame shown, so what it holds stops growing after the warm-up (every frame's PNG, 24
queries). Its RSS still moves by tens of MiB from query to query (transient arrays of each query,
freed into glibc's per-thread arenas: the server runs a thread per connection), so the check is
not "RSS never rises" but "RSS at the end is at most the peak of the first half of the load plus
``--rss-slack-mib`` (32)": a leak of L bytes per request would exceed it after 32 MiB / L of the
second half's requests (64 kB per query over 500 queries), while the arena noise, which reaches its
peak early, does not.

Example::

    python tools/load_serve.py --run RUN --malformed 1000 --valid 1000

prints the counts, the p50/p90/p99 latency of a query and the RSS before and after, and exits 1
when a check fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 600


def start_server(run: Path, timeout_s: float = 300) -> tuple[subprocess.Popen, str, int]:
    """Start ``n3f serve`` on a free loopback port; (process, host, port) once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "n3f", "serve", "--run", str(run), "--port", "0", "--quiet"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:
        if m := re.search(r"http://([\d.]+):(\d+)/", line):
            return proc, m.group(1), int(m.group(2))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"n3f serve did not start: {line if 'line' in dir() else ''}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def request(host: str, port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection; (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw(host: str, port: int, data: bytes, half_close: bool = True) -> int | None:
    """Send raw bytes; the HTTP status of the answer, or None when the server closed without one."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(m.group(1)) if m else None


def malformed_requests(n_frames: int, width: int, height: int, rng: random.Random):
    """An endless cycle of (label, callable(host, port) -> status or None) malformed requests."""
    nan_box = b'{"frame": 0, "box": [NaN, 0, 5, 5]}'
    cases = [
        ("traversal", lambda h, p: request(h, p, "GET", "/frames/../../../../etc/passwd")[0]),
        ("traversal-encoded", lambda h, p: request(h, p, "GET", "/%2e%2e/%2e%2e/etc/passwd")[0]),
        ("traversal-static", lambda h, p: request(h, p, "GET", "/static/../config.toml")[0]),
        ("traversal-run", lambda h, p: request(h, p, "GET", "/../config.toml")[0]),
        ("frame-out-of-range", lambda h, p: request(h, p, "GET", f"/frames/{n_frames + rng.randrange(1, 10**6)}.png")[0]),
        ("unknown-query", lambda h, p: request(h, p, "GET", "/api/heat/q999999999/0.png")[0]),
        ("not-json", lambda h, p: request(h, p, "POST", "/api/query", b"{not json", {"Content-Type": "application/json"})[0]),
        ("nan-box", lambda h, p: request(h, p, "POST", "/api/query", nan_box)[0]),
        ("inf-point", lambda h, p: request(h, p, "POST", "/api/query", b'{"frame": 0, "point": [Infinity, 3]}')[0]),
        ("huge-integer", lambda h, p: _query(h, p, {"frame": 0, "point": [10**400, 1]})),
        ("negative-size", lambda h, p: _query(h, p, {"frame": 0, "point": [1, 1], "size": -4})),
        ("float-size", lambda h, p: _query(h, p, {"frame": 0, "point": [1, 1], "size": 2.5})),
        ("box-outside", lambda h, p: _query(h, p, {"frame": 0, "box": [width, height, width + 9, height + 9]})),
        ("wrong-types", lambda h, p: _query(h, p, {"frame": "0", "point": "1,2"})),
        ("bool-frame", lambda h, p: _query(h, p, {"frame": True, "point": [1, 1]})),
        ("list-body", lambda h, p: _query(h, p, [1, 2, 3])),
        ("unknown-source", lambda h, p: _query(h, p, {"frame": 0, "point": [1, 1], "source": "oracle"})),
        ("oversized-body", lambda h, p: raw(h, p, b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{")),
        ("negative-length", lambda h, p: raw(h, p, b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")),
        ("no-length", lambda h, p: raw(h, p, b"POST /api/query HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("garbage-line", lambda h, p: raw(h, p, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\r\n\r\n")),
        ("long-line", lambda h, p: raw(h, p, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")),
        ("many-headers", lambda h, p: raw(h, p, b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n")),
        ("bad-method", lambda h, p: raw(h, p, b"DELETE /api/info HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("truncated-body", lambda h, p: raw(h, p, b'POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{"frame": 0')),
    ]
    while True:
        yield from cases


def _query(host: str, port: int, doc) -> int:
    return request(host, port, "POST", "/api/query", json.dumps(doc).encode(), {"Content-Type": "application/json"})[0]


def _ask(host: str, port: int, doc: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    status, body = request(host, port, "POST", "/api/query", json.dumps(doc).encode(), {"Content-Type": "application/json"})
    seconds = time.perf_counter() - start
    if status != 200:
        raise AssertionError(f"valid query {doc} answered {status}: {body[:300]!r}")
    return seconds, json.loads(body)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_load(run: Path, n_malformed: int, n_valid: int, rss_slack_mib: float = 32.0, seed: int = 0) -> dict:
    """Start a server on ``run``, load it, check it; the report (``failures`` empty when all passed)."""
    rng = random.Random(seed)
    proc, host, port = start_server(run)
    started = time.monotonic()
    failures: list[str] = []
    try:
        info = json.loads(request(host, port, "GET", "/api/info")[1])
        frames = info["frames"]
        width, height = frames[0]["width"], frames[0]["height"]
        first = {"frame": 1, "point": [width // 2, height // 2], "size": 8}
        _, before = _ask(host, port, first)
        for i in range(len(frames)):  # warm-up: every frame's PNG, more queries than the server keeps
            request(host, port, "GET", f"/frames/{i}.png")
        for _ in range(24):
            _ask(host, port, {"frame": rng.randrange(len(frames)), "point": [rng.randrange(width), rng.randrange(height)], "size": 8})
        rss_start = rss_kib(proc.pid)
        trace = [round(rss_start / 1024, 1)]
        every = max((n_malformed + n_valid) // 20, 1)  # about 20 samples of RSS over the load
        statuses: dict[str, dict[str, int]] = {}
        cases = malformed_requests(len(frames), width, height, rng)
        schedule = ["malformed"] * n_malformed + ["valid"] * n_valid
        rng.shuffle(schedule)  # interleaved, so both halves of the load see both kinds
        latencies = []
        for done, kind in enumerate(schedule, start=1):
            if kind == "malformed":
                label, send = next(cases)
                status = send(host, port)
                statuses.setdefault(label, {})
                statuses[label][str(status)] = statuses[label].get(str(status), 0) + 1
                if status is not None and not 400 <= status < 500:
                    failures.append(f"{label}: answered {status}")
            else:
                doc = {
                    "frame": rng.randrange(len(frames)),
                    "point": [rng.randrange(width), rng.randrange(height)],
                    "size": rng.choice([4, 8, 16]),
                }
                seconds, answer = _ask(host, port, doc)
                latencies.append(seconds)
                if len(answer["ranking"]) != min(12, len(frames)):
                    failures.append(f"query {doc} ranked {len(answer['ranking'])} frames")
            if done % every == 0:
                trace.append(round(rss_kib(proc.pid) / 1024, 1))
            if time.monotonic() - started > TIME_LIMIT_S:
                failures.append(f"ran past {TIME_LIMIT_S} s")
                break
        _, after = _ask(host, port, first)
        if after["ranking"] != before["ranking"]:
            failures.append("the first query's ranking changed after the load")
        rss_end = rss_kib(proc.pid)
        first_half_peak = max(trace[: len(trace) // 2 + 1])
        if rss_end / 1024 > first_half_peak + rss_slack_mib:
            failures.append(
                f"RSS grew: {rss_end / 1024:.1f} MiB at the end, {first_half_peak} MiB at most in the first half (slack {rss_slack_mib} MiB)"
            )
        if proc.poll() is not None:
            failures.append(f"the server exited with code {proc.returncode}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "malformed": sum(sum(v.values()) for v in statuses.values()),
        "valid": len(latencies),
        "statuses": statuses,
        "latency_ms": {f"p{q}": round(1000 * percentile(latencies, q), 2) for q in (50, 90, 99)} if latencies else {},
        "rss_mib": {"after_warmup": round(rss_start / 1024, 1), "after_load": round(rss_end / 1024, 1), "samples": trace},
        "seconds": round(time.monotonic() - started, 1),
        "failures": failures,
    }


def main() -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a fitted run folder (n3f fit)")
    parser.add_argument("--malformed", type=int, default=1000)
    parser.add_argument("--valid", type=int, default=1000)
    parser.add_argument("--rss-slack-mib", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = run_load(args.run, args.malformed, args.valid, args.rss_slack_mib, args.seed)
    print(json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
