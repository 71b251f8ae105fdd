"""The placement report and the capability adapter, on real backends and real models."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto
from onnx import helper as oh

from kiln.backends import registry
from kiln.cli import main
from kiln.compiler.frontend import import_model
from kiln.runtime.placement import (
    SCHEMA,
    bind_symbols,
    capability_of,
    placement_report,
    placement_to_json,
    plan_for,
    refusal_kind,
)
from kiln.zoo import LIGHT_MODELS, light_model


def _small() -> ir.Model:
    """Relu -> Det -> Add: Det is an op the native engine does not run."""
    nodes = [oh.make_node("Relu", ["x"], ["a"], name="relu"),
             oh.make_node("Det", ["a"], ["b"], name="det"),
             oh.make_node("Add", ["b", "b"], ["y"], name="add")]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 ["n", 4, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    model = import_model(proto)
    assert registry.get_backend("native").refusal(model.graph.node(1)) is not None
    return model


def test_report_lists_what_each_backend_runs_and_why_not():
    report = placement_report(_small(), ["native"], "onnxruntime", {"n": 2},
                              min_partition_nodes=1)
    assert report["schema"] == SCHEMA
    native = report["backends"]["native"]
    assert native["nodes"] == ["relu", "add"] and native["runs"] == 2 and native["of"] == 3
    [refused] = native["refused"]
    assert refused["node"] == "det" and refused["op"] == "Det"
    assert "Det" in refused["reason"] and refused["kind"] == "op"
    assert native["plan"]["partition_count"] == 3
    # relu | a: float32[2, 4, 4] | det | b: float32[2] | add, with n bound to 2.
    assert native["plan"]["boundary_bytes_per_inference"] == 2 * 4 * 4 * 4 + 2 * 4
    assert report["plan"]["boundary_tensor_count"] == 2
    assert report["dims"] == {"n": 2} and report["assumed_dims"] == []
    json.dumps(report)


def test_symbolic_dims_default_to_one_and_say_so():
    report = placement_report(_small(), ["native"], "onnxruntime", min_partition_nodes=1)
    assert report["dims"] == {"n": 1} and report["assumed_dims"] == ["n"]
    assert bind_symbols(_small(), {"n": 4}) == {"n": 4}


def test_strict_report_marks_unplaced_nodes_without_raising():
    report = placement_report(_small(), ["native"], None)
    plan = report["plan"]
    assert not plan["complete"]
    assert [u["node"] for u in plan["unplaced"]] == ["det"]
    assert "native" in plan["unplaced"][0]["reasons"]


def test_capability_prefers_a_per_model_query():
    class Queried:
        name = "queried"

        def __init__(self):
            self.calls = 0

        def capability(self, model):
            self.calls += 1
            return {n: (None if n.op_type == "Det" else "refused by query")
                    for n in model.graph if n.op_type != "Add"}

        def refusal(self, node):
            return "static rule"

    model = _small()
    backend = Queried()
    cap = capability_of(backend, model)
    verdicts = [cap.refusal(n) for n in model.graph]
    assert verdicts == ["refused by query", None, "static rule"] and backend.calls == 1


@pytest.mark.parametrize(("reason", "kind"), [
    ("Relu on float64 is not implemented (float32 only)", "dtype"),
    ("input rank is unknown (dynamic shape)", "dynamic_shape"),
    ("attribute mode='cubic' is not supported", "attribute"),
    ("domain 'com.example' not implemented", "domain"),
    ("Conv is not implemented by the native engine yet", "op"),
])
def test_refusal_kinds(reason, kind):
    assert refusal_kind(reason) == kind


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_every_light_model_gets_a_complete_report(name):
    model = import_model(light_model(name))
    report = placement_report(model, ["native", "openvino", "tensorrt"], "onnxruntime")
    node_count = report["model"]["node_count"]
    for backend, entry in report["backends"].items():
        assert entry["runs"] + entry["refuses"] == node_count, backend
        assert entry["available"] == registry.availability(backend).ok
    assert report["plan"]["complete"]
    placed = sum(report["plan"]["nodes_per_backend"].values())
    assert placed == node_count
    assert report["plan"]["boundary_bytes_per_inference"] is not None


def test_placement_to_json_round_trips_through_json():
    model = import_model(light_model("squeezenet"))
    plan = plan_for(model, ["native", "onnxruntime"], min_partition_nodes=1)
    data = placement_to_json(plan)
    assert json.loads(json.dumps(data)) == data
    assert data["partition_count"] == len(plan.runtime_partitions)
    sizes = [b["bytes"] for b in data["boundaries"]]
    assert data["boundary_bytes_per_inference"] == sum(
        s * len(b["to"]) for s, b in zip(sizes, data["boundaries"]))
    assert all(isinstance(s, int) and s > 0 for s in sizes)
    assert np.isclose(sum(p["node_count"] for p in data["partitions"]), data["node_count"])


def test_cli_inspect_prints_json(capsys):
    assert main(["inspect", str(light_model("squeezenet")), "--backends", "native,openvino",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["backends"]) == {"native", "openvino"}
    assert report["plan"]["backends"] == ["native", "openvino", "onnxruntime"]


def test_cli_inspect_rejects_unknown_backends(capsys):
    assert main(["inspect", str(light_model("squeezenet")), "--backends", "nope"]) == 1
    assert "unknown backend 'nope'" in capsys.readouterr().err


def test_report_on_optimized_graphs_matches_what_a_session_places():
    import kiln
    from kiln.compiler.target import Target

    path = light_model("squeezenet")
    model = import_model(path)
    before = len(list(model.graph))
    report = placement_report(model, ["native", "openvino"], "onnxruntime", opt_level=2,
                              target=Target.detect())
    assert len(list(model.graph)) == before  # the caller's model is left alone
    assert report["opt_level"] == 2
    for entry in report["backends"].values():
        assert entry["runs"] + entry["refuses"] == entry["node_count"]
    session = kiln.Session(path, backend=["native", "openvino"])
    assert session.placement["nodes_per_backend"] == report["plan"]["nodes_per_backend"]
    assert session.placement["partition_count"] == report["plan"]["partition_count"]


# -- onnxruntime contrib ops (com.microsoft) on other backends --------------------------------
def _contrib_reference():
    import onnxruntime as ort
    from model_builders import make_contrib_model

    model = make_contrib_model()
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return model, x, session.run(None, {"x": x})[0]


@pytest.mark.parametrize("backend", ["openvino", "native"])
def test_contrib_ops_are_placed_on_onnxruntime_and_named(backend):
    """The default fallback takes what ``backend`` does not run (Inverse: neither OpenVINO
    nor native has it) and the placement names it; the rest stays where it runs."""
    import kiln

    model, x, expected = _contrib_reference()
    session = kiln.Session(model, backend=[backend])
    assignment = session.placement["assignment"]
    assert assignment["inverse"] == "onnxruntime"
    assert assignment["conv"] != "onnxruntime" or backend == "openvino"
    np.testing.assert_allclose(session(x=x)["y"], expected, rtol=1e-4, atol=1e-5)
    report = placement_report(import_model(model), [backend])
    refused = report["backends"][backend]["refused_by_op"]
    assert "com.microsoft::Inverse" in refused
    assert report["plan"]["assignment"]["inverse"] == "onnxruntime"


@pytest.mark.parametrize("backend", ["openvino", "native"])
def test_strict_mode_refuses_contrib_ops_naming_node_and_domain(backend):
    import kiln

    model, _, _ = _contrib_reference()
    with pytest.raises(kiln.UnsupportedError, match=r"strict mode \(fallback=None\)(.|\n)*"
                       r"node 'inverse' \(com.microsoft::Inverse\)"):
        kiln.Session(model, backend=[backend], fallback=None)


def test_openvino_alone_refuses_contrib_ops_it_cannot_run_by_name():
    import kiln

    model, _, _ = _contrib_reference()
    with pytest.raises(kiln.UnsupportedError, match=r"node 'inverse' \(com.microsoft::Inverse\)"
                       r": domain 'com.microsoft' is not supported by openvino"):
        kiln.Session(model, backend="openvino")


def test_openvino_runs_the_contrib_ops_its_own_query_accepts():
    """OpenVINO's ONNX frontend converts some com.microsoft ops (Gelu, FusedConv ...):
    its query_model decides, not a domain rule."""
    import onnxruntime as ort

    import kiln

    nodes = [oh.make_node("Gelu", ["x"], ["g"], name="gelu", domain="com.microsoft"),
             oh.make_node("Relu", ["g"], ["y"], name="relu")]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [8])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17),
                                                oh.make_opsetid("com.microsoft", 1)])
    session = kiln.Session(model, backend=["openvino"], fallback=None)
    assert set(session.placement["assignment"].values()) == {"openvino"}
    x = np.linspace(-3, 3, 8, dtype=np.float32)
    expected = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(session(x=x)["y"], expected, rtol=1e-5, atol=1e-6)


def test_a_split_takes_the_inputs_form_only_when_every_backend_asks_for_it():
    from kiln.runtime.placement import joint_caps

    assert joint_caps(["openvino"]).static_int8 == "inputs"
    assert joint_caps(["openvino", "onnxruntime"]).static_int8 == "chained"
    assert joint_caps(["native", "openvino"]).static_int8 == "chained"


def test_a_split_leaves_work_to_the_engines_only_when_each_of_them_does_it():
    from kiln.runtime.placement import joint_caps

    alone = joint_caps(["onnxruntime"])
    assert alone.folds_conv_batchnorm and alone.cleans_up_at_load and alone.fuses_norm_gelu
    for names in (["onnxruntime", "native"], ["native", "onnxruntime"]):
        split = joint_caps(names)  # native runs what kiln's passes leave it: it needs them
        assert not (split.folds_conv_batchnorm or split.cleans_up_at_load
                    or split.fuses_norm_gelu)
        assert split.f32_nhwc  # the layout rule applies where native runs the convs
