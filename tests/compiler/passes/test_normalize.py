"""Sum -> Add and inference Dropout -> Identity."""

from __future__ import annotations

from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.normalize import NORMALIZE_RULES
from kiln.compiler.passes.rule import RulePass


def test_sum_of_two_becomes_add_and_dropout_identity():
    nodes = [helper.make_node("Sum", ["a", "b"], ["s"]),
             helper.make_node("Dropout", ["s"], ["y"])]
    model = float_model(nodes, {"a": [2, 3], "b": [2, 3]}, {"y": [2, 3]}, {}, opset=9)
    feeds = {"a": rand(2, 3), "b": rand(2, 3, seed=1)}
    want = run_reference(model, feeds)
    step = RulePass(NORMALIZE_RULES)
    step(model)
    assert ops(model) == ["Add", "Identity"]
    assert step.fired == {"Sum->Add": 1, "Dropout->Identity": 1}
    assert_close(want, run_reference(model, feeds))


def test_sum_of_three_stays():
    nodes = [helper.make_node("Sum", ["a", "a", "a"], ["y"])]
    model = float_model(nodes, {"a": [2]}, {"y": [2]}, {})
    assert not RulePass(NORMALIZE_RULES)(model).modified
