"""The benchmark engine: every (backend, precision) pair compiled from the same model, fed the
same inputs, run through the same MLPerf-style scenarios (``kiln.runtime.scenarios``), and
checked against onnxruntime fp32 (a .kiln artifact: against its stored graph at its own precision
on onnxruntime, kiln-domain ops written back as standard ONNX).

Method (the same for every engine):
- compile each pair; record load time (reading the model or artifact), compile time, the peak
  RSS while opening it above the RSS before (engines opened earlier stay resident, so a
  process-wide peak would grow with the order) and the RSS the engine kept. A backend that
  cannot run here gets rows with status "unavailable" and the reason, a failure rows with
  status "error" and the message; the run
  goes on with the others;
- one checked run on the bench feeds (drift vs the reference: max abs, max rel, cosine, top-1
  agreement for classifier-shaped outputs), then ``warmup - 1`` more warm-up runs;
- each requested scenario, engines interleaved round by round;
- with ``startup`` (``kiln bench --startup``): each engine opened again in fresh processes
  (``kiln.runtime.bench_startup``), cold from the model and warm from the .kiln it saves: time
  to first inference and peak RSS above the RSS after imports, no engine inheriting another's.

The report is a JSON-able dict whose layout ``docs/bench_schema.json`` documents;
``SCHEMA_VERSION`` changes whenever that layout does.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import resource
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.backends import registry
from kiln.errors import InputError, KilnError
from kiln.runtime import scenarios
from kiln.runtime.bench_startup import measure_startup, status_mb, write_feeds
from kiln.runtime.scenarios import SCENARIOS, Workload, describe_error, percentiles

#: 1.0: single-stream rows. 1.1: scenarios, load/RSS/artifact fields, top-1, scenario detail.
#: 1.2: start-up in fresh processes (first_run_{cold,warm}_s, peak_{cold,warm}_mb).
SCHEMA_VERSION = "1.2"
REFERENCE_BACKEND = "onnxruntime"
__all__ = ["SCENARIOS", "BenchConfig", "BenchRow", "drift", "load_inputs", "percentiles",
           "run_bench"]


@dataclasses.dataclass
class BenchRow:
    """One (backend, precision, scenario) result. Latencies in ms, throughput in samples/s."""

    backend: str
    precision: str
    status: str  # "ok" | "unavailable" | "error"
    reason: str = ""
    scenario: str = "single-stream"
    threads: int | None = None
    load_s: float | None = None
    compile_s: float | None = None
    peak_rss_mb: float | None = None
    rss_growth_mb: float | None = None
    artifact_bytes: int | None = None
    first_run_cold_s: float | None = None
    first_run_warm_s: float | None = None
    peak_cold_mb: float | None = None
    peak_warm_mb: float | None = None
    latency_ms: dict[str, float] | None = None
    throughput_qps: float | None = None
    samples: int = 0
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    latencies_ms: list[float] = dataclasses.field(default_factory=list, repr=False)

    def to_json(self, with_samples: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_samples:
            data.pop("latencies_ms")
        return data


@dataclasses.dataclass
class BenchConfig:
    """What to run and how. See ``kiln bench --help`` for the meaning of each knob."""

    backends: Sequence[str]
    precisions: Sequence[str] = ("fp32",)
    scenarios: Sequence[str] = ("single-stream",)
    threads: int | None = None
    warmup: int = 3
    iterations: int = 20
    block: int = 5
    seed: int = 0
    workers: int | None = None            # concurrent requests (multi-stream/server/offline)
    multi_stream_samples: int = 8
    latency_bound_ms: float = 15.0
    server_probe_seconds: float = 1.0
    server_max_probes: int = 8
    offline_samples: int = 64
    offline_batch: int = 8
    offline_rounds: int = 3
    baseline: str = "onnxruntime/fp32"
    dims: Mapping[str, int] = dataclasses.field(default_factory=dict)  # symbolic dim sizes
    startup: bool = False  # cold/warm start-up of each engine in fresh processes
    session_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise KilnError(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}"
                            " or 'all'")
        for name in ("warmup", "iterations", "block", "multi_stream_samples", "offline_samples",
                     "offline_batch", "offline_rounds", "server_max_probes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "warmup" else 1):
                raise KilnError(f"{name.replace('_', '-')} must be a positive integer, "
                                f"not {value!r}")
        if not self.latency_bound_ms > 0 or not self.server_probe_seconds > 0:
            raise KilnError("latency bound and server probe seconds must be positive")
        if self.workers is not None and self.workers < 1:
            raise KilnError(f"workers must be a positive integer, not {self.workers}")

    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["session_options"] = {k: repr(v) for k, v in self.session_options.items()}
        data["dims"] = dict(self.dims)
        data["workers"] = self.worker_count()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def drift(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Max abs / max rel difference, cosine similarity over all float outputs, and top-1
    agreement over the classifier-shaped ones (None when there are none)."""
    max_abs = max_rel = 0.0
    dots = ref_sq = got_sq = 0.0
    agree = total = 0
    for name, ref in reference.items():
        if name not in got:
            raise KilnError(f"output '{name}' is missing from the engine's results")
        a = np.asarray(ref, dtype=np.float64)
        b = np.asarray(got[name], dtype=np.float64)
        if a.shape != b.shape:
            raise KilnError(f"output '{name}' has shape {list(b.shape)}, the reference "
                            f"{list(a.shape)}")
        if a.size == 0:
            continue
        diff = np.abs(a - b).ravel()
        one_nan = np.isnan(a.ravel()) != np.isnan(b.ravel())
        diff[np.isnan(diff)] = 0.0  # NaN on both sides agrees
        diff[one_nan] = math.inf    # NaN on one side only is infinitely far off
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / np.maximum(np.abs(a.ravel()), 1e-12)).max()))
        dots += float(a.ravel() @ b.ravel())
        ref_sq += float(a.ravel() @ a.ravel())
        got_sq += float(b.ravel() @ b.ravel())
        scores, got_scores = _class_scores(a), _class_scores(b)
        if scores is not None and got_scores is not None and np.asarray(ref).dtype.kind == "f":
            # tie-aware: the engine agrees when its top class is one of the reference's top
            top_got = got_scores.argmax(axis=-1)
            picked = np.take_along_axis(scores, top_got[:, None], axis=-1)[:, 0]
            agree += int((picked == scores.max(axis=-1)).sum())
            total += top_got.size
    both = ref_sq > 0 and got_sq > 0
    cosine = dots / math.sqrt(ref_sq * got_sq) if both else (1.0 if ref_sq == got_sq else 0.0)
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel,
            "cosine": cosine if math.isfinite(cosine) else None,
            "top1_agreement": agree / total if total else None}


