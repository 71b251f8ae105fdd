"""Conv/Gemm + bias + residual + activation -> kiln::FusedConv / kiln::FusedGemm, and back."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.capabilities import BackendCaps
from kiln.compiler.passes.expand_kiln_ops import ExpandKilnOpsPass
from kiln.compiler.passes.fuse_epilogue import (
    FuseBatchNormEpilogue,
    FuseConvEpilogue,
    FuseGemmEpilogue,
    FuseMatMulBiasEpilogue,
)
from kiln.compiler.passes.rule import RulePass
from kiln.compiler.pipeline import optimize

# (ONNX activation nodes reading "y" and writing "out", expected kiln name, alpha, beta, opset)
ACTIVATIONS = [
    ([helper.make_node("Relu", ["y"], ["out"])], "Relu", 0.0, 0.0, 17),
    ([helper.make_node("LeakyRelu", ["y"], ["out"], alpha=0.2)], "LeakyRelu", 0.2, 0.0, 17),
    ([helper.make_node("Clip", ["y", "lo", "hi"], ["out"])], "Clip", -0.5, 0.75, 17),
    ([helper.make_node("Clip", ["y"], ["out"], min=-0.5, max=0.75)], "Clip", -0.5, 0.75, 9),
    ([helper.make_node("Sigmoid", ["y"], ["out"])], "Sigmoid", 0.0, 0.0, 17),
    ([helper.make_node("Sigmoid", ["y"], ["s"]), helper.make_node("Mul", ["y", "s"], ["out"])],
     "SiLU", 0.0, 0.0, 17),
    ([helper.make_node("HardSigmoid", ["y"], ["out"], alpha=0.3, beta=0.4)], "HardSigmoid",
     0.3, 0.4, 17),
    ([helper.make_node("HardSwish", ["y"], ["out"])], "HardSwish", 0.0, 0.0, 17),
    ([helper.make_node("HardSigmoid", ["y"], ["h"], alpha=1 / 6, beta=0.5),
      helper.make_node("Mul", ["h", "y"], ["out"])], "HardSwish", 0.0, 0.0, 13),
    ([helper.make_node("Gelu", ["y"], ["out"])], "Gelu", 0.0, 0.0, 20),
    ([helper.make_node("Gelu", ["y"], ["out"], approximate="tanh")], "GeluTanh", 0.0, 0.0, 20),
    ([helper.make_node("Tanh", ["y"], ["out"])], "Tanh", 0.0, 0.0, 17),
]

KILN = BackendCaps("native", kiln_ops=frozenset({"FusedConv", "FusedGemm"}))


def _fuse(model: ir.Model) -> ir.Model:
    ir.passes.common.ShapeInferencePass()(model)
    RulePass([FuseConvEpilogue(), FuseGemmEpilogue()])(model)
    return model


def _conv_model(act_nodes, residual: bool, opset: int) -> ir.Model:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=2)]
    if residual:
        nodes.append(helper.make_node("Add", ["r", "c"], ["y"]))
    else:
        nodes[0].output[0] = "y"
    nodes += act_nodes
    inits = {"w": rand(8, 2, 3, 3), "b": rand(8)}
    if any("lo" in n.input for n in act_nodes):
        inits.update(lo=np.array(-0.5, np.float32), hi=np.array(0.75, np.float32))
    inputs = {"x": [1, 4, 6, 6]}
    if residual:
        inputs["r"] = [1, 8, 6, 6]
    return float_model(nodes, inputs, {"out": [1, 8, 6, 6]}, inits, opset=opset)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize(("act_nodes", "name", "alpha", "beta", "opset"), ACTIVATIONS,
                         ids=[f"{a[1]}-opset{a[4]}" for a in ACTIVATIONS])
def test_conv_epilogue_fuses_and_expands_to_the_same_numbers(act_nodes, name, alpha, beta,
                                                             opset, residual):
    model = _conv_model(act_nodes, residual, opset)
    feeds = {"x": rand(1, 4, 6, 6, seed=1)}
    if residual:
        feeds["r"] = rand(1, 8, 6, 6, seed=2)
    want = run_reference(model, feeds)

    _fuse(model)
    assert ops(model) == ["kiln::FusedConv"]
    fused = next(iter(model.graph))
    assert fused.attributes["activation"].value == name
    assert fused.attributes["alpha"].value == pytest.approx(alpha)
    assert fused.attributes["beta"].value == pytest.approx(beta)
    assert fused.attributes["group"].value == 2
    assert len(fused.inputs) == (4 if residual else 3)
    assert fused.outputs[0].name == "out"

    ExpandKilnOpsPass()(model)
    assert not any(n.domain == "kiln" for n in model.graph)
    assert_close(want, run_reference(model, feeds))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_epilogue_keeps_gemm_alpha_beta(trans_b):
    w = rand(16, 8) if trans_b else rand(8, 16)
    nodes = [helper.make_node("Gemm", ["a", "w", "c"], ["g"], alpha=0.5, beta=2.0,
                              transB=trans_b),
             helper.make_node("Add", ["g", "r"], ["y"]),
             helper.make_node("LeakyRelu", ["y"], ["out"], alpha=0.1)]
    model = float_model(nodes, {"a": [4, 8], "r": [4, 16]}, {"out": [4, 16]},
                        {"w": w, "c": rand(16)})
    feeds = {"a": rand(4, 8, seed=3), "r": rand(4, 16, seed=4)}
    want = run_reference(model, feeds)
    _fuse(model)
    assert ops(model) == ["kiln::FusedGemm"]
    fused = next(iter(model.graph))
    assert fused.attributes["alpha"].value == pytest.approx(0.5)
    assert fused.attributes["beta"].value == pytest.approx(2.0)
    assert fused.attributes["activation_alpha"].value == pytest.approx(0.1)
    ExpandKilnOpsPass()(model)
    assert_close(want, run_reference(model, feeds))


def _linear_model(bias_first: bool, bias_shape: tuple[int, ...], tail: list) -> ir.Model:
    """A transformer's Linear: [2, 5, 8] x W [8, 16] + bias, then ``tail`` reading "y"."""
    add = ["bias", "m"] if bias_first else ["m", "bias"]
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", add, ["y"]),
             *tail]
    return float_model(nodes, {"a": [2, 5, 8], "r": [2, 5, 16]}, {"out": [2, 5, 16]},
                       {"w": rand(8, 16), "bias": rand(*bias_shape)}, opset=20)


