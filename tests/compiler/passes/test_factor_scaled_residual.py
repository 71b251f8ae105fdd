"""x + x * s -> x * (1 + s) (squeeze-excitation residuals)."""

from __future__ import annotations

import onnx_ir as ir
import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.factor_scaled_residual import FactorScaledResidualPass


@pytest.mark.parametrize("mul_inputs,add_inputs", [
    (["x", "s"], ["x", "m"]), (["s", "x"], ["m", "x"]), (["x", "s"], ["m", "x"])])
def test_scaled_residual_becomes_one_scaling(mul_inputs, add_inputs):
    nodes = [helper.make_node("Mul", mul_inputs, ["m"]), helper.make_node("Add", add_inputs, ["y"])]
    model = float_model(nodes, {"x": [2, 8, 5, 5], "s": [2, 8, 1, 1]}, {"y": [2, 8, 5, 5]}, {})
    feeds = {"x": rand(2, 8, 5, 5), "s": rand(2, 8, 1, 1, seed=1)}
    want = run_reference(model, feeds)
    ir.passes.common.ShapeInferencePass()(model)
    step = FactorScaledResidualPass()
    step(model)
    assert sorted(ops(model)) == ["Add", "Mul"]
    mul = next(n for n in model.graph if n.op_type == "Mul")
    assert mul.inputs[0].name == "x"  # the large tensor is read once, by the Mul
    assert step.fired == {"FactorScaledResidual": 1}
    assert_close(want, run_reference(model, feeds), rtol=1e-5, atol=1e-6)


def test_a_scale_that_broadcasts_x_up_is_rejected():
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["x", "m"], ["y"])]
    model = float_model(nodes, {"x": [1, 8, 1, 1], "s": [1, 8, 5, 5]}, {"y": [1, 8, 5, 5]}, {})
    ir.passes.common.ShapeInferencePass()(model)
    step = FactorScaledResidualPass()
    step(model)
    assert ops(model) == ["Mul", "Add"]
    assert any("not x's" in why for why in step.rejected)


def test_a_scaled_value_read_elsewhere_is_rejected():
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["x", "m"], ["y"])]
    model = float_model(nodes, {"x": [4], "s": [1]}, {"y": [4], "m": [4]}, {})
    ir.passes.common.ShapeInferencePass()(model)
    step = FactorScaledResidualPass()
    step(model)
    assert ops(model) == ["Mul", "Add"]
    assert any("used outside" in why for why in step.rejected)
