"""Scaled-dot-product attention -> ONNX Attention-23."""

from __future__ import annotations

import math

import numpy as np
import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.fuse_attention import FuseAttention
from kiln.compiler.passes.rule import RulePass

B, H, S, D = 2, 3, 5, 4


def _sdpa(scale_op: str | None, mask: bool, opset: int = 23, full_mask: bool = False):
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["qk"])]
    last = "qk"
    inits: dict = {}
    if scale_op:
        nodes.append(helper.make_node(scale_op, ["qk", "c"], ["scaled"]))
        inits["c"] = np.array(math.sqrt(D) if scale_op == "Div" else 0.3, np.float32)
        last = "scaled"
    inputs = {"q": [B, H, S, D], "k": [B, H, S, D], "v": [B, H, S, D]}
    if mask:
        nodes.append(helper.make_node("Add", ["m", last], ["masked"]))
        inputs["m"] = [B, 1, S, S] if full_mask else [B, 1, 1, S]
        last = "masked"
    nodes += [helper.make_node("Softmax", [last], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["y"])]
    return float_model(nodes, inputs, {"y": [B, H, S, D]}, inits, opset=opset)


def _feeds(mask: bool, full_mask: bool = False) -> dict[str, np.ndarray]:
    feeds = {n: rand(B, H, S, D, seed=i) for i, n in enumerate("qkv")}
    if mask:
        m = np.zeros((B, 1, S if full_mask else 1, S), np.float32)
        m[1, ..., 3:] = -1e4
        feeds["m"] = m
    return feeds


@pytest.mark.parametrize("scale_op", [None, "Mul", "Div"])
@pytest.mark.parametrize("mask", [False, True])
def test_standard_attention(scale_op, mask):
    model = _sdpa(scale_op, mask, full_mask=True)
    feeds = _feeds(mask, full_mask=True)
    want = run_reference(model, feeds)
    step = RulePass([FuseAttention()])
    step(model)
    assert step.fired == {"FuseAttention": 1}
    assert ops(model).count("Attention") == 1 and "Softmax" not in ops(model)
    node = next(n for n in model.graph if n.op_type == "Attention")
    want_scale = {None: 1.0, "Mul": 0.3, "Div": 1 / math.sqrt(D)}[scale_op]
    assert node.attributes["scale"].value == pytest.approx(want_scale)
    assert_close(want, run_reference(model, feeds), rtol=1e-4, atol=1e-5)


def test_probabilities_used_elsewhere_are_not_fused():
    model = _sdpa("Mul", False)
    model.graph.outputs.append(next(n for n in model.graph if n.op_type == "Softmax").outputs[0])
    step = RulePass([FuseAttention()])
    step(model)
    assert "Attention" not in ops(model)
    assert any("used outside the attention" in why for why in step.rejected)


def test_query_broadcast_mask_is_expanded_for_standard_attention():
    model = _sdpa("Div", True)
    feeds = _feeds(True)
    want = run_reference(model, feeds)
    RulePass([FuseAttention()])(model)
    assert "Attention" in ops(model) and "Expand" in ops(model)
    assert_close(want, run_reference(model, feeds))


def test_no_standard_attention_below_opset_23():
    model = _sdpa("Div", False, opset=20)
    step = RulePass([FuseAttention()])
    assert not step(model).modified
    assert any("opset 20; Attention needs 23" in why for why in step.rejected)
