"""OpenVINO's capability comes from OpenVINO itself (query_model), once per model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import openvino as ov
import pytest
from onnx import TensorProto
from onnx import helper as oh

import kiln
from kiln.backends.openvino import OpenVinoBackend, device_problem
from kiln.compiler.frontend import import_model
from kiln.runtime.placement import placement_report
from kiln.zoo import light_model


def _custom_op_model() -> ir.Model:
    nodes = [oh.make_node("Relu", ["x"], ["a"], name="before"),
             oh.make_node("Foo", ["a"], ["b"], name="custom", domain="com.example"),
             oh.make_node("Relu", ["b"], ["y"], name="after")]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17),
                                                oh.make_opsetid("com.example", 1)],
                          ir_version=8)
    return ir.from_proto(proto)


def test_query_model_accepts_a_whole_light_model_and_is_cached():
    backend = OpenVinoBackend()
    model = import_model(light_model("squeezenet"))
    verdicts = backend.capability(model)
    assert verdicts and all(v is None for v in verdicts.values())
    assert backend.capability(model) is verdicts  # computed once per model
    assert all(backend.supports(n) for n in model.graph)


def test_nodes_the_frontend_cannot_convert_are_refused_by_openvino_itself():
    backend = OpenVinoBackend()
    model = _custom_op_model()
    verdicts = backend.capability(model)
    custom = model.graph.node(1)
    assert "no converter for Foo" in verdicts[custom]
    assert backend.refusal(custom) == verdicts[custom]
    assert backend.supports(model.graph.node(0))


def test_static_rule_without_a_query():
    backend = OpenVinoBackend()
    model = _custom_op_model()
    assert "domain 'com.example'" in backend.refusal(model.graph.node(1))


def test_the_placement_report_uses_the_query():
    report = placement_report(_custom_op_model(), ["openvino"], "onnxruntime")
    refused = {r["node"]: r["reason"] for r in report["backends"]["openvino"]["refused"]}
    assert "no converter" in refused["custom"] and "before" not in refused
    # Foo's output has no known rank, and the CPU plugin compiles only known ranks
    assert "unknown rank" in refused["after"] or "rank is unknown" in refused["after"]


@pytest.mark.parametrize(("device", "available", "problem"), [
    ("CPU", ["CPU"], None),
    ("GPU", ["CPU", "GPU.0", "GPU.1"], None),
    ("GPU.1", ["CPU", "GPU.0", "GPU.1"], None),
    ("AUTO", ["CPU"], None),
    ("HETERO:GPU,CPU", ["CPU"], "GPU is not present"),
    ("NPU", ["CPU"], "NPU is not present"),
])
def test_device_strings_pass_through_when_present(device, available, problem):
    found = device_problem(device, available)
    assert (found is None) if problem is None else (problem in found)


def test_auto_device_runs_and_a_missing_device_is_named():
    model = light_model("squeezenet")
    session = kiln.Session(model, backend="openvino", device="AUTO")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert session(data_0=x)
    missing = next((d for d in ("GPU", "NPU") if d not in ov.Core().available_devices), None)
    if missing is None:
        pytest.skip("GPU and NPU are both present")
    with pytest.raises(kiln.BackendUnavailableError, match=f"{missing} is not present"):
        kiln.Session(model, backend="openvino", device=missing)


def test_auto_capability_asks_each_candidate_device():
    backend = OpenVinoBackend()
    model = _custom_op_model()
    for device in ("AUTO", "AUTO:CPU", "HETERO:CPU"):
        verdicts = backend.capability(model, device=device)
        assert verdicts.get(model.graph.node(0)) is None, device
        assert "no converter for Foo" in verdicts[model.graph.node(1)], device


def _rank_changing_if() -> onnx.ModelProto:
    """Relu -> If (then: x as is, rank 2; else: flattened, rank 1) -> Relu -> ReduceSum: the
    If's output rank is unknown, which OpenVINO's CPU plugin cannot compile (silero-vad has
    such an If)."""
    then = oh.make_graph([oh.make_node("Identity", ["r"], ["t"])], "then", [],
                         [oh.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])])
    other = oh.make_graph([oh.make_node("Reshape", ["r", "flat"], ["e"])], "else", [],
                          [oh.make_tensor_value_info("e", TensorProto.FLOAT, [6])])
    nodes = [oh.make_node("Relu", ["x"], ["r"], name="pre"),
             oh.make_node("If", ["c"], ["i"], name="if", then_branch=then, else_branch=other),
             oh.make_node("Relu", ["i"], ["a"], name="post"),
             oh.make_node("ReduceSum", ["a"], ["y"], name="sum", keepdims=0)]
    graph = oh.make_graph(
        nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                     oh.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        initializer=[oh.make_tensor("flat", TensorProto.INT64, [1], [6])])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_ops_of_unknown_rank_go_to_the_fallback():
    """query_model accepts them; the CPU plugin's compile would refuse them."""
    import onnxruntime as ort

    model = _rank_changing_if()
    verdicts = OpenVinoBackend().capability(import_model(model))
    by_name = {node.name: reason for node, reason in verdicts.items()}
    assert "unknown rank" in by_name["if"] and by_name["pre"] is None
    session = kiln.Session(model, backend=["openvino"])
    assert session.placement["assignment"]["if"] == "onnxruntime"
    reference = ort.InferenceSession(model.SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    x = np.array([[1, -2, 3], [-4, 5, -6]], np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        np.testing.assert_array_equal(session.run(None, feeds)[0],
                                      reference.run(None, feeds)[0])


def test_unknown_rank_inside_a_body_goes_to_the_fallback():
    """silero-vad (spox export): the rank-changing If sits in another If's branch whose own
    outputs have known rank; the CPU plugin still refuses the outer If."""
    import onnxruntime as ort

    inner = _rank_changing_if()
    column = oh.make_tensor("column", TensorProto.INT64, [2], [-1, 1])
    branch = oh.make_graph(list(inner.graph.node)[:-1] + [
        oh.make_node("Reshape", ["a", "column"], ["t"])], "then", [],
        [oh.make_tensor_value_info("t", TensorProto.FLOAT, [None, 1])])
    other = oh.make_graph([oh.make_node("Reshape", ["x", "column"], ["e"])], "else", [],
                          [oh.make_tensor_value_info("e", TensorProto.FLOAT, [None, 1])])
    graph = oh.make_graph(
        [oh.make_node("If", ["k"], ["out"], name="outer", then_branch=branch,
                      else_branch=other)], "g",
        list(inner.graph.input) + [oh.make_tensor_value_info("k", TensorProto.BOOL, [])],
        [oh.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])],
        initializer=list(inner.graph.initializer) + [column])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    session = kiln.Session(model, backend=["openvino"])
    assert session.placement["assignment"]["outer"] == "onnxruntime"
    reference = ort.InferenceSession(model.SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    for k, c in ((True, True), (True, False), (False, True)):
        feeds = {"x": np.array([[1, -2, 3], [-4, 5, -6]], np.float32), "c": np.array(c),
                 "k": np.array(k)}
        np.testing.assert_array_equal(session.run(None, feeds)[0],
                                      reference.run(None, feeds)[0])
    with pytest.raises(kiln.UnsupportedError, match=r"backend=\['openvino'\] runs the nodes"):
        kiln.Session(model, backend="openvino")
