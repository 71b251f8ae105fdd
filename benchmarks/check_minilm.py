"""Compile the exported MiniLM-L6 at O2 and compare with the unoptimized model.

    HF_HUB_OFFLINE=1 python benchmarks/prepare_minilm.py   # once, into ~/.cache/kiln/models
    python benchmarks/check_minilm.py

One compile for a backend running ONNX Attention-23, checked on onnxruntime and OpenVINO.
Prints the fused-op counts and the largest absolute difference on a batch of 2
sequences of 16 tokens, one of them padded.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_light_models import run_openvino, run_ort  # noqa: E402
from prepare_minilm import minilm_path  # noqa: E402

from kiln.compiler.capabilities import BackendCaps  # noqa: E402
from kiln.compiler.pipeline import optimize  # noqa: E402

TOLERANCE = 1e-4
FUSED = ("LayerNormalization", "Gelu", "Attention")


def main() -> int:
    path = minilm_path()
    if not path.exists():
        print(f"{path} is missing: run benchmarks/prepare_minilm.py first")
        return 2
    rng = np.random.default_rng(0)
    mask = np.ones((2, 16), np.int64)
    mask[1, 11:] = 0
    feeds = {"input_ids": rng.integers(0, 30000, (2, 16)).astype(np.int64),
             "attention_mask": mask}
    raw = ir.to_proto(ir.load(path))
    cases = [("standard Attention", BackendCaps("x", standard_attention=True, max_opset=23),
              ("onnxruntime", "openvino"))]
    failed = False
    for title, caps, backends in cases:
        start = time.perf_counter()
        model, report = optimize(ir.load(path), 2, None, caps)
        seconds = time.perf_counter() - start
        counts = {op: report.ops_after[op] for op in FUSED if op in report.ops_after}
        opt = ir.to_proto(model)
        for backend in backends:
            run = run_ort if backend == "onnxruntime" else run_openvino
            diff = float(np.abs(run(raw, feeds)[0] - run(opt, feeds)[0]).max())
            failed |= diff > TOLERANCE
            print(f"{title:18s} {backend:11s} {report.nodes_before} -> {report.nodes_after} "
                  f"nodes in {seconds:.2f} s  {counts}  max|diff| {diff:.3g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
