"""Whether an engine computes a quantized graph the way ONNX defines it.

A Q/DQ graph's meaning is fixed by its QuantizeLinear / DequantizeLinear ops, and kiln's
accuracy report measures that meaning with onnxruntime. An engine fuses the graph into its own
integer kernels and may still compute it differently: OpenVINO 2026.4 on a Zen 4 CPU returns a
near-zero text map for a PP-OCRv4 detector quantized in the "inputs" form, which onnxruntime
computes at IoU 0.94 of fp32 (benchmarks/quantization.py, ocrdet). Nothing would tell the user;
so after the build the engine's outputs on one sample are compared with onnxruntime's on the
same graph, and a compile whose engine disagrees does not pass silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Worst cosine between an engine's float outputs and onnxruntime's on the same quantized graph.
#: Two correct int8 engines differ by rounding (a requantization step here and there, cosine
#: above 0.999 on the models measured); a miscomputed graph lands far below.
MIN_COSINE = 0.99


def reference_outputs(graph: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs of ``graph`` (standard ONNX) for ``feeds``."""
    from kiln.compiler.accuracy import onnxruntime_runner

    return onnxruntime_runner(graph)(feeds)


def agreement(expected: Mapping[str, np.ndarray], engine: Any,
              feeds: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """The worst cosine over the float outputs of ``engine.run(feeds)`` against ``expected``,
    and the output it was found at ("" when no output is float)."""
    from kiln.compiler.accuracy import cosine

    got = engine.run(dict(feeds))
    worst, where = 1.0, ""
    for name, want in expected.items():
        want = np.asarray(want)
        if want.dtype.kind != "f" or want.size == 0:
            continue
        have = np.asarray(got[name], dtype=np.float64) if name in got else None
        # a missing output, another size, or NaN / inf where the reference is finite: -1
        value = -1.0
        if have is not None and have.size == want.size:
            value = cosine(want, have)
            if not np.isfinite(value) or (np.isfinite(want).all() and
                                          not np.isfinite(have).all()):
                value = -1.0
        if value < worst:
            worst, where = value, name
    return worst, where
