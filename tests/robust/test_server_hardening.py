"""``n3f serve`` under load: tools/load_serve.py scaled down (60 malformed + 60 valid requests).

The script starts the real ``n3f serve`` child on loopback; every malformed request must get a 4xx
(path traversal a 404), every query a ranking, the first query the same ranking after the load,
and the server's memory must not grow (see the script's docstring for the bound).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "load_serve.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("load_serve", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaled_down_load_leaves_the_server_answering_correctly(fitted_run):
    # Memory: the full load (tools/load_serve.py, 2,000 requests, 32 MiB slack) is the leak check. The
    # server hands freed heap back after every request (malloc_trim); before it did, glibc's
    # per-thread arenas made RSS creep 50-250 MiB in 120 requests with nothing leaked. 64 MiB catches
    # a leak of 1 MiB a request.
    report = _load_tool().run_load(fitted_run, n_malformed=60, n_valid=60, rss_slack_mib=64.0, seed=1)
    assert report["failures"] == [], report
    assert report["malformed"] == 60 and report["valid"] == 60
    for label in ("traversal", "traversal-encoded", "traversal-static", "traversal-run"):
        assert set(report["statuses"][label]) == {"404"}, report["statuses"][label]
    assert {"400"} == set(report["statuses"]["nan-box"]) == set(report["statuses"]["inf-point"]) == set(report["statuses"]["huge-integer"])
    assert set(report["statuses"]["oversized-body"]) == {"413"} and set(report["statuses"]["bad-method"]) == {"405"}
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p90"] <= report["latency_ms"]["p99"]


def test_percentiles_interpolate_between_ranks():
    percentile = _load_tool().percentile
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0
