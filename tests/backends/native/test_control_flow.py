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


def _loop_model(with_trip: bool = True, with_cond: bool = True):
    """sum += x * i for i < M while sum < limit; scan output: each step's sum."""
    out = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "fi"], ["xi"]),
         helper.make_node("Add", ["s_in", "xi"], ["s_out"]),
         helper.make_node("ReduceSum", ["s_out"], ["tot"], keepdims=0),
         helper.make_node("Less", ["tot", "limit"], ["c_out"]),
         helper.make_node("Identity", ["s_out"], ["scan"])],
        "body", [out("i", TensorProto.INT64, []), out("c_in", TensorProto.BOOL, []),
                 out("s_in", TensorProto.FLOAT, [3])],
        [out("c_out", TensorProto.BOOL, []), out("s_out", TensorProto.FLOAT, [3]),
         out("scan", TensorProto.FLOAT, [3])])
    node = helper.make_node("Loop", ["M" if with_trip else "", "c" if with_cond else "", "s0"],
                            ["s_final", "steps"], body=body)
    inputs = [out("x", TensorProto.FLOAT, [3]), out("s0", TensorProto.FLOAT, [3]),
              out("limit", TensorProto.FLOAT, [])]
    if with_trip:
        inputs.append(out("M", TensorProto.INT64, []))
    if with_cond:
        inputs.append(out("c", TensorProto.BOOL, []))
    graph = helper.make_graph([node], "loop", inputs,
                              [out("s_final", TensorProto.FLOAT, [3]),
                               out("steps", TensorProto.FLOAT, [None, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _onnxruntime(model, feeds: dict) -> list:
    """onnxruntime's answer (onnx.reference implements neither empty loops nor reversed
    scans)."""
    return kiln.Session(model.SerializeToString(), backend="onnxruntime").run(None, feeds)


@pytest.mark.parametrize("trip,limit", [(5, 1e9), (50, 20.0), (0, 1e9)])
def test_loop_matches_onnxruntime(trip: int, limit: float):
    model = _loop_model()
    feeds = {"x": np.array([1.0, 2.0, 0.5], np.float32), "s0": np.zeros(3, np.float32),
             "limit": np.array(limit, np.float32), "M": np.array(trip, np.int64),
             "c": np.array(True)}
    want = _onnxruntime(model, feeds)
    got = kiln.Session(model.SerializeToString(), backend="native", fallback=None).run(None,
                                                                                       feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_loop_without_trip_count_stops_on_its_condition():
    model = _loop_model(with_trip=False)
    feeds = {"x": np.array([1.0, 2.0, 0.5], np.float32), "s0": np.zeros(3, np.float32),
             "limit": np.array(30.0, np.float32), "c": np.array(True)}
    want = ReferenceEvaluator(model).run(None, feeds)
    got = kiln.Session(model.SerializeToString(), backend="native", fallback=None).run(None,
                                                                                       feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_loop_trip_count_with_two_elements_is_an_input_error():
    model = _loop_model()
    model.graph.input[3].type.tensor_type.shape.dim.add().dim_value = 2
    feeds = {"x": np.ones(3, np.float32), "s0": np.zeros(3, np.float32),
             "limit": np.array(1.0, np.float32), "M": np.array([1, 2], np.int64),
             "c": np.array(True)}
    session = kiln.Session(model.SerializeToString(), backend="native", fallback=None)
    with pytest.raises(kiln.InputError, match="trip count of a Loop"):
        session.run(None, feeds)


@pytest.mark.parametrize("in_axis,in_dir,out_axis,out_dir", [(0, 0, 0, 0), (1, 1, 1, 0),
                                                             (0, 1, 1, 1)])
def test_scan_matches_onnxruntime(in_axis: int, in_dir: int, out_axis: int, out_dir: int):
    out = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x_t"], ["acc_out"]),
         helper.make_node("Mul", ["acc_out", "w"], ["y_t"])],
        "body", [out("acc_in", TensorProto.FLOAT, [4]), out("x_t", TensorProto.FLOAT, [4])],
        [out("acc_out", TensorProto.FLOAT, [4]), out("y_t", TensorProto.FLOAT, [4])])
    node = helper.make_node("Scan", ["acc0", "xs"], ["acc", "ys"], body=body,
                            num_scan_inputs=1, scan_input_axes=[in_axis],
                            scan_input_directions=[in_dir], scan_output_axes=[out_axis],
                            scan_output_directions=[out_dir])
    xs_shape = [5, 4] if in_axis == 0 else [4, 5]
    ys_shape = [5, 4] if out_axis == 0 else [4, 5]
    w = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "w")
    graph = helper.make_graph([node], "scan", [out("acc0", TensorProto.FLOAT, [4]),
                                               out("xs", TensorProto.FLOAT, xs_shape)],
                              [out("acc", TensorProto.FLOAT, [4]),
                               out("ys", TensorProto.FLOAT, ys_shape)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"acc0": rng.standard_normal(4).astype(np.float32),
             "xs": rng.standard_normal(xs_shape).astype(np.float32)}
    want = _onnxruntime(model, feeds)
    got = kiln.Session(model.SerializeToString(), backend="native", fallback=None).run(None,
                                                                                       feeds)
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-5, atol=1e-6)
