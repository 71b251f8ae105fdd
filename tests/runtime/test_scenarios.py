"""The four LoadGen-style scenarios on real engines (kiln Sessions on onnxruntime)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from model_builders import make_conv_model

import kiln
from kiln.runtime import scenarios
from kiln.runtime.scenarios import Probe, Workload


class Recorder:
    """A Session's run that records the batch size of every call (thread-safe)."""

    def __init__(self, session: kiln.Session):
        self.session = session
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, feeds):
        with self.lock:
            self.batches.append(int(feeds["x"].shape[0]))
        return self.session.run(None, feeds)


@pytest.fixture(scope="module")
def session() -> kiln.Session:
    return kiln.Session(make_conv_model(batch="N"), backend="onnxruntime", threads=1)


def feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)}


def broken(_feeds):
    raise kiln.InputError("this engine refuses every query")


def test_single_stream_interleaves_engines_and_isolates_a_failure(session):
    seen: list[str] = []
    run = Recorder(session)

    def first(f):
        seen.append("a")
        return run(f)

    def second(f):
        seen.append("b")
        return run(f)

    engines = [Workload("a", first, feeds()), Workload("b", second, feeds()),
               Workload("bad", broken, feeds())]
    results = scenarios.single_stream(engines, iterations=6, block=3)
    for key in ("a", "b"):
        assert len(results[key].latencies_ms) == 6 and results[key].samples == 6
        assert results[key].throughput_qps > 0 and results[key].error is None
    # per round: a's untimed query + its block, then b's: the engines take turns
    assert seen == ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4
    assert results["bad"].error == "this engine refuses every query"
    assert not results["bad"].latencies_ms and results["bad"].throughput_qps is None


def test_multi_stream_batches_or_runs_concurrently(session):
    batched, single = Recorder(session), Recorder(session)
    engines = [Workload("batch", batched, feeds(), batchable=True),
               Workload("pool", single, feeds())]
    results = scenarios.multi_stream(engines, samples_per_query=4, iterations=2, block=2,
                                     workers=2)
    assert set(batched.batches) == {4} and set(single.batches) == {1}
    assert len(single.batches) == 4 * len(batched.batches)
    assert results["batch"].detail == {"samples_per_query": 4, "mode": "batch", "workers": 1}
    assert results["pool"].detail["mode"] == "concurrent"
    for res in results.values():
        assert res.samples == 2 * 4 and res.throughput_qps > 0


def test_offline_splits_samples_into_batches(session):
    run = Recorder(session)
    engines = [Workload("batch", run, feeds(), batchable=True)]
    results = scenarios.offline(engines, samples=10, batch_size=4, rounds=2, workers=2)
    res = results["batch"]
    # per round: one untimed batch of 4, then 4 + 4 + 2 samples
    assert sorted(run.batches) == sorted([4, 4, 4, 2] * 2)
    assert res.samples == 20 and res.throughput_qps > 0 and len(res.latencies_ms) == 6
    assert res.detail["batch_size"] == 4 and res.detail["rounds"] == 2


def test_batch_feeds_repeat_the_sample_along_the_first_dim():
    work = Workload("w", broken, feeds())
    batch = work.batch_feeds(3)["x"]
    assert batch.shape == (3, 3, 8, 8) and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch[2], feeds()["x"][0])
    assert work.batch_feeds(3) is work.batch_feeds(3)  # cached


def test_poisson_arrivals_are_seeded_and_average_the_rate():
    a = scenarios.poisson_arrivals(200.0, 4000, np.random.default_rng(1))
    b = scenarios.poisson_arrivals(200.0, 4000, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a) > 0)
    assert np.mean(np.diff(a)) == pytest.approx(1 / 200.0, rel=0.1)


def test_percentiles():
    stats = scenarios.percentiles([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["p50"] == 3.0 and stats["min"] == 1.0 and stats["max"] == 100.0
    assert stats["mean"] == pytest.approx(22.0) and stats["p90"] > stats["p50"]


def probe(qps: float, ok: bool) -> Probe:
    return Probe(qps, 10, qps, [1.0], 1.0, ok)


def test_server_search_brackets_then_bisects():
    search = scenarios._Search(start_qps=100.0)
    assert search.next_qps(1.0, 0.05) == 100.0
    search.record(probe(100.0, True))
    assert search.next_qps(1.0, 0.05) == 200.0  # met the bound: double
    search.record(probe(200.0, False))
    assert search.next_qps(1.0, 0.05) == 150.0  # bracketed: bisect
    search.record(probe(150.0, True))
    assert search.best.target_qps == 150.0 and search.worst.target_qps == 200.0
    missed = scenarios._Search(start_qps=8.0)
    missed.record(probe(8.0, False))
    assert missed.next_qps(1.0, 0.05) == 2.0  # missed from the start: quarter the rate
    missed.record(probe(2.0, False))
    assert missed.next_qps(1.0, 0.05) is None  # below the slowest rate worth probing


def test_server_finds_a_rate_within_the_bound_and_reports_an_impossible_bound(session):
    engine = Workload("ort", Recorder(session), feeds())
    results = scenarios.server([engine], latency_bound_ms=50.0, probe_seconds=0.1,
                               min_queries=20, max_probes=3, workers=1)
    res = results["ort"]
    assert res.error is None and res.throughput_qps > 0
    assert res.detail["max_qps"] == res.throughput_qps and res.detail["probes"]
    assert res.detail["p99_at_max_ms"] <= 50.0
    impossible = scenarios.server([engine], latency_bound_ms=1e-6, estimate_ms={"ort": 1.0},
                                  probe_seconds=0.05, min_queries=20, max_probes=2, workers=1)
    assert impossible["ort"].throughput_qps == 0.0
    assert "p99 above the 1e-06 ms bound" in impossible["ort"].note
