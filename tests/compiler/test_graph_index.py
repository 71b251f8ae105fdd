"""The graph walks and the index the pipeline keeps between passes (compiler/graph_index.py)."""

from __future__ import annotations


def test_walk_nodes_visits_what_all_nodes_visits_in_the_same_order():
    """Subgraph nodes (an If's branches) included, each right after the node holding it."""
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from kiln.compiler.graph_index import count_nodes, op_histogram, walk_nodes

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


def test_graph_index_answers_what_the_walks_it_replaces_answer():
    """One walk: the histogram, the op types and producer edges onnxscript's rewriter sees
    (functions included), and whether a node holds a subgraph."""
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from kiln.compiler.graph_index import GraphIndex, graph_index, indexed, op_histogram
    from kiln.compiler.passes.rule import Present

    branch = helper.make_graph([helper.make_node("Abs", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
             helper.make_node("Add", ["r", "y"], ["z"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                     helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    function = helper.make_function("local", "f", ["a"], ["b"],
                                    [helper.make_node("Neg", ["a"], ["b"])],
                                    [helper.make_opsetid("", 17)])
    model = ir.serde.deserialize_model(helper.make_model(
        graph, functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]))
    index = GraphIndex(model)
    present = Present.of(model)
    assert index.histogram == op_histogram(model)
    assert index.ops == present.ops and "Neg" in index.ops and "Neg" not in index.histogram
    assert index.edges == present.edges and ("Add", "Relu") in index.edges
    assert index.subgraphs
    assert not GraphIndex(ir.serde.deserialize_model(helper.make_model(helper.make_graph(
        nodes[:1], "g", graph.input[:1], [helper.make_tensor_value_info(
            "r", TensorProto.FLOAT, [2])])))).subgraphs
    assert indexed(model) is None and graph_index(model).ops == index.ops  # a walk now


def test_all_graphs_lists_what_model_graphs_lists_in_the_same_order():
    """The main graph first, then each body once, bodies within bodies included."""
    import onnx_ir as ir
    from model_builders import make_nested_if_model

    from kiln.compiler.graph_index import all_graphs

    model = ir.serde.deserialize_model(make_nested_if_model(3))
    found = all_graphs(model)
    assert found == list(model.graphs()) and len(found) > 3 and found[0] is model.graph
