"""Runtime side of the int8 speed gate: time a model proto on a real backend.

``measure_on("onnxruntime" | "openvino", feeds)`` returns ``measure(model_proto) -> seconds``
for ``kiln.compiler.quantization.quantize_model(measure=...)``. onnxruntime and OpenVINO are
driven directly (as their own benchmark tools would), with the optimisation level and thread
count fixed so fp32 and int8 are timed alike. The median of repeated timed batches is returned;
the first runs (warm-up, kernel selection) are not timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np
import onnx

from kiln.errors import BackendUnavailableError, InputError

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[], object]
BACKENDS = ("onnxruntime", "openvino")


def onnxruntime_runner(proto: onnx.ModelProto, feeds: Feeds, threads: int | None) -> Runner:
    from kiln.compiler.reference import reference_session

    session = reference_session(proto, threads=threads)
    data = dict(feeds)
    return lambda: session.run(None, data)


def openvino_runner(proto: onnx.ModelProto, feeds: Feeds, threads: int | None,
                    precision: str = "f32") -> Runner:
    try:
        import openvino as ov
    except ImportError as exc:  # pragma: no cover - openvino is a dependency
        raise BackendUnavailableError("openvino is not installed: pip install openvino") from exc
    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    # Explicit: left alone, the CPU plugin runs bf16 on CPUs with AVX-512 BF16 or AMX, and
    # int8 would be timed against bf16 instead of the fp32 it replaces.
    config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    by_index = {}
    for i, port in enumerate(compiled.inputs):
        names = port.get_names()
        match = next((feeds[n] for n in names if n in feeds), None)
        if match is None:
            raise InputError(f"no feed for OpenVINO input {sorted(names)}")
        by_index[i] = match
    return lambda: request.infer(by_index)


def runner_for(backend: str, proto: onnx.ModelProto, feeds: Feeds,
               threads: int | None = None) -> Runner:
    if backend == "onnxruntime":
        return onnxruntime_runner(proto, feeds, threads)
    if backend == "openvino":
        return openvino_runner(proto, feeds, threads)
    raise InputError(f"the speed gate times on one of {BACKENDS}, not {backend!r}")


def time_runner(run: Runner, min_time: float = 0.2, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds per run over ``repeats`` batches of at least ``min_time`` each."""
    for _ in range(warmup):
        run()
    per_run = []
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while True:
            run()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        per_run.append(elapsed / count)
    return statistics.median(per_run)


def measure_on(backend: str, feeds: Feeds, threads: int | None = None,
               min_time: float = 0.2, repeats: int = 3) -> Callable[[onnx.ModelProto], float]:
    """A ``measure(model_proto) -> seconds`` callable for the speed gate."""

    def measure(proto: onnx.ModelProto) -> float:
        return time_runner(runner_for(backend, proto, feeds, threads), min_time, repeats)

    return measure


def measure_with_backend(name: str, feeds: Feeds, target: object, threads: int | None = None,
                         precision: str = "fp32", min_time: float = 0.2,
                         repeats: int = 3) -> Callable[[onnx.ModelProto], float]:
    """``measure`` through kiln's own backend ``name`` (onnxruntime, openvino, native...).

    Each candidate is compiled by the backend exactly as a Session would, then timed. Q/DQ
    models are compiled with precision "fp32": the int8 is in the graph itself.
    """
    import onnx_ir as ir

    from kiln.backends import registry
    from kiln.backends.base import CompileOptions

    backend = registry.require(name)
    options = CompileOptions(precision=precision, threads=threads)
    data = dict(feeds)

    def measure(proto: onnx.ModelProto) -> float:
        compiled = backend.compile(ir.serde.deserialize_model(proto), target, options)
        return time_runner(lambda: compiled.run(data), min_time, repeats)

    return measure