@pytest.mark.parametrize(("bias_first", "bias_shape"), [(False, (16,)), (True, (1, 1, 16))])
@pytest.mark.parametrize("tail", [
    [helper.make_node("Gelu", ["y"], ["out"])],
    [helper.make_node("Add", ["y", "r"], ["out"])],
    [helper.make_node("Add", ["r", "y"], ["s"]), helper.make_node("Relu", ["s"], ["out"])],
    [helper.make_node("Identity", ["y"], ["out"])],
], ids=["gelu", "residual", "residual-relu", "bias-only"])
def test_matmul_bias_of_a_3d_input_fuses_and_expands_to_the_same_numbers(bias_first, bias_shape,
                                                                         tail):
    model = _linear_model(bias_first, bias_shape, tail)
    feeds = {"a": rand(2, 5, 8, seed=3), "r": rand(2, 5, 16, seed=4)}
    want = run_reference(model, feeds)
    ir.passes.common.ShapeInferencePass()(model)
    RulePass([FuseMatMulBiasEpilogue()])(model)
    assert ops(model)[0] == "kiln::FusedGemm"
    fused = next(iter(model.graph))
    assert fused.inputs[2].const_value.numpy().shape == (16,)  # the bias, as Gemm's C
    assert len(fused.inputs) == 3  # a residual Add after the bias stays an Add
    ExpandKilnOpsPass()(model)
    assert not any(n.domain == "kiln" for n in model.graph)
    assert_close(want, run_reference(model, feeds))


def test_matmul_without_a_constant_bias_or_of_two_dims_is_left_alone():
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "r"],
                                                                          ["out"])]
    model = float_model(nodes, {"a": [2, 5, 8], "r": [2, 5, 16]}, {"out": [2, 5, 16]},
                        {"w": rand(8, 16)})
    ir.passes.common.ShapeInferencePass()(model)
    RulePass([FuseMatMulBiasEpilogue()])(model)
    assert ops(model) == ["MatMul", "Add"]  # a residual without a bias: not this rule's
    two_d = float_model([helper.make_node("MatMul", ["a", "w"], ["m"]),
                         helper.make_node("Add", ["m", "bias"], ["out"])],
                        {"a": [5, 8]}, {"out": [5, 16]}, {"w": rand(8, 16), "bias": rand(16)})
    ir.passes.common.ShapeInferencePass()(two_d)
    RulePass([FuseMatMulBiasEpilogue()])(two_d)
    assert ops(two_d) == ["MatMul", "Add"]  # 2-D: matmul-add-to-gemm makes it a Gemm


def test_residual_of_another_shape_is_rejected_with_a_reason():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Add", ["c", "r"], ["y"]),
             helper.make_node("Relu", ["y"], ["out"])]
    model = float_model(nodes, {"x": [1, 3, 4, 4], "r": [1, 1, 4, 4]}, {"out": [1, 4, 4, 4]},
                        {"w": rand(4, 3, 1, 1)})
    ir.passes.common.ShapeInferencePass()(model)
    step = RulePass([FuseConvEpilogue()])
    step(model)
    assert "kiln::FusedConv" not in ops(model)
    assert any("residual [1, 1, 4, 4] is not the output shape" in why for why in step.rejected)


