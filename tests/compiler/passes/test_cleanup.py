"""IR-v3 initializer inputs become constants."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from compiler_cases import rand
from model_builders import run_reference
from onnx import TensorProto, helper, numpy_helper
from onnx_ir.passes import common

from kiln.compiler.passes.cleanup import ConstantInitializersPass


def test_initializer_inputs_are_dropped_and_ir_version_raised():
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(rand(3), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    proto.ir_version = 3
    model = ir.from_proto(proto)
    assert ConstantInitializersPass()(model).modified
    assert [v.name for v in model.graph.inputs] == ["x"] and model.ir_version == 4
    out = ir.to_proto(model)
    onnx.checker.check_model(out)
    x = rand(3, seed=1)
    assert (run_reference(out, {"x": x})[0] == x + rand(3)).all()
    assert not ConstantInitializersPass()(model).modified


def test_identity_returning_an_outer_value_from_a_branch_is_kept():
    """silero-vad's If branches return an outer value through Identity: removing it renamed
    the outer value and made the branch return it directly, which onnxruntime refuses."""
    import numpy as np

    from kiln.compiler.passes.cleanup import EliminateIdentityPass

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Identity", ["r"], [f"{name}_out"]),
             helper.make_node("Identity", ["r"], [f"{name}_tmp"]),
             helper.make_node("Neg", [f"{name}_tmp"], [f"{name}_neg"])], name, [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info(f"{name}_neg", TensorProto.FLOAT, [2])])

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("If", ["c"], ["y", "z"], then_branch=branch("then"),
                          else_branch=branch("else")),
         helper.make_node("Identity", ["z"], ["w"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert EliminateIdentityPass()(model).modified  # the inner Identity feeding Neg goes
    out = ir.to_proto(model)
    ops = [n.op_type for n in out.graph.node[1].attribute[0].g.node]
    assert ops == ["Identity", "Neg"] and [n.op_type for n in out.graph.node] == ["Relu", "If"]
    x = np.array([1.0, -2.0], np.float32)
    for c in (True, False):
        y, w = run_reference(out, {"x": x, "c": np.array(c)})
        assert (y == np.maximum(x, 0)).all() and (w == -np.maximum(x, 0)).all()


# --- dead-code removal and the sort, skipped when a walk finds nothing for them -----------

def _cases() -> dict[str, onnx.ModelProto]:
    """Graphs with something for RemoveUnusedNodesPass or TopologicalSortPass to do, and
    graphs with nothing."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)

    def model(nodes, inits=(), outputs=(y,)):
        graph = helper.make_graph(nodes, "g", [x], list(outputs), list(inits))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    relu = helper.make_node("Relu", ["x"], ["r"])
    neg = helper.make_node("Neg", ["r"], ["y"])
    def branch(name, dead=False):
        nodes = [helper.make_node("Neg", ["r"], [f"{name}_out"])]
        if dead:
            nodes.append(helper.make_node("Abs", ["r"], [f"{name}_dead"]))
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(
            f"{name}_out", TensorProto.FLOAT, None)])

    def with_if(dead):
        nodes = [relu, helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
            np.array(True))), helper.make_node("If", ["c"], ["y"], then_branch=branch(
                "then", dead), else_branch=branch("else"))]
        return model(nodes)

    return {
        "clean": model([relu, neg]),
        "dead node": model([relu, helper.make_node("Abs", ["x"], ["a"]), neg]),
        "unused initializer": model([relu, neg], [numpy_helper.from_array(rand(3), "w")]),
        "unused optional output": model([helper.make_node("MaxPool", ["x"], ["y", "idx"],
                                                          kernel_shape=[2, 2])]),
        "trailing missing input": model([helper.make_node("Clip", ["x", "", ""], ["y"])]),
        "unsorted": model([neg, relu]),
        "subgraph, clean": with_if(False),
        "subgraph, dead node": with_if(True),
        "common subexpression": model([relu, helper.make_node("Relu", ["x"], ["r2"]),
                                       helper.make_node("Add", ["r", "r2"], ["y"])]),
        "same inputs, other attributes": model([
            helper.make_node("LeakyRelu", ["x"], ["r"], alpha=0.1),
            helper.make_node("LeakyRelu", ["x"], ["r2"], alpha=0.2),
            helper.make_node("Add", ["r", "r2"], ["y"])]),
        "identity": model([relu, helper.make_node("Identity", ["r"], ["y"])]),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("ours, theirs", [
    ("RemoveUnusedPass", common.RemoveUnusedNodesPass),
    ("SortPass", common.TopologicalSortPass),
    ("CsePass", common.CommonSubexpressionEliminationPass),
    ("EliminateIdentityPass", common.IdentityEliminationPass)])
def test_skipping_cleanups_do_what_onnx_irs_passes_do(case, ours, theirs):
    from kiln.compiler.passes import cleanup

    proto = _cases()[case]
    expected, got = ir.from_proto(proto), ir.from_proto(proto)
    want = theirs()(expected).modified
    assert getattr(cleanup, ours)()(got).modified == want
    assert ir.to_proto(got) == ir.to_proto(expected)


def test_the_cleanups_skip_only_what_has_nothing_to_do():
    from kiln.compiler.passes.cleanup import is_sorted, nothing_unused

    cases = {name: ir.from_proto(proto) for name, proto in _cases().items()}
    assert [name for name, m in cases.items() if nothing_unused(m)] == \
        ["clean", "unsorted", "subgraph, clean", "common subexpression",
         "same inputs, other attributes", "identity"]
    assert [name for name, m in cases.items() if is_sorted(m)] == \
        ["clean", "dead node", "unused initializer", "unused optional output",
         "trailing missing input", "common subexpression", "same inputs, other attributes",
         "identity"]


def test_a_cleanup_in_a_pipeline_reads_the_graph_index_and_keeps_its_answer():
    """``nothing_unused`` asked with the graph's index walks once while the graph is as
    indexed; the pipeline's passes find the index in the model's meta."""
    from kiln.compiler.graph_index import GraphIndex
    from kiln.compiler.passes.cleanup import nothing_unused

    model = ir.from_proto(_cases()["dead node"])
    index = GraphIndex(model)
    assert not nothing_unused(model, index)
    model.graph.remove(next(n for n in model.graph if n.op_type == "Abs"), safe=True)
    assert nothing_unused(model) and not nothing_unused(model, index)  # kept with the index
    assert nothing_unused(model, GraphIndex(model))


def test_constant_initializers_skip_a_graph_without_initializer_inputs():
    from kiln.compiler.passes.cleanup import ConstantInitializersPass

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x, w],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(rand(2), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = ir.from_proto(proto)
    assert ConstantInitializersPass()(model).modified
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert not ConstantInitializersPass()(model).modified
