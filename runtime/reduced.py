"""A Session over a pruned / int8 / fp16 / bf16 model: the glue between the compiler's
``reduce_model`` and the runtime.

    session, result = reduced_session("model.onnx", backend="openvino", precision="int8",
                                      calibration="calib/", max_accuracy_drop=0.01,
                                      speed_gate=True)
    print("\\n".join(result.lines()))      # the compile report
    session.run(None, feeds)

The model is imported and optimized (O2 for the target, standard ONNX out), then reduced by
``kiln.compiler.reduce.reduce_model``; the speed gate, when asked for, times candidates on the
session's own backend through kiln's backend interface (so it works for onnxruntime, OpenVINO
and native alike). The reduced graph goes to the Session at opt level 0: its Q/DQ pairs and
Casts are final and no later fusion may move them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from kiln.compiler.reduce import ReduceResult, reduce_model
from kiln.compiler.target import Target


def reduced_session(model: Any, backend: str = "auto", target: str | Target = "auto",
                    precision: str = "int8", *, calibration: Any = None,
                    calibration_method: str = "percentile", quantization_mode: str = "auto",
                    exclude: Collection[str] = (), max_accuracy_drop: float | None = None,
                    prune: str | None = None, speed_gate: bool = False,
                    eval_samples: Sequence[Mapping[str, np.ndarray]] | None = None,
                    threads: int | None = None, opt_level: int = 2) -> tuple[Any, ReduceResult]:
    """Build ``(Session, ReduceResult)``; arguments as in ``kiln compile`` (see reduce_model).
    """
    import onnx_ir as ir

    from kiln.backends import registry
    from kiln.compiler.frontend import import_model
    from kiln.compiler.pipeline import optimize
    from kiln.runtime.quantize_gate import measure_with_backend
    from kiln.runtime.session import Session

    tgt = Target.parse(target)
    name = registry.choose_auto(tgt)[0] if backend == "auto" else backend
    ir_model = model if isinstance(model, ir.Model) else import_model(model)
    ir_model, _ = optimize(ir_model, opt_level, tgt)
    measure = None
    if speed_gate:
        from kiln.compiler import calibrate

        feeds = None
        if eval_samples:
            feeds = dict(eval_samples[0])
        elif calibration is not None and not isinstance(calibration, str):
            feeds = dict(next(iter(calibration)))
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", calibrate.RandomCalibrationWarning)
                feeds = calibrate.random_samples(ir_model, 1)[0]
        measure = measure_with_backend(name, feeds, tgt, threads)
    result = reduce_model(ir_model, tgt, precision=precision, calibration=calibration,
                          calibration_method=calibration_method,
                          quantization_mode=quantization_mode, exclude=exclude,
                          max_accuracy_drop=max_accuracy_drop, prune=prune,
                          eval_samples=eval_samples, measure=measure,
                          dynamic_form=registry.get_backend(name).caps().dynamic_int8)
    session = Session(result.model, backend=name, target=tgt,
                      precision=precision if precision != "fp32" else "fp32",
                      threads=threads, opt_level=0)
    return session, result
