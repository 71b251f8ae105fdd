"""If on the native engine: each branch its own native plans, outer values bound by name;
against onnx.reference for both conditions, nested, and a hostile condition."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import kiln
import kiln.backend

rng = np.random.default_rng(5)


def _if_model(nested: bool = False, cond_shape: tuple[int, ...] = ()):
    w = numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "w")
    # then: relu(x @ w) + bias captured from the outer graph; else: x * 2 (a branch constant)
    then_nodes = [helper.make_node("MatMul", ["x", "w"], ["t0"]),
                  helper.make_node("Relu", ["t0"], ["t1"]),
                  helper.make_node("Add", ["t1", "bias"], ["then_out"])]
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    else_nodes = [helper.make_node("Mul", ["x", "two"], ["else_out"])]
    out = helper.make_tensor_value_info
    if nested:
        inner = helper.make_node(
            "If", ["c2"], ["else_out"],
            then_branch=helper.make_graph(
                [helper.make_node("Neg", ["x"], ["n"])], "inner_then", [],
                [out("n", TensorProto.FLOAT, [2, 3])]),
            else_branch=helper.make_graph(
                [helper.make_node("Mul", ["x", "two"], ["m"])], "inner_else", [],
                [out("m", TensorProto.FLOAT, [2, 3])], [two]))
        else_nodes = [inner]
    then_g = helper.make_graph(then_nodes, "then", [],
                              [out("then_out", TensorProto.FLOAT, [2, 3])])
    else_g = helper.make_graph(else_nodes, "else", [],
                              [out("else_out", TensorProto.FLOAT, [2, 3])],
                              [] if nested else [two])
    nodes = [helper.make_node("Abs", ["x0"], ["x"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Sigmoid", ["y"], ["z"])]
    inputs = [out("x0", TensorProto.FLOAT, [2, 3]), out("c", TensorProto.BOOL, list(cond_shape)),
              out("bias", TensorProto.FLOAT, [3])]
    if nested:
        inputs.append(out("c2", TensorProto.BOOL, []))
    graph = helper.make_graph(nodes, "if", inputs, [out("z", TensorProto.FLOAT, [2, 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("nested", [False, True])
def test_if_matches_onnx_reference(cond: bool, nested: bool):
    model = _if_model(nested)
    feeds = {"x0": rng.standard_normal((2, 3)).astype(np.float32), "c": np.array(cond),
             "bias": rng.standard_normal(3).astype(np.float32)}
    if nested:
        feeds["c2"] = np.array(not cond)
    want = ReferenceEvaluator(model).run(None, feeds)
    session = kiln.Session(model.SerializeToString(), backend="native", fallback=None)
    got = session.run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_if_condition_with_two_elements_is_an_input_error_naming_the_node():
    model = _if_model(cond_shape=(2,))
    feeds = {"x0": np.ones((2, 3), np.float32), "c": np.array([True, False]),
             "bias": np.zeros(3, np.float32)}
    session = kiln.Session(model.SerializeToString(), backend="native", fallback=None)
    with pytest.raises(kiln.InputError, match="If .*condition has 2 elements"):
        session.run(None, feeds)


def test_if_with_a_branch_native_cannot_run_is_refused_naming_it():
    then_g = helper.make_graph([helper.make_node("StringNormalizer", ["s"], ["o"])], "then", [],
                               [helper.make_tensor_value_info("o", TensorProto.STRING, [1])])
    else_g = helper.make_graph([helper.make_node("Identity", ["s"], ["o2"])], "else", [],
                               [helper.make_tensor_value_info("o2", TensorProto.STRING, [1])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                      helper.make_tensor_value_info("s", TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(kiln.UnsupportedError, match="then_branch node"):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