def test_conv_output_used_twice_only_fuses_what_is_private():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["out"]),
             helper.make_node("Sigmoid", ["c"], ["out2"])]
    model = float_model(nodes, {"x": [1, 3, 4, 4]}, {"out": [1, 4, 4, 4], "out2": [1, 4, 4, 4]},
                        {"w": rand(4, 3, 1, 1)})
    _fuse(model)
    assert "kiln::FusedConv" not in ops(model)


def test_pipeline_keeps_fused_ops_only_for_backends_that_run_them():
    model = _conv_model([helper.make_node("Relu", ["y"], ["out"])], True, 17)
    fused, report = optimize(model, 2, None, KILN)
    assert ops(fused) == ["kiln::FusedConv"]
    assert report.fired()["FuseConvEpilogue"] == 1
    plain, _ = optimize(_conv_model([helper.make_node("Relu", ["y"], ["out"])], True, 17), 2)
    assert ops(plain) == ["Conv", "Add", "Relu"]


def _batch_norm_model(tail: list) -> ir.Model:
    """x + 1 -> BatchNormalization -> ``tail`` (reading "bn", writing "out")."""
    nodes = [helper.make_node("Add", ["x", "one"], ["x1"]),
             helper.make_node("BatchNormalization", ["x1", "g", "b", "m", "v"], ["bn"],
                              epsilon=1e-3), *tail]
    inits = {"one": np.ones(1, np.float32), "g": rand(4, positive=True), "b": rand(4, seed=1),
             "m": rand(4, seed=2), "v": rand(4, seed=3, positive=True)}
    return float_model(nodes, {"x": [2, 4, 5, 5]}, {"out": [2, 4, 5, 5]}, inits)


def test_batch_norm_relu_becomes_one_op_and_expands_back():
    model = _batch_norm_model([helper.make_node("Relu", ["bn"], ["out"])])
    feeds = {"x": rand(2, 4, 5, 5, seed=4)}
    want = run_reference(model, feeds)
    step = RulePass([FuseBatchNormEpilogue()])
    step(model)
    assert ops(model) == ["Add", "kiln::FusedBatchNorm"] and step.fired == {
        "FuseBatchNormRelu": 1}
    fused = next(n for n in model.graph if n.op_type == "FusedBatchNorm")
    assert fused.attributes["activation"].value == "Relu"
    assert fused.attributes["epsilon"].value == pytest.approx(1e-3)
    ExpandKilnOpsPass()(model)
    assert ops(model) == ["Add", "BatchNormalization", "Relu"]
    assert_close(want, run_reference(model, feeds))


def test_batch_norm_takes_relu_only():
    model = _batch_norm_model([helper.make_node("Sigmoid", ["bn"], ["out"])])
    step = RulePass([FuseBatchNormEpilogue()])
    step(model)
    assert "kiln::FusedBatchNorm" not in ops(model)
    assert step.rejected == {"FuseBatchNormRelu: the activation is Sigmoid, not Relu": 1}


def _symbolic_residual_model(shortcut: str) -> ir.Model:
    """A residual block on a symbolic-width input: y = relu(conv_b(silu(conv_a(x))) + r), r the
    block input (``shortcut="same"``), a second input of its own width ("other"), or a
    per-channel vector ("channel")."""
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Mul", ["a", "s"], ["h"]),
             helper.make_node("Conv", ["h", "wb"], ["c"], pads=[0, 1, 0, 1], kernel_shape=[1, 3]),
             helper.make_node("Add", ["c", "x" if shortcut == "same" else "r"], ["y"]),
             helper.make_node("Relu", ["y"], ["out"])]
    inputs: dict = {"x": [1, 4, "H", "W"]}
    if shortcut == "other":
        inputs["r"] = [1, 4, "H", "V"]
    inits = {"wa": rand(4, 4, 3, 3), "wb": rand(4, 4, 1, 3)}
    if shortcut == "channel":
        inits["r"] = rand(1, 4, 1, 1)
    return float_model(nodes, inputs, {"out": [1, 4, None, None]}, inits)


def test_a_symbolic_residual_proven_equal_fuses_and_keeps_the_numbers():
    model = _symbolic_residual_model("same")
    feeds = {"x": rand(1, 4, 5, 9)}
    want = run_reference(model, feeds)
    _fuse(model)
    assert ops(model).count("kiln::FusedConv") == 2 and "Add" not in ops(model)
    ExpandKilnOpsPass()(model)
    assert_close(want, run_reference(model, feeds))


@pytest.mark.parametrize(("shortcut", "why"), [
    ("other", "residual shape is not proven equal to the output shape"),
    ("channel", "residual shape is not proven equal to the output shape"),
])
def test_a_residual_not_proven_equal_stays_an_add(shortcut, why):
    model = _symbolic_residual_model(shortcut)
    ir.passes.common.ShapeInferencePass()(model)
    step = RulePass([FuseConvEpilogue(), FuseGemmEpilogue()])
    step(model)
    assert "Add" in ops(model)
    assert any(why in reason for reason in step.rejected)
