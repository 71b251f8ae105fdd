"""kiln bench --url: open-loop load against a real server, figures read from its /metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiln.errors import KilnError
from kiln.runtime.serve.loadgen import LoadConfig, bucket_quantile, run_load


def test_bucket_quantile_interpolates_like_prometheus():
    cumulative = {0.1: 0.0, 0.2: 50.0, 0.4: 100.0, float("inf"): 100.0}
    assert bucket_quantile(0.5, cumulative) == pytest.approx(0.2)
    assert bucket_quantile(0.75, cumulative) == pytest.approx(0.3)
    assert bucket_quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None


def test_only_loopback_urls_are_loaded():
    with pytest.raises(KilnError, match="loopback"):
        run_load(LoadConfig(url="http://10.0.0.1:8000", model="m"))


def test_scenarios_report_queue_compute_and_batches(serve_repo, start_server):
    with start_server(serve_repo, max_batch=8, max_queue_delay_ms=2) as url:
        report = run_load(LoadConfig(url=url, model="linear",
                                     scenarios=("single-stream", "offline", "server"),
                                     qps=100, seconds=1.0, iterations=10, workers=8))
    rows = {r["scenario"]: r for r in report["results"]}
    assert report["schema_version"] and report["model"]["name"] == "linear"
    assert rows["single-stream"]["samples"] == 10
    for row in rows.values():
        detail = row["detail"]
        assert row["status"] == "ok" and detail["lost_or_hung"] == 0
        assert set(detail["status_counts"]) == {"200"}
        assert detail["queue_ms"]["p99"] is not None and detail["compute_ms"]["p50"] > 0
        assert sum(detail["batch_size_histogram"].values()) == detail["batches"]
    assert rows["offline"]["detail"]["mean_batch_size"] > 1  # 8 clients share batches
    assert 50 <= rows["server"]["detail"]["sent"] <= 200  # ~100 Poisson arrivals in 1 s


def test_cli_bench_url_writes_the_bench_json(serve_repo, start_server, tmp_path):
    out = tmp_path / "served.json"
    with start_server(serve_repo) as url:
        run = subprocess.run([sys.executable, "-m", "kiln", "bench", "--url", url, "--model",
                              "linear", "--scenario", "server", "--qps", "50",
                              "--probe-seconds", "1", "--json", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    [row] = json.loads(out.read_text())["results"]
    assert row["scenario"] == "server" and row["detail"]["target_qps"] == 50