def _class_scores(value: np.ndarray) -> np.ndarray | None:
    """``value`` as [rows, classes] when it looks like classifier scores: after dropping
    size-1 axes past the first it is [N, C] (or [C]) with C >= 2."""
    if value.ndim == 0:
        return None
    if value.ndim == 1:
        dims = [1, value.shape[0]]
    else:
        dims = [value.shape[0]] + [d for d in value.shape[1:] if d != 1]
    if len(dims) != 2 or dims[1] < 2:
        return None
    return value.reshape(dims)


def load_inputs(path: str | os.PathLike, specs: Sequence[Any]) -> dict[str, np.ndarray]:
    """Feeds from a ``.npz`` (one array per input name) or a ``.npy`` (one-input models)."""
    path = Path(path)
    names = [s.name for s in specs]
    if not path.is_file():
        raise InputError(f"--inputs {path}: no such file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                feeds = {k: data[k] for k in data.files}
        elif path.suffix == ".npy":
            if len(names) != 1:
                raise InputError(f"--inputs {path}: a .npy holds one array, but the model has "
                                 f"{len(names)} inputs {names}; use a .npz keyed by name")
            feeds = {names[0]: np.load(path, allow_pickle=False)}
        else:
            raise InputError(f"--inputs {path}: expected a .npz or .npy file")
    except (OSError, ValueError) as exc:
        raise InputError(f"--inputs {path}: cannot read it: {exc}") from exc
    from kiln.runtime.feeds import check_feeds

    return check_feeds(specs, feeds)


# -- memory ------------------------------------------------------------------------------------

def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False when it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    peak = status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- engines ---------------------------------------------------------------------------------

@dataclasses.dataclass
class _Engine:
    backend: str
    precision: str
    session: Any = None
    load_s: float | None = None
    compile_s: float | None = None
    peak_rss_mb: float | None = None
    rss_growth_mb: float | None = None
    artifact_bytes: int | None = None
    startup: dict[str, Any] = dataclasses.field(default_factory=dict)
    drift: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "ok"
    reason: str = ""

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.precision}"

    def row(self, scenario: str, threads: int | None) -> BenchRow:
        return BenchRow(self.backend, self.precision, self.status, self.reason, scenario,
                        threads, self.load_s, self.compile_s, self.peak_rss_mb,
                        self.rss_growth_mb, self.artifact_bytes, **self.startup, **self.drift)


