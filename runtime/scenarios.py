"""The four MLPerf LoadGen scenarios, run the same way on every engine.

An engine here is anything that can run one inference on the bench feeds (``Workload``); the
scenarios know nothing about backends. Every scenario interleaves engines (engine A's block,
engine B's block, ... then again) so that noise from other processes on the machine hits all
engines alike.

- single-stream: one query = one sample, issued when the previous one finished; the score is
  the latency distribution (p50/p90/p99).
- multi-stream: one query = N samples, issued together; the query is done when all N are;
  the score is the query's p99 latency. N samples run as one batch when the model's batch dim
  is symbolic, else as N concurrent requests on a worker pool.
- server: queries arrive as a Poisson process at a target rate (seeded exponential gaps); a
  scheduler thread issues each at its arrival time to a worker pool, and a query's latency
  runs from its *scheduled* arrival to its completion, so queueing (and any lateness of the
  scheduler) counts. The score is the highest rate whose p99 stays within the latency bound,
  found by bracketing and then binary search.
- offline: all samples are available at once; the score is throughput (samples/s). Samples are
  batched when the batch dim is symbolic, else run as concurrent requests on a worker pool.

These are scaled-down versions of LoadGen's rules (LoadGen wants >= 600 s runs and, for
offline, >= 24,576 samples); the probe sizes are parameters.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

SCENARIOS = ("single-stream", "multi-stream", "server", "offline")

#: progress(phase, done, total): called as work advances.
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class Workload:
    """One engine as the scenarios see it.

    key:       a label unique among the engines of one run ("openvino/fp32").
    run:       runs one inference on the given feeds; thread-safe.
    feeds:     the single-sample feeds every engine gets.
    batchable: whether every input's first dim is symbolic, so N samples can be one batch.
    """

    key: str
    run: Callable[[Mapping[str, np.ndarray]], Any]
    feeds: Mapping[str, np.ndarray]
    batchable: bool = False
    _batches: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict,
                                                                   repr=False)

    def batch_feeds(self, n: int) -> dict[str, np.ndarray]:
        """The feeds repeated ``n`` times along the batch dim (cached)."""
        if n not in self._batches:
            self._batches[n] = {k: np.ascontiguousarray(np.concatenate([v] * n, axis=0))
                                for k, v in self.feeds.items()}
        return self._batches[n]


@dataclasses.dataclass
class ScenarioResult:
    """What one scenario measured for one engine. ``error`` set means the engine failed."""

    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    throughput_qps: float | None = None
    samples: int = 0
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""
    error: str | None = None


def describe_error(exc: BaseException) -> str:
    from kiln.errors import KilnError

    return str(exc) if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max of latencies in milliseconds."""
    data = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": float(np.percentile(data, 50)), "p90": float(np.percentile(data, 90)),
            "p99": float(np.percentile(data, 99)), "mean": float(data.mean()),
            "min": float(data.min()), "max": float(data.max())}


def _noop(_phase: str, _done: int, _total: int) -> None:
    pass


def _timed_blocks(engines: Sequence[Workload], query: Callable[[Workload], None],
                  iterations: int, block: int, phase: str, progress: Progress
                  ) -> dict[str, ScenarioResult]:
    """Interleaved rounds: per round, each live engine runs one untimed query (the previous
    engine's pool threads settle) and then ``block`` timed queries."""
    results = {e.key: ScenarioResult() for e in engines}
    rounds = max(1, math.ceil(iterations / max(1, block)))
    for r in range(rounds):
        for engine in engines:
            res = results[engine.key]
            if res.error:
                continue
            try:
                query(engine)
                for _ in range(block):
                    started = time.perf_counter()
                    query(engine)
                    res.latencies_ms.append((time.perf_counter() - started) * 1e3)
            except Exception as exc:  # one engine failing must not stop the others
                res.error = describe_error(exc)
        progress(phase, r + 1, rounds)
    return results


def single_stream(engines: Sequence[Workload], *, iterations: int = 20, block: int = 5,
                  progress: Progress = _noop) -> dict[str, ScenarioResult]:
    """Latency of one sample at a time."""
    results = _timed_blocks(engines, lambda e: e.run(e.feeds), iterations, block,
                            "single-stream", progress)
    for res in results.values():
        res.samples = len(res.latencies_ms)
        if res.latencies_ms and not res.error:
            res.throughput_qps = 1e3 / float(np.mean(res.latencies_ms))
    return results


