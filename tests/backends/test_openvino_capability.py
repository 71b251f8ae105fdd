"""OpenVINO's capability comes from OpenVINO itself (query_model), once per model."""

from __future__ import annotations

import numpy as np
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
    [refused] = report["backends"]["openvino"]["refused"]
    assert refused["node"] == "custom" and "no converter" in refused["reason"]


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
