"""The partitioner on small graphs with plain capability rules (no backend involved)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from kiln.compiler.partition import (
    Capability,
    Extractor,
    constant_nodes,
    node_labels,
    plan_partitions,
)
from kiln.errors import UnsupportedError


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> ir.Model:
    graph = oh.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(proto)
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return oh.make_tensor_value_info(name, dtype, shape)


def _only(*ops: str, name: str) -> Capability:
    """A capability that runs exactly ``ops``."""
    return Capability(name, lambda n: None if n.op_type in ops else f"{n.op_type} is not run")


EVERYTHING = Capability("all", lambda n: None)
RELU_ADD = _only("Relu", "Add", name="small")


def _by_label(plan):
    return {plan.label(n): p.index for p in plan.partitions for n in p.nodes}


def test_priority_order_decides_and_every_node_is_placed():
    model = _model([oh.make_node("Relu", ["x"], ["a"], name="r"),
                    oh.make_node("Sigmoid", ["a"], ["b"], name="s"),
                    oh.make_node("Add", ["b", "b"], ["y"], name="add")],
                   [_vi("x", [2, 3])], [_vi("y", [2, 3])])
    plan = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    assert plan.assignment == {"r": "small", "s": "all", "add": "small"}
    assert [p.backend for p in plan.partitions] == ["small", "all", "small"]
    reversed_plan = plan_partitions(model, [EVERYTHING, RELU_ADD], min_partition_nodes=1)
    assert set(reversed_plan.assignment.values()) == {"all"}
    assert len(reversed_plan.partitions) == 1 and not reversed_plan.boundaries
    assert plan.verdicts["s"] == {"small": "Sigmoid is not run", "all": None}


def test_partitions_form_a_chain_without_cycles():
    # r1 -> s -> r2 and r1 -> r2: grouping {r1, r2} would make a cycle with {s}.
    model = _model([oh.make_node("Relu", ["x"], ["a"], name="r1"),
                    oh.make_node("Sigmoid", ["a"], ["b"], name="s"),
                    oh.make_node("Add", ["a", "b"], ["y"], name="r2")],
                   [_vi("x", [4])], [_vi("y", [4])])
    plan = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    where = _by_label(plan)
    assert where["r1"] < where["s"] < where["r2"]
    produced = {}
    for part in plan.partitions:
        for name in part.inputs:
            assert name == "x" or produced[name] < part.index
        for node in part.nodes:
            for value in node.outputs:
                produced[value.name] = part.index
    assert {b.name for b in plan.boundaries} == {"a", "b"}
    a = next(b for b in plan.boundaries if b.name == "a")
    assert a.consumers == (where["s"], where["r2"]) and a.nbytes() == 16
    assert plan.boundary_bytes() == 16 * 2 + 16


def test_parallel_branches_of_one_backend_share_a_partition():
    model = _model([oh.make_node("Relu", ["x"], ["a"], name="left"),
                    oh.make_node("Relu", ["x"], ["b"], name="right"),
                    oh.make_node("Sigmoid", ["a"], ["c"], name="mid"),
                    oh.make_node("Add", ["b", "c"], ["y"], name="join")],
                   [_vi("x", [1, 8])], [_vi("y", [1, 8])])
    plan = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    where = _by_label(plan)
    assert where["left"] == where["right"]
    assert len(plan.partitions) == 3


def test_strict_plan_names_every_unplaced_node_with_reasons():
    model = _model([oh.make_node("Relu", ["x"], ["a"], name="r"),
                    oh.make_node("Sigmoid", ["a"], ["b"], name="sig"),
                    oh.make_node("Tanh", ["b"], ["y"])],
                   [_vi("x", [2])], [_vi("y", [2])])
    plan = plan_partitions(model, [RELU_ADD])
    assert plan.unplaced == ["sig", "Tanh_2"]
    with pytest.raises(UnsupportedError) as err:
        plan.require_complete(strict=True)
    text = str(err.value)
    assert "strict mode" in text and "'sig' (ai.onnx::Sigmoid)" in text
    assert "'Tanh_2' (ai.onnx::Tanh)" in text and "small: Tanh is not run" in text
    plan_partitions(model, [RELU_ADD, EVERYTHING]).require_complete(strict=False)


def test_small_partitions_join_a_neighbour_that_accepts_them():
    nodes = [oh.make_node("Sigmoid", ["x"], ["a"], name="s1"),
             oh.make_node("Relu", ["a"], ["b"], name="lonely"),
             oh.make_node("Sigmoid", ["b"], ["y"], name="s2")]
    model = _model(nodes, [_vi("x", [3])], [_vi("y", [3])])
    kept = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    assert len(kept.partitions) == 3 and not kept.merges
    merged = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=2)
    assert len(merged.partitions) == 1 and merged.assignment["lonely"] == "all"
    assert merged.merges[0].nodes == ("lonely",) and merged.merges[0].moved_to == "all"
    # A neighbour that refuses the nodes cannot take them.
    no_relu = Capability("norelu", lambda n: "no" if n.op_type == "Relu" else None)
    stuck = plan_partitions(model, [RELU_ADD, no_relu], min_partition_nodes=2)
    assert len(stuck.partitions) == 3 and not stuck.merges


def test_weights_built_in_the_graph_become_load_time_constants():
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "w_shape")
    nodes = [oh.make_node("ConstantOfShape", ["w_shape"], ["w"], name="make_w",
                          value=numpy_helper.from_array(np.array([0.5], np.float32))),
             oh.make_node("Relu", ["w"], ["w_pos"], name="w_relu"),
             oh.make_node("Mul", ["x", "w_pos"], ["m"], name="mul"),
             oh.make_node("Relu", ["m"], ["y"], name="out_relu")]
    model = _model(nodes, [_vi("x", [2, 3])], [_vi("y", [2, 3])], [shape])
    assert {n.name for n in constant_nodes(model.graph)} == {"make_w", "w_relu"}
    plan = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    constant = [p for p in plan.partitions if p.constant]
    assert {plan.label(n) for p in constant for n in p.nodes} == {"make_w", "w_relu"}
    assert all(b.name != "w_pos" for b in plan.boundaries)
    mul = next(p for p in plan.runtime_partitions if plan.label(p.nodes[0]) == "mul")
    assert mul.inputs == ["x"]
    extractor = Extractor(model, plan)
    sub = extractor.extract(mul, {"w_pos": np.full((2, 3), 0.5, np.float32)})
    assert "w_pos" in sub.graph.initializers and [v.name for v in sub.graph.inputs] == ["x"]


def _loop_model() -> ir.Model:
    """Relu/Add around a Loop whose body reads an outer value."""
    body = oh.make_graph(
        [oh.make_node("Add", ["v_in", "r2"], ["v_out"]),
         oh.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL),
                 _vi("v_in", [2, 2])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", [2, 2])])
    nodes = [oh.make_node("Relu", ["x"], ["r1"], name="pre_relu"),
             oh.make_node("Add", ["r1", "r1"], ["r2"], name="pre_add"),
             oh.make_node("Loop", ["trips", "keep_going", "r2"], ["looped"], name="loop",
                          body=body),
             oh.make_node("Relu", ["looped"], ["y"], name="post_relu")]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "keep_going")]
    return _model(nodes, [_vi("x", [2, 2])], [_vi("y", [2, 2])], inits)


def test_subgraph_captures_are_dependencies_and_partition_inputs():
    model = _loop_model()
    plan = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    where = _by_label(plan)
    assert where["pre_add"] < where["loop"] < where["post_relu"]
    loop_part = plan.partitions[where["loop"]]
    assert loop_part.inputs == ["r2"] and loop_part.outputs == ["looped"]
    sub = Extractor(model, plan).extract(loop_part)
    proto = ir.serde.serialize_model(sub)
    assert {t.name for t in proto.graph.initializer} == {"trips", "keep_going"}


def test_pieces_run_in_order_reproduce_the_whole_model():
    from onnx.reference import ReferenceEvaluator

    model = _loop_model()
    x = np.array([[1.0, -2.0], [3.0, -4.0]], np.float32)
    [want] = ReferenceEvaluator(ir.serde.serialize_model(model)).run(None, {"x": x})
    plan = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    assert len(plan.partitions) == 3
    extractor = Extractor(model, plan)
    env = {"x": x}
    for part in plan.partitions:
        proto = ir.serde.serialize_model(extractor.extract(part))
        results = ReferenceEvaluator(proto).run(None, {n: env[n] for n in part.inputs})
        env.update(zip(part.outputs, results))
    np.testing.assert_array_equal(env["y"], want)
    np.testing.assert_array_equal(want, np.maximum(x, 0) * 2 * 4)


def test_labels_are_unique_even_without_names():
    model = _model([oh.make_node("Relu", ["x"], ["a"]), oh.make_node("Relu", ["a"], ["b"]),
                    oh.make_node("Relu", ["b"], ["y"], name="Relu_0")],
                   [_vi("x", [1])], [_vi("y", [1])])
    labels = list(node_labels(model.graph).values())
    assert len(set(labels)) == 3 and "Relu_0" in labels


def test_duplicate_backend_names_are_refused():
    model = _model([oh.make_node("Relu", ["x"], ["y"])], [_vi("x", [1])], [_vi("y", [1])])
    with pytest.raises(UnsupportedError, match="twice"):
        plan_partitions(model, [EVERYTHING, EVERYTHING])


def test_unknown_sizes_make_boundary_bytes_unknown():
    model = _model([oh.make_node("Relu", ["x"], ["a"], name="r"),
                    oh.make_node("Sigmoid", ["a"], ["y"], name="s")],
                   [_vi("x", ["batch", 4])], [_vi("y", ["batch", 4])])
    plan = plan_partitions(model, [RELU_ADD, EVERYTHING], min_partition_nodes=1)
    assert plan.boundary_bytes() is None
    assert plan.boundary_bytes({"batch": 8}) == 8 * 4 * 4


def test_a_constant_only_a_body_reads_leaves_its_constant_partition():
    """silero-vad's If branches read a Constant node's value that no top-level node reads;
    the constant partition must still hand it to the If's partition."""
    then = oh.make_graph([oh.make_node("Add", ["x", "k"], ["t"])], "then", [], [_vi("t", [2])])
    other = oh.make_graph([oh.make_node("Sub", ["x", "k"], ["e"])], "else", [], [_vi("e", [2])])
    nodes = [oh.make_node("Constant", [], ["k"], name="k",
                          value=numpy_helper.from_array(np.array([1.0, 2.0], np.float32))),
             oh.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)]
    model = _model(nodes, [_vi("x", [2]), _vi("c", [], TensorProto.BOOL)], [_vi("y", [2])])
    plan = plan_partitions(model, [EVERYTHING], min_partition_nodes=1)
    [constant] = [p for p in plan.partitions if p.constant]
    assert constant.outputs == ["k"]
    [runtime] = plan.runtime_partitions
    sub = Extractor(model, plan).extract(runtime, {"k": np.array([1.0, 2.0], np.float32)})
    assert "k" in sub.graph.initializers
