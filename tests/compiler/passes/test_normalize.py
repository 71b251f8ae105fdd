"""Sum -> Add and inference Dropout -> Identity."""

from __future__ import annotations

import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.normalize import NORMALIZE_RULES, RemoveWholeSlice
from kiln.compiler.passes.rule import RulePass


def test_sum_of_two_becomes_add_and_dropout_identity():
    nodes = [helper.make_node("Sum", ["a", "b"], ["s"]),
             helper.make_node("Dropout", ["s"], ["y"])]
    model = float_model(nodes, {"a": [2, 3], "b": [2, 3]}, {"y": [2, 3]}, {}, opset=9)
    feeds = {"a": rand(2, 3), "b": rand(2, 3, seed=1)}
    want = run_reference(model, feeds)
    step = RulePass(NORMALIZE_RULES)
    step(model)
    assert ops(model) == ["Add", "Identity"]
    assert step.fired == {"Sum->Add": 1, "Dropout->Identity": 1}
    assert_close(want, run_reference(model, feeds))


def test_sum_of_three_stays():
    nodes = [helper.make_node("Sum", ["a", "a", "a"], ["y"])]
    model = float_model(nodes, {"a": [2]}, {"y": [2]}, {})
    assert not RulePass(NORMALIZE_RULES)(model).modified


def _slice_model(starts, ends, axes=None, steps=None, shape=(1, 4, 6, 1)):
    import numpy as np
    import onnx_ir as ir
    from onnx import TensorProto, numpy_helper

    inits = {"st": np.array(starts, np.int64), "en": np.array(ends, np.int64)}
    names = ["x", "st", "en"]
    if axes is not None or steps is not None:
        inits["ax"] = np.array(axes if axes is not None else range(len(starts)), np.int64)
        names.append("ax")
    if steps is not None:
        inits["sp"] = np.array(steps, np.int64)
        names.append("sp")
    graph = helper.make_graph(
        [helper.make_node("Slice", names, ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.from_proto(proto)


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), [
    ([0, 0, 0, 0], [2**31 - 1, 2**31 - 1, 2**31 - 1, 1], [0, 1, 2, 3], None),  # Magika's
    ([0, 0, 0], [10**9] * 3, [2, 1, 3], [1, 1, 1]),
    ([-6], [6], [-2], None),
    ([0, 0], [2**31 - 1, 4], None, None),
    ([0, 0], [2**31 - 1, 6], [0, 2], None),         # the symbolic batch axis: an end past all
])
def test_a_slice_keeping_every_element_is_removed(starts, ends, axes, steps):
    model = _slice_model(starts, ends, axes, steps, shape=("N", 4, 6, 1))
    feeds = {"x": rand(2, 4, 6, 1)}
    want = run_reference(model, feeds)
    step = RulePass([RemoveWholeSlice()], keeps_shapes=True)
    step(model)
    assert ops(model) == ["Relu"] and step.fired == {"RemoveWholeSlice": 1}
    assert_close(want, run_reference(model, feeds))


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), [
    ([0], [3], [1], None),           # drops a row
    ([1], [6], [2], None),           # starts past 0
    ([0], [6], [2], [2]),            # strided
    ([0], [-1], [2], None),          # negative end: one short
    ([0], [10**9], [0], None),       # a symbolic axis with an end a tensor could pass
])
def test_a_slice_that_drops_elements_stays(starts, ends, axes, steps):
    model = _slice_model(starts, ends, axes, steps, shape=("N", 4, 6, 1))
    RulePass([RemoveWholeSlice()], keeps_shapes=True)(model)
    assert ops(model) == ["Slice", "Relu"]
