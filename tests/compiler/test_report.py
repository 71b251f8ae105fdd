"""CompileReport: totals, JSON and the text summary."""

from __future__ import annotations

import json

from kiln.compiler.report import CompileReport, PassRecord


def test_report_totals_and_json():
    report = CompileReport(level=2, target="cpu:avx2", backend="onnxruntime",
                           pipeline=["a", "b"])
    report.passes = [PassRecord("a", 0.25, 10, 8, True, {"R1": 2}),
                     PassRecord("b", 0.5, 8, 8, False, {"R1": 1, "R2": 3}, {"R2: why": 4})]
    assert report.seconds == 0.75
    assert report.fired() == {"R1": 3, "R2": 3}
    data = json.loads(json.dumps(report.to_json()))
    assert data["passes"][1]["rejected"] == {"R2: why": 4}
    text = report.summary()
    assert "O2 for cpu:avx2 / onnxruntime" in text and "R2 x3" in text


def test_walk_nodes_visits_what_all_nodes_visits_in_the_same_order():
    """Subgraph nodes (an If's branches) included, each right after the node holding it."""
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from kiln.compiler.report import count_nodes, op_histogram, walk_nodes

    def branch(op: str, out: str) -> object:
        return helper.make_graph([helper.make_node(op, ["x"], [out])], f"{op}_branch", [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])])

    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("Abs", "t"),
                              else_branch=branch("Neg", "e")),
             helper.make_node("Sigmoid", ["y"], ["z"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                     helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    model = ir.serde.deserialize_model(helper.make_model(graph))
    walked = [n.op_type for n in walk_nodes(model.graph)]
    assert walked == [n.op_type for n in model.graph.all_nodes()]
    assert walked[:2] == ["Relu", "If"] and sorted(walked[2:4]) == ["Abs", "Neg"]
    assert count_nodes(model) == 5 and op_histogram(model)["Neg"] == 1
