"""One engine's SGEMM on this core, for bench_kernels' "% of peak" to stand next to.

The peak-FMA probe is a ceiling no GEMM reaches; what other engines' tuned SGEMMs reach on the
same core, same shapes, one thread, tells how much of the gap is kiln's. Run in a fresh process
per engine (each reads its thread count at start-up):

    python benchmarks/micro/peer_sgemm.py onnxruntime 1024
prints GFLOP/s per call (process CPU time: the engine's own threads, not other processes').
"""

from __future__ import annotations

import os
import sys
import time

ENGINES = ("onnxruntime", "openvino", "numpy")


def _matmul_model(n: int, b):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])],
        "sgemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _runner(engine: str, n: int, b):
    """A callable computing A @ B with B a constant, the way each engine's users run it."""
    if engine == "numpy":
        return lambda a: a @ b
    model = _matmul_model(n, b)
    if engine == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        return lambda a: session.run(None, {"A": a})
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": 1})
    request = compiled.create_infer_request()
    return lambda a: request.infer({0: a})


def measure(engine: str, n: int, seconds: float = 0.5) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    run = _runner(engine, n, b)
    run(a)
    best = float("inf")
    spent = 0.0
    while spent < seconds:
        started = time.process_time()
        run(a)
        took = time.process_time() - started
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best / 1e9


def main() -> None:
    engine, n = sys.argv[1], int(sys.argv[2])
    if engine not in ENGINES:
        sys.exit(f"engine must be one of {', '.join(ENGINES)}")
    print(f"{measure(engine, n):.1f}")


if __name__ == "__main__":
    # numpy's BLAS reads its thread count when it loads.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    main()
