"""A Session over a pruned / int8 / fp16 / bf16 model: the glue between the compiler's
``reduce_model`` and the runtime.

    session, result = reduced_session("model.onnx", backend="openvino", precision="int8",
                                      calibration="calib/", max_accuracy_drop=0.01,
                                      speed_gate=True)
    print("\\n".join(result.lines()))      # the compile report
    session.run(None, feeds)

``kiln.Session`` does the work (imported, optimized to standard ONNX for the target, reduced
by ``kiln.compiler.reduce.reduce_model``, compiled; the speed gate times candidates on the
session's own backend); this is the ``kiln compile`` spelling that returns the report too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from kiln.compiler.reduce import ReduceResult
from kiln.compiler.target import Target


def reduced_session(model: Any, backend: str = "auto", target: str | Target = "auto",
                    precision: str = "int8", *, calibration: Any = None,
                    calibration_method: str = "percentile", quantization_mode: str = "auto",
                    exclude: Collection[str] = (), max_accuracy_drop: float | None = None,
                    prune: str | None = None, speed_gate: bool = False,
                    eval_samples: Sequence[Mapping[str, np.ndarray]] | None = None,
                    threads: int | None = None, opt_level: int = 2) -> tuple[Any, ReduceResult]:
    """Build ``(Session, ReduceResult)``; arguments as in ``kiln compile`` (see reduce_model).

    The Session does the reduction; this asks it to convert the graph even for a precision
    the backend could apply by itself, so the compile always has its report.
    """
    from kiln.runtime.session import Session

    session = Session(model, backend=backend, target=target, precision=precision,
                      threads=threads, opt_level=opt_level, calibration=calibration,
                      calibration_method=calibration_method,
                      quantization_mode=quantization_mode, exclude=tuple(exclude),
                      max_accuracy_drop=max_accuracy_drop, prune=prune, speed_gate=speed_gate,
                      eval_samples=eval_samples, convert_precision=True)
    if session.reduction is None:  # the graph already carried the precision
        session.reduction = ReduceResult(session.model)
    return session, session.reduction