def is_artifact(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".kiln"


def _artifact_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _private(model: Any) -> Any:
    """Session optimizes an IR model it is given in place: each engine gets its own copy."""
    import onnx_ir as ir

    if isinstance(model, ir.Model):
        return ir.serde.deserialize_model(ir.serde.serialize_model(model))
    return model


def _open(model: Any, backend: str, precision: str, config: BenchConfig) -> _Engine:
    """Import (or load) and compile one engine, measuring time and memory."""
    engine = _Engine(backend, precision)
    # Engines opened earlier stay resident: the peak is counted above the RSS before this one
    # opened, and only when the peak mark could be reset (else it would inherit theirs).
    reset = _reset_peak_rss()
    before = status_mb("VmRSS")
    from kiln.runtime.session import Session

    if is_artifact(model):
        # an artifact's own backend reuses its blobs when they fit; others rebuild from its
        # optimized graph, and rebuild_reason says why
        session = Session(model, backend=backend, threads=config.threads,
                          **dict(config.session_options))
        engine.reason = session.rebuild_reason or ""
        engine.artifact_bytes = _artifact_size(Path(model))
        engine.precision = session.options.precision
    else:
        session = Session(_private(model), backend=backend, precision=precision,
                          threads=config.threads, **dict(config.session_options))
    engine.load_s = session.import_seconds
    engine.compile_s = session.compile_seconds
    engine.session = session
    after = status_mb("VmRSS")
    if before is not None and after is not None:
        engine.rss_growth_mb = after - before
        engine.peak_rss_mb = _peak_rss_mb() - before if reset else None
    return engine


def _batchable(specs: Sequence[Any]) -> bool:
    return bool(specs) and all(s.shape and not isinstance(s.shape[0], int) for s in specs)


def _reference(model: Any, engines: Sequence[_Engine], feeds: Mapping[str, np.ndarray],
               config: BenchConfig, precision: str = "fp32"
               ) -> tuple[dict[str, np.ndarray] | None, str]:
    """Outputs of onnxruntime at ``precision`` on ``feeds`` (an artifact: its own graph at
    its own precision), and a note when there are none."""
    for engine in engines:
        if engine.backend == REFERENCE_BACKEND and engine.precision == precision:
            return engine.session(**feeds), ""
    if not registry.availability(REFERENCE_BACKEND).ok:
        return None, f"no drift: {REFERENCE_BACKEND} is unavailable"
    from kiln.runtime.session import Session

    # an artifact's stored graph loads on onnxruntime with its kiln-domain ops written back
    # as standard ONNX (kiln.runtime.compile.artifact_graph)
    source = model if is_artifact(model) else _private(model)
    try:
        return Session(source, backend=REFERENCE_BACKEND, threads=config.threads)(**feeds), ""
    except KilnError as exc:
        return None, f"no drift: the reference failed: {exc}"


ProgressFn = Callable[[str, int, int], None]


def run_bench(model: Any, config: BenchConfig, feeds: Mapping[str, np.ndarray] | None = None,
              progress: ProgressFn | None = None, inputs_path: str | None = None
              ) -> dict[str, Any]:
    """Benchmark ``model`` (path, bytes, ModelProto, IR model or .kiln artifact path) on every
    (backend, precision) of ``config`` in every scenario; returns the report dict.

    ``feeds`` (or ``inputs_path``, a .npz/.npy) are the inputs every engine gets; seeded random
    ones (``config.seed``) when neither is given. ``progress(phase, done, total)`` is called
    as work advances.
    """
    config.check()
    say = progress or (lambda _phase, _done, _total: None)
    backends = list(dict.fromkeys(config.backends))
    pairs = [(b, p) for b in backends for p in dict.fromkeys(config.precisions)]
    if is_artifact(model):  # an artifact's precision is baked into its graph
        pairs = [(b, "artifact") for b in backends]
    engines: list[_Engine] = []
    sized = None  # how random feeds size symbolic dims: known after the first engine opens
    for i, (backend, precision) in enumerate(pairs):
        say("compile", i, len(pairs))
        status = registry.availability(backend)
        if not status.ok:
            engines.append(_Engine(backend, precision, status="unavailable",
                                   reason=status.reason))
            continue
        try:
            engines.append(_open(model, backend, precision, config))
        except Exception as exc:
            engines.append(_Engine(backend, precision, status="error",
                                   reason=describe_error(exc)))
            continue
        if feeds is None and inputs_path is None and sized is None:
            # a dim nobody sized stops the run now, not after every backend has compiled
            from kiln.runtime.input_dims import resolve_input_dims

            session = engines[-1].session
            sized = resolve_input_dims(session.inputs, session.model, config.dims)
    say("compile", len(pairs), len(pairs))
    live = [e for e in engines if e.status == "ok"]
    notes: list[str] = []
    input_info: list[dict[str, Any]] = []
    batchable = False
    reference_precision = "fp32"
    if live and is_artifact(model):  # its precision is the artifact's: compare like with like
        reference_precision = live[0].session.options.precision
        config = _artifact_baseline(config, engines)
    if live:
        specs = live[0].session.inputs
        if feeds is None and inputs_path is not None:
            feeds = load_inputs(inputs_path, specs)
            source = str(inputs_path)
        elif feeds is None:
            from kiln.runtime.session import random_feeds

            assert sized is not None  # set when the first live engine opened
            notes.extend(sized.notes)
            feeds = random_feeds(sized.specs(specs), seed=config.seed)
            source = f"random(seed={config.seed})"
        else:
            source = "given"
        input_info = [{"name": k, "dtype": v.dtype.name, "shape": list(v.shape),
                       "source": source} for k, v in feeds.items()]
        reference, note = _reference(model, live, feeds, config, reference_precision)
        if note:
            notes.append(note)
        elif is_artifact(model):
            notes.append("drift is against the artifact's stored graph as standard ONNX (kiln "
                         f"ops expanded) on {REFERENCE_BACKEND}: its passes and precision "
                         "included, the file it was compiled from not")
        for i, engine in enumerate(live):
            say("warm-up", i, len(live))
            try:
                out = engine.session(**feeds)
                for _ in range(max(0, config.warmup - 1)):
                    engine.session.run(None, feeds)
                if reference is not None:
                    engine.drift = drift(reference, out)
                    if not math.isfinite(engine.drift["max_abs_diff"]):
                        engine.reason = "outputs hold NaN/Inf where the reference does not"
            except Exception as exc:
                engine.status, engine.reason = "error", describe_error(exc)
                if sized is not None:
                    engine.reason = sized.explain(engine.reason)
        say("warm-up", len(live), len(live))
        live = [e for e in live if e.status == "ok"]
        batchable = _batchable(specs)
    rows: list[BenchRow] = []
    by_scenario: dict[str, dict[str, scenarios.ScenarioResult]] = {}
    workloads = [Workload(e.key, _runner(e.session), feeds or {}, batchable) for e in live]
    estimates: dict[str, float] = {}
    for scenario in config.scenarios:
        if not workloads:
            break
        results = _run_scenario(scenario, workloads, config, estimates, say)
        by_scenario[scenario] = results
        if scenario == "single-stream":
            estimates = {k: float(np.median(r.latencies_ms)) for k, r in results.items()
                         if r.latencies_ms}
    if config.startup and feeds is not None:
        _measure_startup(model, live, config, feeds, say, notes)
    for engine in engines:
        for scenario in config.scenarios:
            row = engine.row(scenario, config.threads)
            res = by_scenario.get(scenario, {}).get(engine.key)
            if res is not None:
                _fill(row, res)
            rows.append(row)
    return _report(model, config, rows, input_info, notes, reference_precision)


def _measure_startup(model: Any, engines: Sequence[_Engine], config: BenchConfig,
                     feeds: Mapping[str, np.ndarray], say: ProgressFn, notes: list[str]) -> None:
    """Each engine's cold and warm start in fresh processes (``kiln.runtime.bench_startup``),
    into ``engine.startup``; a failure becomes a note, the bench's other figures stand."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kiln-bench-model-") as tmp:
        path = _model_file(model, Path(tmp))
        feeds_path = write_feeds(Path(tmp), feeds)  # once: every engine's children read it
        for i, engine in enumerate(engines):
            say("start-up", i, len(engines))
            precision = None if engine.precision == "artifact" or is_artifact(path) \
                else engine.precision
            figures = measure_startup(path, engine.backend, precision, config.threads,
                                      config.session_options, feeds_path)
            for kind in ("cold", "warm"):
                got = figures.get(kind)
                if not got:
                    continue
                if "error" in got:
                    notes.append(f"{engine.key} {kind} start-up: {got['error']}")
                    continue
                engine.startup[f"first_run_{kind}_s"] = got["first_run_s"]
                engine.startup[f"peak_{kind}_mb"] = got["peak_mb"]
        say("start-up", len(engines), len(engines))


def _model_file(model: Any, folder: Path) -> str:
    """``model`` as a path a child process can open (written to ``folder`` when it is not
    one already)."""
    if isinstance(model, (str, os.PathLike)):
        return str(Path(model).resolve())
    import onnx
    import onnx_ir as ir

    if isinstance(model, ir.Model):
        data = ir.to_proto(model).SerializeToString()
    elif isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
    else:
        data = bytes(model)
    path = folder / "model.onnx"
    path.write_bytes(data)
    return str(path)


def _artifact_baseline(config: BenchConfig, engines: Sequence[_Engine]) -> BenchConfig:
    """An artifact runs at the precision it was compiled for: a baseline backend named at
    another precision ("onnxruntime/fp32" for an int8 artifact) means that backend's row."""
    backend, _, precision = config.baseline.partition("/")
    rows = [e for e in engines if e.backend == backend and e.status == "ok"]
    if rows and not any(e.precision == precision for e in rows):
        return dataclasses.replace(config, baseline=f"{backend}/{rows[0].precision}")
    return config


def _runner(session: Any) -> Callable[[Mapping[str, np.ndarray]], Any]:
    def run(feeds: Mapping[str, np.ndarray]) -> Any:
        return session.run(None, feeds)
    return run


def _run_scenario(scenario: str, workloads: list[Workload], config: BenchConfig,
                  estimates: Mapping[str, float], say: ProgressFn
                  ) -> dict[str, scenarios.ScenarioResult]:
    workers = config.worker_count()
    if scenario == "single-stream":
        return scenarios.single_stream(workloads, iterations=config.iterations,
                                       block=config.block, progress=say)
    if scenario == "multi-stream":
        return scenarios.multi_stream(workloads, samples_per_query=config.multi_stream_samples,
                                      iterations=config.iterations, block=config.block,
                                      workers=workers, progress=say)
    if scenario == "server":
        return scenarios.server(workloads, latency_bound_ms=config.latency_bound_ms,
                                estimate_ms=estimates, probe_seconds=config.server_probe_seconds,
                                max_probes=config.server_max_probes, workers=workers,
                                seed=config.seed, progress=say)
    return scenarios.offline(workloads, samples=config.offline_samples,
                             batch_size=config.offline_batch, workers=workers,
                             rounds=config.offline_rounds, progress=say)


def _fill(row: BenchRow, res: scenarios.ScenarioResult) -> None:
    row.detail = res.detail
    if res.error:
        row.status, row.reason = "error", res.error
        return
    row.latencies_ms = [round(x, 4) for x in res.latencies_ms]
    row.samples = res.samples
    row.throughput_qps = res.throughput_qps
    row.reason = "; ".join(text for text in (row.reason, res.note) if text)
    if res.latencies_ms:
        row.latency_ms = percentiles(res.latencies_ms)


def _report(model: Any, config: BenchConfig, rows: list[BenchRow],
            input_info: list[dict[str, Any]], notes: list[str],
            reference_precision: str = "fp32") -> dict[str, Any]:
    from kiln import __version__
    from kiln.compiler.target import Target

    versions = {}
    for name in dict.fromkeys(config.backends):
        status = registry.availability(name)
        versions[name] = status.version
    model_info: dict[str, Any] = {"name": type(model).__name__, "path": None,
                                  "artifact": is_artifact(model)}
    if isinstance(model, (str, os.PathLike)):
        model_info.update(name=Path(model).name, path=str(model))
        if Path(model).exists():
            model_info["bytes"] = _artifact_size(Path(model))
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "schema_version": SCHEMA_VERSION,
        "kiln_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model_info,
        "machine": {"target": str(Target.detect()), "cpu_count": os.cpu_count(),
                    "load_average": load, "python": platform.python_version(),
                    "platform": platform.platform(), "backend_versions": versions},
        "config": config.to_json(),
        "reference": {"backend": REFERENCE_BACKEND, "precision": reference_precision},
        "inputs": input_info,
        "notes": notes,
        "results": [_finite(row.to_json()) for row in rows],
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def baseline_row(report: Mapping[str, Any], scenario: str) -> Mapping[str, Any] | None:
    """The ok row of ``config.baseline`` ("backend/precision") in ``scenario``, if any."""
    backend, _, precision = str(report["config"].get("baseline", "")).partition("/")
    for row in report["results"]:
        if (row["scenario"] == scenario and row["status"] == "ok" and row["backend"] == backend
                and row["precision"] == (precision or "fp32")):
            return row
    return None


def score(row: Mapping[str, Any]) -> float | None:
    """Higher is better: 1/p50 for latency scenarios, throughput for server and offline."""
    if row["status"] != "ok":
        return None
    if row["scenario"] in ("server", "offline"):
        return row.get("throughput_qps") or None
    lat = row.get("latency_ms")
    return 1e3 / lat["p50"] if lat and lat["p50"] > 0 else None
