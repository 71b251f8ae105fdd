"""Compile the nine light models at O2 and compare with the unoptimized model.

    python benchmarks/check_light_models.py [--level 2] [--random] [--backends onnxruntime,openvino]

By default the final Softmax is cut off and the logits are compared (the light models'
probabilities are uniform and would hide any difference). Prints, per model and backend: node
counts, compile time and the largest absolute difference between outputs of the raw and the
optimized model on the same random input. OpenVINO runs
with INFERENCE_PRECISION_HINT f32 so both sides compute in fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from light_models import LIGHT_MODELS, light_model_path, logits, randomized  # noqa: E402

from kiln.compiler.capabilities import BackendCaps  # noqa: E402
from kiln.compiler.passes.cleanup import ConstantInitializersPass  # noqa: E402
from kiln.compiler.pipeline import optimize  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def run_ort(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_openvino(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(feeds)
    return [np.asarray(result[out]) for out in compiled.outputs]


RUNNERS = {"onnxruntime": run_ort, "openvino": run_openvino}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", type=int, default=2)
    parser.add_argument("--random", action="store_true", help="random weights (see light_models)")
    parser.add_argument("--probabilities", action="store_true",
                        help="compare the final Softmax output instead of the logits")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--models", default=",".join(LIGHT_MODELS))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    failures = 0
    rows = []
    for name in args.models.split(","):
        proto = onnx.load(light_model_path(name))
        original_nodes = len(proto.graph.node)
        if args.random:
            proto = randomized(proto)
        if not args.probabilities:
            proto = logits(proto)
        model = ir.from_proto(proto)
        ConstantInitializersPass()(model)
        raw = ir.to_proto(model)
        start = time.perf_counter()
        optimized, report = optimize(model, args.level, None, BackendCaps("onnxruntime"))
        seconds = time.perf_counter() - start
        opt = ir.to_proto(optimized)
        onnx.checker.check_model(opt)
        rng = np.random.default_rng(1)
        feeds = {}
        for value in optimized.graph.inputs:
            shape = [d if isinstance(d, int) else 1 for d in value.shape]
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        ops = report.ops_after
        for backend in args.backends.split(","):
            want = RUNNERS[backend](raw, feeds)
            got = RUNNERS[backend](opt, feeds)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(want, got))
            scale = max(1.0, max(float(np.abs(a).max()) for a in want))
            # random weights make logits as large as 1e6: atol then scales with the output
            atol = ATOL * scale if args.random else ATOL
            ok = all(np.allclose(a, b, rtol=RTOL, atol=atol) for a, b in zip(want, got))
            failures += not ok
            rows.append({"model": name, "backend": backend, "nodes_before": original_nodes,
                         "nodes_after": report.nodes_after, "compile_s": seconds,
                         "max_abs_diff": diff, "max_abs_output": scale, "ok": ok,
                         "batch_norm_left": ops.get("BatchNormalization", 0),
                         "constant_of_shape_left": ops.get("ConstantOfShape", 0)})
            print(f"{name:14s} {backend:11s} nodes {original_nodes:5d} -> {report.nodes_after:4d}"
                  f"  O{args.level} {seconds:6.2f} s  max|diff| {diff:.3g} (max|y| {scale:.3g})"
                  f"  {'OK' if ok else 'MISMATCH'}  BN={ops.get('BatchNormalization', 0)}"
                  f" CoS={ops.get('ConstantOfShape', 0)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"level": args.level, "random_weights": args.random,
                                         "logits": not args.probabilities, "rtol": RTOL,
                                         "atol": ATOL, "rows": rows}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