def multi_stream(engines: Sequence[Workload], *, samples_per_query: int = 8,
                 iterations: int = 20, block: int = 5, workers: int = 2,
                 progress: Progress = _noop) -> dict[str, ScenarioResult]:
    """Latency of queries of ``samples_per_query`` samples each; throughput in samples/s."""
    n = max(1, samples_per_query)
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="kiln-multistream")

    def query(engine: Workload) -> None:
        if engine.batchable:
            engine.run(engine.batch_feeds(n))
            return
        futures = [pool.submit(engine.run, engine.feeds) for _ in range(n)]
        for future in futures:
            future.result()

    try:
        results = _timed_blocks(engines, query, iterations, block, "multi-stream", progress)
    finally:
        pool.shutdown(wait=True)
    for engine in engines:
        res = results[engine.key]
        res.samples = len(res.latencies_ms) * n
        res.detail = {"samples_per_query": n,
                      "mode": "batch" if engine.batchable else "concurrent",
                      "workers": 1 if engine.batchable else max(1, workers)}
        if res.latencies_ms and not res.error:
            res.throughput_qps = n * 1e3 / float(np.mean(res.latencies_ms))
    return results


@dataclasses.dataclass
class Probe:
    """One fixed-rate Poisson run of the server scenario."""

    target_qps: float
    queries: int
    achieved_qps: float
    latencies_ms: list[float]
    p99_ms: float
    ok: bool
    aborted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"target_qps": self.target_qps, "queries": self.queries,
                "achieved_qps": self.achieved_qps, "p99_ms": self.p99_ms, "ok": self.ok,
                "aborted": self.aborted}


def poisson_arrivals(qps: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s from start) of ``count`` queries of a Poisson process at ``qps``."""
    return np.cumsum(rng.exponential(1.0 / qps, size=count))


def server_probe(engine: Workload, qps: float, queries: int, latency_bound_ms: float,
                 rng: np.random.Generator, workers: int = 2) -> Probe:
    """Issue ``queries`` Poisson arrivals at ``qps`` from a scheduler thread to a worker pool.

    Latency counts from each query's scheduled arrival, so time spent queued counts. When a
    finished query already took more than 4x the bound the scheduler stops issuing (the rate
    is clearly too high); the probe is then not ok.
    """
    arrivals = poisson_arrivals(qps, queries, rng)
    latencies = np.full(queries, np.nan)
    overloaded = threading.Event()
    failure: list[BaseException] = []
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="kiln-server")
    start = time.perf_counter() + 0.002

    def serve(i: int, due: float) -> None:
        if overloaded.is_set():
            return
        try:
            engine.run(engine.feeds)
        except BaseException as exc:
            failure.append(exc)
            overloaded.set()
            return
        latency = (time.perf_counter() - due) * 1e3
        latencies[i] = latency
        if latency > 4 * latency_bound_ms:
            overloaded.set()

    futures = []

    def schedule() -> None:
        for i, offset in enumerate(arrivals):
            due = start + float(offset)
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if overloaded.is_set():
                break
            futures.append(pool.submit(serve, i, due))

    scheduler = threading.Thread(target=schedule, name="kiln-server-scheduler")
    scheduler.start()
    scheduler.join()
    wait(futures)
    end = time.perf_counter()
    pool.shutdown(wait=True)
    if failure:
        raise failure[0]
    done = latencies[~np.isnan(latencies)]
    aborted = overloaded.is_set() or done.size < queries
    p99 = float(np.percentile(done, 99)) if done.size else math.inf
    return Probe(target_qps=float(qps), queries=int(done.size),
                 achieved_qps=float(done.size / max(end - start, 1e-9)),
                 latencies_ms=[float(x) for x in done], p99_ms=p99,
                 ok=not aborted and p99 <= latency_bound_ms, aborted=aborted)


@dataclasses.dataclass
class _Search:
    """Bracketing + binary search state for one engine's max QPS under the bound."""

    start_qps: float
    best: Probe | None = None     # highest rate that met the bound
    worst: Probe | None = None    # lowest rate that missed it
    probes: list[Probe] = dataclasses.field(default_factory=list)

    def next_qps(self, min_qps: float, rel_tol: float) -> float | None:
        if self.best is None and self.worst is None:
            return self.start_qps
        if self.worst is None:
            assert self.best is not None
            return self.best.target_qps * 2
        if self.best is None:
            qps = self.worst.target_qps / 4
            return qps if qps >= min_qps else None
        lo, hi = self.best.target_qps, self.worst.target_qps
        return None if (hi - lo) <= rel_tol * hi else (lo + hi) / 2

    def record(self, probe: Probe) -> None:
        self.probes.append(probe)
        if probe.ok and (self.best is None or probe.target_qps > self.best.target_qps):
            self.best = probe
        if not probe.ok and (self.worst is None or probe.target_qps < self.worst.target_qps):
            self.worst = probe


