"""Per-node time on each backend that can say it, side by side, and one chrome trace.

Each backend measures with its own instrument, so the figures are that backend's own view:
- onnxruntime: its profiler (``SessionOptions.enable_profiling``, which the backend turns on
  for ``profile=True``); node events are ``<node>_kernel_time`` entries, and only those inside
  the last ``runs`` ``model_run`` windows are kept (earlier ones are warm-up);
- OpenVINO: the CPU plugin's performance counters (``PERF_COUNT=YES`` for ``profile=True``),
  read with ``InferRequest.get_profiling_info()`` after each run; nodes OpenVINO fused away
  are absent (their time is in the node they were fused into); layer names are OpenVINO's;
- native (or any backend): a compiled model that times its own nodes exposes
  ``profile_nodes() -> list[dict(name=..., op=..., us=...)]`` for its last run; without it the
  backend's entry says so.

The trace is the Chrome trace-event format (``chrome://tracing``, Perfetto): one process per
backend, one complete ("X") event per node per run, OpenVINO's laid end to end as it reports
durations only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import BackendUnavailableError, KilnError


class NoTimersError(KilnError):
    """The backend runs the model but cannot time its nodes."""


def _aggregate(samples: Sequence[tuple[str, str, float]], runs: int) -> list[dict[str, Any]]:
    """(node, op, us) samples -> per node mean per run, slowest first."""
    totals: dict[str, list[Any]] = {}
    for name, op, us in samples:
        entry = totals.setdefault(name, [op, 0.0, 0])
        entry[1] += us
        entry[2] += 1
    nodes = [{"name": name, "op": op, "mean_us": total / max(runs, 1), "calls": calls}
             for name, (op, total, calls) in totals.items()]
    return sorted(nodes, key=lambda n: n["mean_us"], reverse=True)


def by_op(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Node figures summed per op type, slowest first."""
    ops: dict[str, float] = {}
    for node in nodes:
        ops[node["op"]] = ops.get(node["op"], 0.0) + node["mean_us"]
    return [{"op": op, "mean_us": us} for op, us in sorted(ops.items(), key=lambda x: -x[1])]


def _onnxruntime(session: Any, feeds: Mapping[str, np.ndarray], runs: int, pid: int
                 ) -> tuple[list[tuple[str, str, float]], list[dict[str, Any]]]:
    compiled = session._compiled
    for _ in range(runs):
        session.run(None, feeds)
    path = compiled.session.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        Path(path).unlink(missing_ok=True)
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    start = windows[0][0] if windows else 0
    samples, trace = [], []
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if windows and not any(lo <= e["ts"] <= hi for lo, hi in windows):
            continue
        name = e["name"].removesuffix("_kernel_time")
        op = e.get("args", {}).get("op_name", "?")
        samples.append((name, op, float(e["dur"])))
        trace.append({"name": name, "cat": op, "ph": "X", "ts": e["ts"] - start,
                      "dur": e["dur"], "pid": pid, "tid": 0, "args": {"op": op}})
    return samples, trace


def _openvino(session: Any, feeds: Mapping[str, np.ndarray], runs: int, pid: int
              ) -> tuple[list[tuple[str, str, float]], list[dict[str, Any]]]:
    compiled = session._compiled
    samples, trace = [], []
    clock = 0.0
    for _ in range(runs):
        session.run(None, feeds)
        for info in compiled._request().get_profiling_info():
            if "EXECUTED" not in str(info.status):
                continue
            us = info.real_time.total_seconds() * 1e6
            op = f"{info.node_type}" + (f" ({info.exec_type})" if info.exec_type else "")
            samples.append((info.node_name, info.node_type, us))
            trace.append({"name": info.node_name, "cat": info.node_type, "ph": "X",
                          "ts": clock, "dur": us, "pid": pid, "tid": 0,
                          "args": {"op": op}})
            clock += us
        clock += 50.0  # a visible gap between runs
    return samples, trace


