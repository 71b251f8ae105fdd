"""Sensitivity: the layer that ruins the output when quantized is the one kept in fp32."""

from __future__ import annotations

import numpy as np
from compiler_cases import rand
from model_builders import float_model
from onnx import helper

from kiln.compiler import quantization, sensitivity


def three_layers():
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="mm2"),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="mm3")]
    return float_model(nodes, {"x": [8, 16]}, {"y": [8, 8]},
                       {"w1": rand(16, 32, seed=1), "w2": rand(32, 32, seed=2) * 0.2,
                       "w3": rand(32, 8, seed=3) * 0.2})


def test_outlier_layer_goes_back_to_fp32():
    model = three_layers()
    calib = [{"x": rand(8, 16, seed=s)} for s in range(4)]
    calib[0]["x"][0, 0] = 5000.0  # min/max calibration turns x's int8 step into ~40
    evals = [{"x": rand(8, 16, seed=10 + s)} for s in range(3)]
    result = quantization.quantize_model(model, None, calib, method="minmax", eval_samples=evals,
                                         classifier=False, max_accuracy_drop=0.01)
    sens = result.report.sensitivity
    assert sens is not None and sens.met
    assert sens.kept_fp32[0] == "mm1"
    assert max(sens.errors, key=sens.errors.get) == "mm1"
    assert sens.drop_before > 0.01 >= sens.drop_after
    assert "mm1" not in result.report.quantized
    assert result.report.accuracy.worst_cosine() >= 0.99
    assert any("sensitivity" in line for line in result.report.lines())


def test_nothing_to_do_within_budget():
    model = three_layers()
    calib = [{"x": rand(8, 16, seed=s)} for s in range(4)]
    result = quantization.quantize_model(model, None, calib, method="minmax", eval_samples=calib,
                                         classifier=False, max_accuracy_drop=0.5)
    assert result.report.sensitivity.kept_fp32 == []
    assert sorted(result.report.quantized) == ["mm1", "mm2", "mm3"]


def test_layer_error_counts_cosine_and_top1():
    from kiln.compiler.accuracy import compare

    ref = np.eye(4, dtype=np.float32)
    rep = compare([{"y": ref}], [{"y": ref[::-1].copy()}])
    assert sensitivity.layer_error(rep) > 1.0
