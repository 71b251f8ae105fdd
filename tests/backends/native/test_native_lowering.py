"""BatchNormalization -> Relu as one pass: the compiler's FuseBatchNormRelu rule writes
kiln::FusedBatchNorm, which the native lowering (backends/native/plan.py, ``EXECUTOR_OPS``)
maps to the executor's BatchNormalization with ``kiln_activation``; checked on what the plan
holds and on numbers against onnxruntime. (An affine folded into the conv that reads it is a
compiler rule too: test_fuse_conv_prologue.py.)"""

from __future__ import annotations

import numpy as np
from model_builders import model_from_arrays
from native_cases import check_against_ort, compile_native
from onnx import helper

C, K = 16, 24


def _model(relu: bool, kernel: int = 1, extra_reader: bool = False):
    rng = np.random.default_rng(0)  # the same weights for every variant
    nodes = [helper.make_node("BatchNormalization", ["x", "gamma", "beta", "mean", "var"],
                              ["bn"], name="bn", epsilon=1e-3)]
    src = "bn"
    if relu:
        nodes.append(helper.make_node("Relu", ["bn"], ["r"], name="relu"))
        src = "r"
    pads = [kernel // 2] * 4
    nodes.append(helper.make_node("Conv", [src, "w", "b"], ["y"], name="conv", pads=pads))
    outputs = ["y"]
    if extra_reader:
        nodes.append(helper.make_node("Sigmoid", [src], ["side"], name="side"))
        outputs.append("side")
    inits = {"gamma": rng.uniform(0.5, 1.5, C).astype(np.float32),
             "beta": rng.standard_normal(C).astype(np.float32),
             "mean": rng.standard_normal(C).astype(np.float32),
             "var": rng.uniform(0.5, 2.0, C).astype(np.float32),
             "w": rng.standard_normal((K, C, kernel, kernel)).astype(np.float32) * 0.2,
             "b": rng.standard_normal(K).astype(np.float32)}
    x = rng.standard_normal((2, C, 9, 11)).astype(np.float32)
    model = model_from_arrays(nodes, {"x": x}, outputs, initializers=inits)
    return model, {"x": x}


def _plan_ops(model) -> list[tuple[str, dict]]:
    compiled = compile_native(model)
    return [(n.op, n.attrs) for seg in compiled.segments for n in seg.lowered.nodes]


def test_a_3x3_conv_keeps_batch_norm_relu_as_one_pass():
    model, feeds = _model(True, kernel=3)
    ops = _plan_ops(model)
    assert [op for op, _ in ops] == ["BatchNormalization", "Conv"]
    assert ops[0][1]["kiln_activation"] == "Relu"
    check_against_ort(model, feeds, rtol=1e-4, atol=1e-4)


def test_a_normalized_value_read_elsewhere_is_not_folded():
    model, feeds = _model(True, extra_reader=True)
    ops = _plan_ops(model)
    assert [op for op, _ in ops] == ["BatchNormalization", "Conv", "Sigmoid"]
    assert ops[0][1]["kiln_activation"] == "Relu" and "prologue" not in ops[1][1]
    check_against_ort(model, feeds, rtol=1e-4, atol=1e-4)