def _own_timers(session: Any, feeds: Mapping[str, np.ndarray], runs: int, pid: int
                ) -> tuple[list[tuple[str, str, float]], list[dict[str, Any]]]:
    compiled = session._compiled
    samples, trace = [], []
    clock = 0.0
    for _ in range(runs):
        session.run(None, feeds)
        for node in compiled.profile_nodes():
            us = float(node["us"])
            samples.append((str(node["name"]), str(node["op"]), us))
            trace.append({"name": str(node["name"]), "cat": str(node["op"]), "ph": "X",
                          "ts": clock, "dur": us, "pid": pid, "tid": 0,
                          "args": {"op": str(node["op"])}})
            clock += us
        clock += 50.0
    return samples, trace


def profile_session(session: Any, feeds: Mapping[str, np.ndarray], runs: int = 10,
                    pid: int = 0) -> tuple[str, list[tuple[str, str, float]],
                                           list[dict[str, Any]]]:
    """Run ``session`` (created with ``profile=True``) ``runs`` times; returns (source,
    samples, trace events). Raises NoTimersError when its backend has no per-node timers."""
    compiled = session._compiled
    if hasattr(compiled, "profile_nodes"):
        return (f"{session.backend} timers",) + _own_timers(session, feeds, runs, pid)
    if session.backend == "onnxruntime":
        return ("onnxruntime profiler",) + _onnxruntime(session, feeds, runs, pid)
    if session.backend == "openvino":
        return ("OpenVINO performance counters",) + _openvino(session, feeds, runs, pid)
    raise NoTimersError(f"the {session.backend} backend exposes no per-node timers yet")


def profile_backends(model: Any, pairs: Sequence[tuple[str, str]], *, threads: int | None = None,
                     seed: int = 0, inputs_path: str | None = None,
                     feeds: Mapping[str, np.ndarray] | None = None,
                     dims: Mapping[str, int] | None = None, runs: int = 10, warmup: int = 3,
                     trace_out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Profile ``model`` on each (backend, precision); returns {"trace", "backends": [...]}
    (docs/bench_schema.json ``profile``) and writes the chrome trace to ``trace_out``."""
    from kiln.runtime.bench import load_inputs
    from kiln.runtime.scenarios import describe_error
    from kiln.runtime.session import Session, random_feeds

    entries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for pid, (backend, precision) in enumerate(pairs, start=1):
        entry: dict[str, Any] = {"backend": backend, "precision": precision, "status": "ok",
                                 "reason": "", "nodes": [], "runs": runs}
        entries.append(entry)
        try:
            session = Session(model, backend=backend, precision=precision, threads=threads,
                              profile=True)
            if feeds is None:
                feeds = load_inputs(inputs_path, session.inputs) if inputs_path else \
                    random_feeds(session.inputs, seed=seed, dims=dims)
            for _ in range(warmup):
                session.run(None, feeds)
            source, samples, trace = profile_session(session, feeds, runs, pid)
        except (BackendUnavailableError, NoTimersError) as exc:
            entry["status"], entry["reason"] = "unavailable", str(exc)
            continue
        except Exception as exc:  # one backend failing must not stop the others
            entry["status"], entry["reason"] = "error", describe_error(exc)
            continue
        entry["source"] = source
        entry["nodes"] = _aggregate(samples, runs)
        entry["ops"] = by_op(entry["nodes"])
        entry["total_us"] = sum(n["mean_us"] for n in entry["nodes"])
        events.append({"name": "process_name", "ph": "M", "pid": pid,
                       "args": {"name": f"{backend}/{precision} ({source})"}})
        events.extend(trace)
    if trace_out is not None:
        Path(trace_out).write_text(json.dumps({"traceEvents": events,
                                               "displayTimeUnit": "ms"}))
    return {"trace": None if trace_out is None else str(trace_out), "backends": entries}
