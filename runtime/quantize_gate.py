"""Runtime side of the int8 speed gate: time a model proto on one of kiln's own backends.

``measure_with_backend("openvino", feeds, target)`` returns ``measure(model_proto) ->
seconds`` for ``kiln.compiler.quantization.quantize_model(measure=...)``. Each candidate is
compiled by the backend exactly as ``kiln.compile`` would (so fp32 and int8 are timed with the
same engine settings), then run; the median of repeated timed batches is returned, and the
first runs (warm-up, kernel selection) are not timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np
import onnx

from kiln.compiler.target import Target

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[], object]


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


def measure_with_backend(name: str, feeds: Feeds, target: Target | str = "auto",
                         threads: int | None = None, precision: str = "fp32",
                         min_time: float = 0.2,
                         repeats: int = 3) -> Callable[[onnx.ModelProto], float]:
    """``measure(model_proto) -> seconds`` through kiln's backend ``name`` (onnxruntime,
    openvino, native...). Q/DQ models are compiled with precision "fp32": the int8 is in the
    graph itself. Feeds the model does not take are an InputError (``check_feeds``)."""
    import onnx_ir as ir

    from kiln.backends import registry
    from kiln.backends.base import CompileOptions
    from kiln.compiler.pipeline import DEFAULT_LEVEL, after_reduction
    from kiln.runtime.feeds import check_feeds

    backend = registry.require(name)
    options = CompileOptions(precision=precision, threads=threads)
    target = Target.parse(target)
    data = dict(feeds)

    steps = after_reduction(DEFAULT_LEVEL, backend.caps())

    def measure(proto: onnx.ModelProto) -> float:
        model = ir.serde.deserialize_model(proto)
        for _, step in steps:  # what kiln.compile runs after a reduction (the kernel ops)
            model = step(model).model
        compiled = backend.compile(model, target, options)
        checked = check_feeds(compiled.inputs, data)
        return time_runner(lambda: compiled.run(checked), min_time, repeats)

    return measure
