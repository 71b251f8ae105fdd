"""Folds the native lowering makes (backends/native/plan.py): BatchNormalization [-> Relu]
into the 1x1 conv that reads it (a prologue applied while packing), BatchNormalization ->
Relu as one pass; each checked on what the plan holds and on numbers against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from model_builders import model_from_arrays, run_reference
from native_cases import check_against_ort, compile_native
from onnx import helper

C, K = 16, 24


def _model(relu: bool, kernel: int = 1, extra_reader: bool = False, fused: bool = False,
           relu_after_conv: bool = False):
    rng = np.random.default_rng(0)  # the same weights for every variant
    nodes = [helper.make_node("BatchNormalization", ["x", "gamma", "beta", "mean", "var"],
                              ["bn"], name="bn", epsilon=1e-3)]
    src = "bn"
    if relu:
        nodes.append(helper.make_node("Relu", ["bn"], ["r"], name="relu"))
        src = "r"
    pads = [kernel // 2] * 4
    if fused:
        nodes.append(helper.make_node("FusedConv", [src, "w", "b"], ["y"], name="conv",
                                      domain="kiln", pads=pads, activation="Relu"))
    elif relu_after_conv:
        nodes.append(helper.make_node("Conv", [src, "w", "b"], ["c"], name="conv", pads=pads))
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu_out"))
    else:
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
    model = model_from_arrays(nodes, {"x": x}, outputs, initializers=inits,
                              extra_opsets={"kiln": 1} if fused else None)
    return model, {"x": x}


def _plan_ops(model) -> list[tuple[str, dict]]:
    compiled = compile_native(model)
    return [(n.op, n.attrs) for seg in compiled.segments for n in seg.lowered.nodes]


@pytest.mark.parametrize("relu", [True, False])
def test_batch_norm_folds_into_the_pointwise_conv(relu: bool):
    model, feeds = _model(relu)
    ops = _plan_ops(model)
    assert [op for op, _ in ops] == ["Conv"]
    assert ops[0][1]["kiln_prologue"] == ("affine_relu" if relu else "affine")
    check_against_ort(model, feeds, rtol=1e-4, atol=1e-4)


def test_batch_norm_folds_into_a_fused_conv():
    model, feeds = _model(True, fused=True)
    assert [op for op, _ in _plan_ops(model)] == ["FusedConv"]
    reference, _ = _model(True, relu_after_conv=True)  # the same graph in plain ONNX
    np.testing.assert_allclose(compile_native(model).run(feeds)["y"],
                               run_reference(reference, feeds)[0], rtol=1e-4, atol=1e-4)


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
    assert ops[0][1]["kiln_activation"] == "Relu" and "kiln_prologue" not in ops[1][1]
    check_against_ort(model, feeds, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_folded_prologue_matches_on_larger_maps(threads: int):
    model, _ = _model(True)
    x = np.random.default_rng(1).standard_normal((1, C, 40, 40)).astype(np.float32)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], (40, 40)):
        d.dim_value = v
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    got = compile_native(model, threads=threads).run({"x": x})["y"]
    np.testing.assert_allclose(got, run_reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


# ---- scalar affine (Mul / Add by constants) and BatchNormalization before depthwise -------
def _affine_model(chain: str, conv: str):
    """``chain`` ("mul-add", "mul", "add", "bn") feeding a 1x1 or depthwise 3x3 conv."""
    rng = np.random.default_rng(2)
    inits = {"s": np.array(1.7, np.float32), "t": np.array(-0.3, np.float32)}
    if chain == "mul-add":
        nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "t"],
                                                                              ["a"])]
    elif chain == "mul":
        nodes = [helper.make_node("Mul", ["x", "s"], ["a"])]
    elif chain == "add":
        nodes = [helper.make_node("Add", ["x", "t"], ["a"])]
    else:
        nodes = [helper.make_node("BatchNormalization", ["x", "gamma", "beta", "mean", "var"],
                                  ["a"])]
        inits.update(gamma=rng.uniform(0.5, 1.5, C).astype(np.float32),
                     beta=rng.standard_normal(C).astype(np.float32),
                     mean=rng.standard_normal(C).astype(np.float32),
                     var=rng.uniform(0.5, 2.0, C).astype(np.float32))
    if conv == "depthwise":
        inits["w"] = rng.standard_normal((C, 1, 3, 3)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["a", "w"], ["y"], group=C, pads=[1, 1, 1, 1]))
    else:
        inits["w"] = rng.standard_normal((K, C, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["a", "w"], ["y"]))
    x = rng.standard_normal((1, C, 9, 11)).astype(np.float32)
    return model_from_arrays(nodes, {"x": x}, ["y"], initializers=inits), {"x": x}


@pytest.mark.parametrize("conv", ["pointwise", "depthwise"])
@pytest.mark.parametrize("chain", ["mul-add", "mul", "add", "bn"])
def test_affine_folds_into_pointwise_and_depthwise_convs(isa: str, chain: str, conv: str):
    model, feeds = _affine_model(chain, conv)
    ops = _plan_ops(model)
    assert [op for op, _ in ops] == ["Conv"]
    assert ops[0][1]["kiln_prologue"] == "affine"
    for threads in (1, 2):  # the depthwise padding must stay zero, not become the shift
        check_against_ort(model, feeds, threads=threads, rtol=1e-4, atol=1e-4)


def test_scalar_affine_before_a_full_3x3_conv_is_not_folded():
    model, feeds = _affine_model("mul-add", "pointwise")
    conv = model.graph.node[-1]
    w = np.random.default_rng(3).standard_normal((K, C, 3, 3)).astype(np.float32)
    model.graph.initializer[-1].CopyFrom(__import__("onnx").numpy_helper.from_array(w, "w"))
    conv.attribute.extend([helper.make_attribute("pads", [1, 1, 1, 1])])
    assert [op for op, _ in _plan_ops(model)] == ["Mul", "Add", "Conv"]
    check_against_ort(model, feeds, rtol=1e-4, atol=1e-4)
