"""The benchmark engine: every backend compiled from the same model, fed the same inputs, timed
in interleaved blocks so machine noise hits all alike, and checked against onnxruntime fp32.

Method (the same for every backend):
- compile each (backend, precision) pair; record compile time; a backend that cannot run here
  gets a row with status "unavailable" and the reason, a failure a row with status "error";
- warm-up runs per engine;
- ``rounds`` rounds; in each, every engine runs one untimed call (so the previous engine's
  pool threads have settled) and then ``block`` timed calls; engines take turns each round;
- latency percentiles over all timed calls; drift = outputs vs the onnxruntime fp32 reference.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kiln.backends import registry
from kiln.errors import KilnError
from kiln.runtime.session import Session, random_feeds

SCHEMA_VERSION = "1.0"
REFERENCE_BACKEND = "onnxruntime"


@dataclasses.dataclass
class BenchRow:
    backend: str
    precision: str
    status: str  # "ok" | "unavailable" | "error"
    reason: str = ""
    scenario: str = "single-stream"
    threads: int | None = None
    compile_s: float | None = None
    latency_ms: dict[str, float] | None = None
    throughput_qps: float | None = None
    samples: int = 0
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    cosine: float | None = None
    latencies_ms: list[float] = dataclasses.field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("latencies_ms")
        return data


@dataclasses.dataclass
class BenchConfig:
    backends: Sequence[str]
    precisions: Sequence[str] = ("fp32",)
    threads: int | None = None
    warmup: int = 3
    iterations: int = 20
    block: int = 5
    seed: int = 0
    session_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    data = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": float(np.percentile(data, 50)), "p90": float(np.percentile(data, 90)),
            "p99": float(np.percentile(data, 99)), "mean": float(data.mean()),
            "min": float(data.min())}


def drift(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max abs / max rel difference and cosine similarity over all outputs."""
    max_abs = max_rel = 0.0
    dots = ref_sq = got_sq = 0.0
    for name, ref in reference.items():
        a = np.asarray(ref, dtype=np.float64).ravel()
        b = np.asarray(got[name], dtype=np.float64).ravel()
        if a.size == 0:
            continue
        diff = np.abs(a - b)
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / np.maximum(np.abs(a), 1e-12)).max()))
        dots += float(a @ b)
        ref_sq += float(a @ a)
        got_sq += float(b @ b)
    cosine = dots / math.sqrt(ref_sq * got_sq) if ref_sq > 0 and got_sq > 0 else 1.0
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "cosine": cosine}


def run_bench(model: Any, config: BenchConfig, feeds: Mapping[str, np.ndarray] | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark ``model`` on every (backend, precision) of ``config``; returns the report."""
    say = progress or (lambda _msg: None)
    rows: list[BenchRow] = []
    engines: list[tuple[BenchRow, Session]] = []
    for backend in config.backends:
        for precision in config.precisions:
            row = BenchRow(backend, precision, "ok", threads=config.threads)
            rows.append(row)
            status = registry.availability(backend)
            if not status.ok:
                row.status, row.reason = "unavailable", status.reason
                continue
            say(f"compiling for {backend} ({precision})")
            try:
                started = time.perf_counter()
                session = Session(model, backend=backend, precision=precision,
                                  threads=config.threads, **dict(config.session_options))
                row.compile_s = time.perf_counter() - started
            except KilnError as exc:
                row.status, row.reason = "error", str(exc)
                continue
            engines.append((row, session))
    if not engines:
        return _report(model, config, rows)

    specs = engines[0][1].inputs
    if feeds is None:
        feeds = random_feeds(specs, seed=config.seed)
    reference = _reference_outputs(model, engines, feeds, config)

    live = []
    for row, session in engines:
        try:
            out = session(**feeds)
            for _ in range(max(0, config.warmup - 1)):
                session.run(None, feeds)
            if reference is not None:
                for key, value in drift(reference, out).items():
                    setattr(row, key, value)
            live.append((row, session))
        except KilnError as exc:
            row.status, row.reason = "error", str(exc)

    rounds = max(1, math.ceil(config.iterations / max(1, config.block)))
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}")
        for row, session in live:
            session.run(None, feeds)  # untimed: lets the previous engine's threads settle
            for _ in range(config.block):
                started = time.perf_counter()
                session.run(None, feeds)
                row.latencies_ms.append((time.perf_counter() - started) * 1e3)
    for row, _ in live:
        row.samples = len(row.latencies_ms)
        row.latency_ms = percentiles(row.latencies_ms)
        row.throughput_qps = 1e3 / row.latency_ms["mean"]
    return _report(model, config, rows)


def _reference_outputs(model: Any, engines: list[tuple[BenchRow, Session]],
                       feeds: Mapping[str, np.ndarray],
                       config: BenchConfig) -> dict[str, np.ndarray] | None:
    for row, session in engines:
        if row.backend == REFERENCE_BACKEND and row.precision == "fp32":
            return session(**feeds)
    if not registry.availability(REFERENCE_BACKEND).ok:
        return None
    return Session(model, backend=REFERENCE_BACKEND, threads=config.threads)(**feeds)


def _report(model: Any, config: BenchConfig, rows: list[BenchRow]) -> dict[str, Any]:
    from kiln import __version__
    from kiln.compiler.target import Target

    return {
        "schema_version": SCHEMA_VERSION,
        "kiln_version": __version__,
        "model": str(model) if isinstance(model, str) else type(model).__name__,
        "target": str(Target.detect()),
        "config": {"threads": config.threads, "warmup": config.warmup,
                   "iterations": config.iterations, "block": config.block, "seed": config.seed,
                   "precisions": list(config.precisions), "backends": list(config.backends)},
        "results": [row.to_json() for row in rows],
    }
