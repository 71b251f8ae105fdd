"""Per-node time on each backend that can say it, side by side, and one chrome trace.

Each backend measures with its own instrument, so the figures are that backend's own view:
- onnxruntime: its profiler (``SessionOptions.enable_profiling``, which the backend turns on
  for ``profile=True``); node events are ``<node>_kernel_time`` entries, and only those inside
  the last ``runs`` ``model_run`` windows are kept (earlier ones are warm-up);
- OpenVINO: the CPU plugin's performance counters (``PERF_COUNT=YES`` for ``profile=True``),
  read with ``InferRequest.get_profiling_info()`` after each run; nodes OpenVINO fused away
  are absent (their time is in the node they were fused into); layer names are OpenVINO's;
- native (or any backend): its ``CompiledModel.node_times``; a backend without per-node timers
  raises NoTimersError and its entry says so.

Each backend's ``CompiledModel.node_times`` reads its instrument; this module only lays the
figures side by side.

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

from kiln.backends.base import NoTimersError
from kiln.errors import BackendUnavailableError

#: What each backend's figures come from (the ``source`` of a profile entry).
_SOURCES = {"onnxruntime": "onnxruntime profiler", "openvino": "OpenVINO performance counters"}


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


def profile_session(session: Any, feeds: Mapping[str, np.ndarray], runs: int = 10,
                    pid: int = 0) -> tuple[str, list[tuple[str, str, float]],
                                           list[dict[str, Any]]]:
    """Run ``session`` (created with ``profile=True``) ``runs`` times; returns (source,
    samples, trace events). Raises NoTimersError when its backend has no per-node timers."""
    per_run = session.node_times(feeds, runs)
    samples, trace = [], []
    clock = 0.0
    for nodes in per_run:
        for node in nodes:
            start = clock + (node.start_us if node.start_us is not None else 0.0)
            samples.append((node.name, node.op, node.us))
            trace.append({"name": node.name, "cat": node.op, "ph": "X", "ts": start,
                          "dur": node.us, "pid": pid, "tid": 0, "args": {"op": node.op}})
            if node.start_us is None:  # durations only: lay the nodes end to end
                clock += node.us
        if nodes and nodes[-1].start_us is not None:
            clock += max(n.start_us + n.us for n in nodes)
        clock += 50.0  # a visible gap between runs
    return _SOURCES.get(session.backend, f"{session.backend} timers"), samples, trace


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