def server(engines: Sequence[Workload], *, latency_bound_ms: float = 15.0,
           estimate_ms: Mapping[str, float] | None = None, probe_seconds: float = 1.0,
           min_queries: int = 100, max_queries: int = 4000, max_probes: int = 8,
           rel_tol: float = 0.05, workers: int = 2, seed: int = 0,
           progress: Progress = _noop) -> dict[str, ScenarioResult]:
    """Highest Poisson rate whose p99 latency stays within ``latency_bound_ms``, per engine.

    The first probe runs at half the rate ``workers`` could sustain at the engine's estimated
    single-sample latency (``estimate_ms``, else a quick measurement); the rate then doubles
    until the bound is missed (or quarters until it is met), and binary search narrows the
    bracket to ``rel_tol`` or ``max_probes`` probes. Engines take turns probe by probe.
    """
    rng = np.random.default_rng(seed)
    searches: dict[str, _Search] = {}
    results = {e.key: ScenarioResult() for e in engines}
    for engine in engines:
        try:
            est = (estimate_ms or {}).get(engine.key) or _quick_latency_ms(engine)
        except Exception as exc:
            results[engine.key].error = describe_error(exc)
            continue
        searches[engine.key] = _Search(start_qps=0.5 * max(1, workers) * 1e3 / max(est, 1e-3))
    min_qps = 1e3 / (20 * latency_bound_ms)
    active = dict(searches)
    for step in range(max_probes):
        for engine in engines:
            search = active.get(engine.key)
            if search is None:
                continue
            qps = search.next_qps(min_qps, rel_tol)
            if qps is None:
                del active[engine.key]
                continue
            # at least min_queries (p99 needs them) unless that would take over 4 probes' time
            count = int(min(max_queries, max(20, qps * probe_seconds,
                                             min(min_queries, 4 * qps * probe_seconds))))
            try:
                search.record(server_probe(engine, qps, count, latency_bound_ms, rng, workers))
            except Exception as exc:
                results[engine.key].error = describe_error(exc)
                del active[engine.key]
        if not active:
            break
        progress("server", step + 1, max_probes)
    progress("server", max_probes, max_probes)
    for key, search in searches.items():
        res = results[key]
        if res.error:
            continue
        final = search.best
        res.detail = {"latency_bound_ms": latency_bound_ms, "workers": max(1, workers),
                      "max_qps": final.target_qps if final else 0.0,
                      "achieved_qps": final.achieved_qps if final else 0.0,
                      "p99_at_max_ms": final.p99_ms if final else None,
                      "probes": [p.to_json() for p in search.probes]}
        if final is None:
            lowest = min(p.target_qps for p in search.probes)
            res.throughput_qps = 0.0
            res.note = (f"p99 above the {latency_bound_ms:g} ms bound even at "
                        f"{lowest:.3g} QPS")
            shown = min(search.probes, key=lambda p: p.target_qps)
        else:
            res.throughput_qps = final.target_qps
            shown = final
        res.latencies_ms = list(shown.latencies_ms)
        res.samples = len(shown.latencies_ms)
    return results


def _quick_latency_ms(engine: Workload, runs: int = 5) -> float:
    engine.run(engine.feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.run(engine.feeds)
        times.append((time.perf_counter() - started) * 1e3)
    return float(np.median(times))


def offline(engines: Sequence[Workload], *, samples: int = 64, batch_size: int = 8,
            workers: int = 2, rounds: int = 3, progress: Progress = _noop
            ) -> dict[str, ScenarioResult]:
    """Throughput with every sample available at once, in interleaved rounds.

    Each round processes ``samples`` samples: in batches of ``batch_size`` when the engine is
    batchable, else as single-sample requests, issued to ``workers`` threads. Throughput is the
    median over rounds of samples / wall time; latencies are per request (service time).
    """
    results = {e.key: ScenarioResult() for e in engines}
    walls: dict[str, list[float]] = {e.key: [] for e in engines}
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="kiln-offline")

    def timed(engine: Workload, feeds: Mapping[str, np.ndarray]) -> float:
        started = time.perf_counter()
        engine.run(feeds)
        return (time.perf_counter() - started) * 1e3

    try:
        for r in range(max(1, rounds)):
            for engine in engines:
                res = results[engine.key]
                if res.error:
                    continue
                if engine.batchable:
                    full, rest = divmod(samples, max(1, batch_size))
                    sizes = [batch_size] * full + ([rest] if rest else [])
                    jobs = [engine.batch_feeds(n) for n in sizes]
                else:
                    jobs = [dict(engine.feeds)] * samples
                try:
                    engine.run(jobs[0])  # untimed: settles the previous engine's threads
                    started = time.perf_counter()
                    futures = [pool.submit(timed, engine, feeds) for feeds in jobs]
                    res.latencies_ms.extend(f.result() for f in futures)
                    walls[engine.key].append(time.perf_counter() - started)
                except Exception as exc:
                    res.error = describe_error(exc)
            progress("offline", r + 1, rounds)
    finally:
        pool.shutdown(wait=True)
    for engine in engines:
        res = results[engine.key]
        res.detail = {"samples_per_round": samples, "rounds": len(walls[engine.key]),
                      "mode": "batch" if engine.batchable else "concurrent",
                      "batch_size": batch_size if engine.batchable else 1,
                      "workers": max(1, workers)}
        if walls[engine.key] and not res.error:
            res.throughput_qps = samples / float(np.median(walls[engine.key]))
            res.samples = samples * len(walls[engine.key])
    return results
