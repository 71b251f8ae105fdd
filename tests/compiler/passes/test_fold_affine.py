"""Per-channel Mul/Div/Add/Sub by constants folded into the preceding linear op."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.fold_affine import FOLD_AFFINE_RULES
from kiln.compiler.passes.rule import RulePass


def _fold(model: ir.Model) -> RulePass:
    ir.passes.common.ShapeInferencePass()(model)
    step = RulePass(FOLD_AFFINE_RULES)
    step(model)
    return step


def test_conv_mul_add_sub_div_fold_into_conv():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["k1", "c"], ["d"]),
             helper.make_node("Add", ["d", "k2"], ["e"]),
             helper.make_node("Div", ["e", "k3"], ["f"]),
             helper.make_node("Sub", ["f", "k4"], ["y"])]
    inits = {"w": rand(4, 3, 3, 3), "k1": rand(4, 1, 1, seed=2), "k2": rand(1, 4, 1, 1, seed=3),
             "k3": rand(4, 1, 1, seed=4, positive=True), "k4": np.float32(0.25)}
    model = float_model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 4, 3, 3]}, inits)
    feeds = {"x": rand(1, 3, 5, 5, seed=1)}
    want = run_reference(model, feeds)
    step = _fold(model)
    assert ops(model) == ["Conv"]
    assert step.fired["FoldAffineIntoLinear"] == 4
    assert_close(want, run_reference(model, feeds))


def test_conv_transpose_add_and_mul_fold_into_its_bias_and_weight():
    # PP-OCR's detection head: ConvTranspose (no bias) -> Add(per-channel bias) -> Mul
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], strides=[2, 2]),
             helper.make_node("Add", ["c", "k1"], ["d"]),
             helper.make_node("Mul", ["d", "k2"], ["y"])]
    inits = {"w": rand(3, 4, 2, 2), "k1": rand(4, 1, 1, seed=2), "k2": rand(1, 4, 1, 1, seed=3)}
    model = float_model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 4, 10, 10]}, inits)
    feeds = {"x": rand(1, 3, 5, 5, seed=1)}
    want = run_reference(model, feeds)
    step = _fold(model)
    assert ops(model) == ["ConvTranspose"]
    assert step.fired["FoldAffineIntoLinear"] == 2
    assert_close(want, run_reference(model, feeds))


def test_grouped_conv_transpose_is_not_folded():
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], group=2),
             helper.make_node("Mul", ["c", "k"], ["y"])]
    inits = {"w": rand(4, 2, 2, 2), "k": rand(4, 1, 1, seed=2)}
    model = float_model(nodes, {"x": [1, 4, 5, 5]}, {"y": [1, 4, 6, 6]}, inits)
    step = _fold(model)
    assert ops(model) == ["ConvTranspose", "Mul"]
    assert any("more than one group" in why for why in step.rejected)


def test_batchnorm_mul_add_fold_into_batchnorm():
    # the DenseNet/Inception-v2 pattern: BN -> Mul(scale) -> Add(bias), BN after a Concat
    nodes = [helper.make_node("Concat", ["x", "x2"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "g", "be", "m", "v"], ["b"]),
             helper.make_node("Mul", ["b", "k1"], ["d"]),
             helper.make_node("Add", ["d", "k2"], ["y"])]
    inits = {"g": rand(6), "be": rand(6, seed=1), "m": rand(6, seed=2),
             "v": rand(6, seed=3, positive=True), "k1": rand(6, 1, 1, seed=4),
             "k2": rand(6, 1, 1, seed=5)}
    model = float_model(nodes, {"x": [1, 3, 4, 4], "x2": [1, 3, 4, 4]}, {"y": [1, 6, 4, 4]},
                        inits)
    feeds = {"x": rand(1, 3, 4, 4, seed=6), "x2": rand(1, 3, 4, 4, seed=7)}
    want = run_reference(model, feeds)
    _fold(model)
    assert ops(model) == ["Concat", "BatchNormalization"]
    assert_close(want, run_reference(model, feeds))


def test_gemm_and_matmul_scaling():
    nodes = [helper.make_node("Gemm", ["a", "w", "c"], ["g"], beta=3.0),
             helper.make_node("Mul", ["g", "k"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["m"]),
             helper.make_node("Div", ["m", "k2"], ["y"])]
    inits = {"w": rand(5, 6), "c": rand(6, seed=1), "k": rand(6, seed=2),
             "w2": rand(6, 2, seed=3), "k2": rand(2, seed=4, positive=True)}
    model = float_model(nodes, {"a": [3, 5]}, {"y": [3, 2]}, inits)
    feeds = {"a": rand(3, 5, seed=5)}
    want = run_reference(model, feeds)
    _fold(model)
    assert ops(model) == ["Gemm", "MatMul"]
    assert_close(want, run_reference(model, feeds))


def test_rejections_say_why():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["c", "k"], ["d"]),
             helper.make_node("MatMul", ["d", "w2"], ["m"]),
             helper.make_node("Add", ["m", "k2"], ["y"])]
    inits = {"w": rand(2, 3, 1, 1), "k": rand(1, 2, 1, 4), "w2": rand(4, 4), "k2": rand(4)}
    model = float_model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    step = _fold(model)
    assert not step.fired
    reasons = " | ".join(step.rejected)
    assert "operand of shape [1, 2, 1, 4] is not per-channel" in reasons
    assert "MatMul has no bias input" in reasons
