"""Per-node profiles from the backends' own instruments, and the chrome trace."""

from __future__ import annotations

import json

import jsonschema
import onnx
from onnx import TensorProto, helper

from kiln.runtime.profile import by_op, profile_backends


def test_profiles_side_by_side(tmp_path, conv_model):
    pairs = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("tensorrt", "fp32")]
    prof = profile_backends(conv_model, pairs, runs=3, warmup=1,
                            trace_out=tmp_path / "trace.json")
    entries = {e["backend"]: e for e in prof["backends"]}
    ort, ov = entries["onnxruntime"], entries["openvino"]
    assert ort["status"] == "ok" and ort["source"] == "onnxruntime profiler"
    assert {"Conv", "Gemm"} <= {n["op"] for n in ort["nodes"]}
    assert all(n["calls"] == 3 for n in ort["nodes"])  # warm-up runs are left out
    assert ov["status"] == "ok" and ov["nodes"] and ov["total_us"] > 0
    assert any("Convolution" in n["op"] for n in ov["nodes"])
    assert entries["tensorrt"]["status"] in ("unavailable", "ok")
    nodes = ort["nodes"]
    assert [n["mean_us"] for n in nodes] == sorted((n["mean_us"] for n in nodes), reverse=True)
    assert sum(o["mean_us"] for o in by_op(nodes)) == sum(n["mean_us"] for n in nodes)
    trace = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    names = {e["args"]["name"] for e in trace if e["ph"] == "M"}
    assert any(n.startswith("onnxruntime/fp32") for n in names)
    assert any(n.startswith("openvino/fp32") for n in names)
    assert all(e["dur"] >= 0 for e in trace if e["ph"] == "X")
    schema = json.loads((__import__("pathlib").Path(__file__).parents[2] / "docs"
                         / "bench_schema.json").read_text())
    jsonschema.validate(prof, {"$defs": schema["$defs"], "$ref": "#/$defs/profile"})


def test_backend_without_timers_says_so():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        "add_relu", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3])
                     for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    [entry] = profile_backends(model, [("native", "fp32")], runs=2, warmup=1)["backends"]
    # the native engine runs this graph; per-node timers arrive with its executor
    assert entry["status"] in ("ok", "unavailable")
    if entry["status"] == "unavailable":
        assert "per-node timers" in entry["reason"]
    else:
        assert {n["op"] for n in entry["nodes"]} == {"Add", "Relu"}
