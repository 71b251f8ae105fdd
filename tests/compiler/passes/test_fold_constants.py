"""Constant folding: ConstantOfShape weights and Shape-derived subgraphs disappear."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler.passes.fold_constants import FoldConstantsPass


def test_constant_of_shape_weights_become_initializers():
    fill = numpy_helper.from_array(np.array([0.5], np.float32))
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=fill),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    model = float_model(nodes, {"x": [1, 2, 3, 3]}, {"y": [1, 4, 3, 3]},
                        {"wshape": np.array([4, 2, 1, 1], np.int64)})
    feeds = {"x": rand(1, 2, 3, 3)}
    want = run_reference(model, feeds)
    step = FoldConstantsPass()
    assert step(model).modified
    assert ops(model) == ["Conv"]
    assert step.fired["fold ConstantOfShape"] == 1
    assert_close(want, run_reference(model, feeds))


def test_shape_arithmetic_on_static_shapes_folds_away():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    model = float_model(nodes, {"x": [2, 3, 4]}, {"y": [2, 12]}, inits)
    feeds = {"x": rand(2, 3, 4)}
    want = run_reference(model, feeds)
    FoldConstantsPass()(model)
    assert ops(model) == ["Reshape"]
    assert_close(want, run_reference(model, feeds))


def test_values_without_a_shape_get_one_and_shapes_already_known_are_kept():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    model = float_model(nodes, {"x": [2, 3]}, {"y": [2, 3]},
                        {"b": np.ones((1, 3), np.float32)})
    relu, add = model.graph
    assert relu.outputs[0].shape is None  # nothing declared for the intermediate value
    known = add.outputs[0].shape
    FoldConstantsPass()(model)
    assert relu.outputs[0].shape == ir.Shape([2, 3])
    assert relu.outputs[0].dtype == ir.DataType.FLOAT
    assert add.outputs[0].shape == known


def test_a_reader_of_a_folded_value_has_its_shape_inferred_again():
    nodes = [helper.make_node("Mul", ["half", "two"], ["target"]),
             helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    inits = {"half": np.array([3, 1], np.int64), "two": np.array([1, 2], np.int64)}
    model = float_model(nodes, {"x": [6]}, {"y": [3, 2]}, inits)
    reshape = model.graph.node(1)
    reshape.outputs[0].shape = ir.Shape(["a", "b"])  # named, as an import could leave it
    reshape.outputs[0].dtype = ir.DataType.FLOAT
    FoldConstantsPass()(model)
    assert reshape.outputs[0].shape == ir.Shape([3, 2])  # its input is now a constant


def test_a_graph_without_constant_of_shape_folds_as_before():
    nodes = [helper.make_node("Mul", ["c", "two"], ["c2"]),
             helper.make_node("Add", ["x", "c2"], ["y"])]
    model = float_model(nodes, {"x": [2]}, {"y": [2]},
                        {"c": np.array([1, 2], np.float32), "two": np.array(2, np.float32)})
    feeds = {"x": rand(2)}
    want = run_reference(model, feeds)
    step = FoldConstantsPass()
    assert step(model).modified
    assert ops(model) == ["Add"]
    assert step.fired["fold Mul"] == 1
    assert_close(want, run_reference(model, feeds))


def test_nothing_to_fold_reports_unmodified():
    model = float_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, {})
    step = FoldConstantsPass()
    assert not step(model).modified
    assert not step.fired


def test_cast_like_with_known_target_keeps_saturate():
    like = helper.make_tensor_value_info("like", TensorProto.FLOAT8E5M2, [0])
    node = helper.make_node("CastLike", ["x", "like"], ["y"], saturate=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [3]), like],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT8E5M2, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model = ir.serde.deserialize_model(model)
    FoldConstantsPass()(model)
    [cast] = list(model.graph)
    assert cast.op_type == "Cast"
    assert cast.attributes["saturate"].as_int() == 0
    assert cast.attributes["to"].as_int() == TensorProto.FLOAT8E5M2
    assert model.graph.outputs[0].name == "y"


def test_the_folders_overrides_are_the_hooks_the_libraries_call(monkeypatch):
    """The fold's two speed-ups override private hooks of onnxscript's folder and onnx_ir's
    lift; if either library renamed its hook, the override would silently stop applying."""
    from onnx_ir.passes.common import LiftConstantsToInitializersPass
    from onnxscript.optimizer import _constant_folding

    from kiln.compiler.passes import fold_constants as module

    calls = {"infer": 0, "lift": 0}
    infer = module._FolderInferringWhatChanged._do_inference
    lift = module._LiftConstants._constant_node_attribute_to_tensor

    def counting_infer(self, node):
        calls["infer"] += 1
        return infer(self, node)

    def counting_lift(self, *args):
        calls["lift"] += 1
        return lift(self, *args)

    assert hasattr(_constant_folding.FoldConstantsPass, "_do_inference")
    assert hasattr(LiftConstantsToInitializersPass, "_constant_node_attribute_to_tensor")
    monkeypatch.setattr(module._FolderInferringWhatChanged, "_do_inference", counting_infer)
    monkeypatch.setattr(module._LiftConstants, "_constant_node_attribute_to_tensor",
                        counting_lift)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"]),
             helper.make_node("Relu", ["y"], ["z"])]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    model = float_model(nodes, {"x": [2, 3, 4]}, {"z": [2, 12]}, inits)
    assert FoldConstantsPass()(model).modified
    assert calls["infer"] > 0 and calls["lift"] > 0


def _constant_of_shape_imported(shape_input: str, inputs: dict[str, list], inits: dict):
    """x -> ConstantOfShape(shape_input) -> y, imported (shapes inferred) as kiln imports it."""
    import onnx

    from kiln.compiler.frontend import import_model

    fill = numpy_helper.from_array(np.array([0.5], np.float32))
    nodes = [helper.make_node("Shape", ["x"], ["xs"]),
             helper.make_node("ConstantOfShape", [shape_input], ["y"], value=fill)]
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("xs", TensorProto.INT64, None)],
        [numpy_helper.from_array(v, n) for n, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return import_model(onnx.ModelProto.FromString(proto.SerializeToString()))


def test_the_large_constant_of_shape_walk_runs_only_when_a_fold_may_pass_the_usual_limit():
    from kiln.compiler.passes.fold_constants import MAX_FOLDED_ELEMENTS, _may_fold_large

    small = _constant_of_shape_imported("s", {"x": [2]}, {"s": np.array([4, 8], np.int64)})
    assert not _may_fold_large(small)  # known 32 elements: the usual walk folds it
    big = np.array([MAX_FOLDED_ELEMENTS // 1024, 2048], np.int64)  # twice the usual limit
    assert _may_fold_large(_constant_of_shape_imported("s", {"x": [2]}, {"s": big}))
    # the shape of a graph input of unknown size: nothing folds it, the walk is not needed
    assert not _may_fold_large(_constant_of_shape_imported("xs", {"x": ["n"]}, {}))
    # a shape import could not infer: anything may come of it
    unknown = _constant_of_shape_imported("s", {"x": [2]}, {"s": np.array([4, 8], np.int64)})
    next(n for n in unknown.graph if n.op_type == "ConstantOfShape").outputs[0].shape = None
    assert _may_fold_large(unknown)


def test_the_nodes_left_out_of_the_folder_are_the_ones_it_would_leave_as_they_are():
    """The fast path only hands onnxscript's folder fewer nodes: on a graph mixing what folds
    (constant shape arithmetic, a Shape of a static value) with what does not (a Conv on an
    input, a Relu), the result is the folder's own."""
    from kiln.compiler.passes import fold_constants

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    two = numpy_helper.from_array(np.array([2], np.int64), "two")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Mul", ["two", "two"], ["four"]),
             helper.make_node("Concat", ["s", "four"], ["shape"], axis=0),
             helper.make_node("Add", ["r", "r"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("shape", TensorProto.INT64, None)],
        initializer=[weight, two])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def folded(fast: bool) -> list[str]:
        from kiln.compiler.frontend import import_model

        model = import_model(proto)
        if not fast:
            original = fold_constants._FolderInferringWhatChanged._inert
            fold_constants._FolderInferringWhatChanged._inert = lambda self, node: False
        try:
            fold_constants.FoldConstantsPass()(model)
        finally:
            if not fast:
                fold_constants._FolderInferringWhatChanged._inert = original
        shape = model.graph.outputs[1]
        return [n.op_type for n in model.graph] + [repr(shape.const_value.numpy().tolist())
                                                    if shape.const_value is not None else ""]

    fast, slow = folded(True), folded(False)
    assert fast == slow and fast[-1] == "[1, 4, 8, 8, 4]"
