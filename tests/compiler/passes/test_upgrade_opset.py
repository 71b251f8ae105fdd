"""The opset upgrade before transformer fusions: when it runs, and failing safely."""

from __future__ import annotations

import numpy as np
from compiler_cases import ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.upgrade_opset import (
    UpgradeOpsetPass,
    looks_like_transformer,
    raise_in_place,
)


def _reduce_model(opset: int):
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1])]
    return float_model(nodes, {"x": [2, 3]}, {"y": [2, 1]}, {}, opset=opset)


def test_upgrade_keeps_numbers_and_converts_attributes_to_inputs():
    model = _reduce_model(14)
    feeds = {"x": rand(2, 3)}
    want = run_reference(model, feeds)
    step = UpgradeOpsetPass(20)
    assert step(model).modified and step.fired == {"opset 14 -> 20": 1}
    assert model.opset_imports[""] == 20
    node = next(n for n in model.graph if n.op_type == "ReduceMean")
    assert "axes" not in node.attributes and len(node.inputs) == 2
    assert abs(run_reference(model, feeds)[0] - want[0]).max() < 1e-6


def test_already_new_enough_or_not_a_transformer_is_left_alone():
    erf = float_model([helper.make_node("Erf", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, {},
                      opset=20)
    assert looks_like_transformer(erf)
    assert not UpgradeOpsetPass(20)(erf).modified
    cnn = float_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, {},
                      opset=9)
    assert not looks_like_transformer(cnn)
    assert not UpgradeOpsetPass(20)(cnn).modified and cnn.opset_imports[""] == 9


def test_a_converter_failure_leaves_the_model_untouched():
    model = _reduce_model(14)
    step = UpgradeOpsetPass(99)  # no such opset: both converters refuse
    assert not step(model).modified
    assert model.opset_imports[""] == 14 and ops(model) == ["ReduceMean"]
    assert any("opset 14 -> 99" in why for why in step.rejected)


def test_compatible_ops_are_raised_in_place():
    """Ops whose schemas only took new types since, and a ReduceMean whose axes become an
    input: the same graph, values and weights, at the new opset."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Shape", ["h"], ["s"]),
             helper.make_node("Cast", ["s"], ["sf"], to=1),
             helper.make_node("ReduceMean", ["h"], ["m"], axes=[-1]),
             helper.make_node("ReduceMean", ["h"], ["m2"], axes=[-1]),  # a second: own name
             helper.make_node("Add", ["m", "m2"], ["y"])]
    model = float_model(nodes, {"x": [2, 3]}, {"y": [2, 1]}, {"w": rand(3, 4)}, opset=14)
    feeds = {"x": rand(2, 3, seed=1)}
    want = run_reference(model, feeds)
    graph, weight = model.graph, model.graph.initializers["w"].const_value
    assert raise_in_place(model, 23)
    assert model.graph is graph and model.opset_imports[""] == 23
    assert model.graph.initializers["w"].const_value is weight
    means = [n for n in model.graph if n.op_type == "ReduceMean"]
    assert all("axes" not in n.attributes and len(n.inputs) == 2 for n in means)
    assert len({n.inputs[1].name for n in means}) == 2
    assert abs(run_reference(model, feeds)[0] - want[0]).max() < 1e-6


def test_an_op_that_changed_meaning_goes_to_the_converter():
    pad = float_model([helper.make_node("Pad", ["x", "pads"], ["y"])], {"x": [2]}, {"y": [4]},
                      {"pads": np.array([1, 1], np.int64)}, opset=14)
    assert not raise_in_place(pad, 20)  # Pad took an axes input and a mode since
    assert pad.opset_imports[""] == 14


def test_the_converter_shares_the_weights_and_lets_the_old_graph_go():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Pad", ["h", "pads"], ["p"]),  # not raised in place
             helper.make_node("ReduceMean", ["p"], ["y"], axes=[-1])]
    model = float_model(nodes, {"x": [2, 3]}, {"y": [4, 1]},
                        {"w": rand(3, 4), "pads": np.array([1, 0, 1, 0], np.int64)}, opset=14)
    weight = model.graph.initializers["w"].const_value
    old_graph = model.graph
    assert UpgradeOpsetPass(20)(model).modified
    assert model.graph.initializers["w"].const_value is weight  # not a copy of it
    # a rewrite rule holding one of the old graph's nodes must not keep the weights alive
    assert not old_graph.initializers
    assert all(v is None or v.const_value is None for n in old_graph for v in n.inputs)


def test_the_compatible_changes_are_versions_onnx_knows():
    import onnx

    from kiln.compiler.passes.upgrade_opset import _COMPATIBLE_CHANGES

    for op, versions in _COMPATIBLE_CHANGES.items():
        for version in versions:
            assert onnx.defs.get_schema(op, version, "").since_version == version, (op, version)


def test_a_schema_change_that_only_adds_types_is_read_from_onnx():
    from kiln.compiler.passes.upgrade_opset import _types_widened_only

    assert _types_widened_only("GreaterOrEqual", 16)  # bfloat16 added, nothing else
    assert _types_widened_only("Where", 16)
    assert not _types_widened_only("Softmax", 13)  # same signature, axis default -1 (was 1)
    assert not _types_widened_only("Squeeze", 13)  # axes became an input
    assert not _types_widened_only("Erf", 13)  # integer types dropped


def test_a_comparison_graph_is_raised_in_place_without_the_converter(monkeypatch):
    from onnxscript import version_converter

    def refuse(*args, **kwargs):
        raise AssertionError("the converter ran")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    nodes = [helper.make_node("GreaterOrEqual", ["x", "x"], ["b"]),
             helper.make_node("Where", ["b", "x", "x"], ["y"])]
    model = float_model(nodes, {"x": [2, 3]}, {"y": [2, 3]}, {}, opset=14)
    assert UpgradeOpsetPass(20, applies=lambda m: True)(model).modified
    assert model.opset_imports[""] == 20
