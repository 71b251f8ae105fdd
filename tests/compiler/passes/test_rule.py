"""RulePass / OnnxscriptRulesPass: firing counts, rejection reasons, honest `modified`."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from compiler_cases import ops
from model_builders import float_model
from onnx import helper
from onnxscript.rewriter import RewriteRuleSet
from onnxscript.rewriter.rules.common import transpose_transpose_rule

from kiln.compiler.passes.rule import Match, OnnxscriptRulesPass, Rule, RulePass


class ReluToSigmoidUnlessNamedKeep(Rule):
    name = "Relu->Sigmoid"

    def match(self, node: ir.Node) -> Match | None:
        return Match(node, [node]) if node.op_type == "Relu" else None

    def check(self, match: Match) -> str | None:
        return "named keep" if match.root.name == "keep" else None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node = match.root
        new = ir.node("Sigmoid", list(node.inputs))
        ir.convenience.replace_nodes_and_values(graph, node, [node], [new], [node.outputs[0]],
                                                [new.outputs[0]])


def test_rule_pass_counts_firings_and_reasons():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="one"),
             helper.make_node("Relu", ["a"], ["b"], name="keep"),
             helper.make_node("Relu", ["b"], ["y"], name="two")]
    model = float_model(nodes, {"x": [2]}, {"y": [2]}, {})
    step = RulePass([ReluToSigmoidUnlessNamedKeep()])
    assert step(model).modified
    assert ops(model) == ["Sigmoid", "Relu", "Sigmoid"]
    assert step.fired == {"Relu->Sigmoid": 2}
    assert step.rejected["Relu->Sigmoid: named keep"] >= 1
    again = RulePass([ReluToSigmoidUnlessNamedKeep()])
    assert not again(model).modified and not again.fired


def test_onnxscript_rules_pass_counts_by_rule_name():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[1, 0])]
    model = float_model(nodes, {"x": [2, 3]}, {"y": [2, 3]}, {})
    step = OnnxscriptRulesPass([transpose_transpose_rule])
    assert step(model).modified
    assert step.fired == {"TransposeTranspose": 1}
    assert not OnnxscriptRulesPass([transpose_transpose_rule])(model).modified


def test_onnxscript_rules_pass_reports_why_a_rule_was_refused():
    """A BatchNormalization after a Conv whose weight is a graph input (not an initializer)
    matches the fusion's pattern but fails its condition: the report says so."""
    from kiln.compiler.passes.fuse_batchnorm import FuseBatchNormPass

    bn = {name: np.full(4, value, np.float32)
          for name, value in (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"],
                              ["y"])]
    model = float_model(nodes, {"x": [1, 3, 5, 5], "w": [4, 3, 1, 1]}, {"y": [1, 4, 5, 5]}, bn)
    step = FuseBatchNormPass()
    assert not step(model).modified and not step.fired
    assert sum(step.rejected.values()) == 1
    (reason,) = step.rejected
    assert reason.startswith("FuseBatchNormIntoConv: ") and "initializer" in reason.lower()


def test_a_rule_is_tried_only_where_the_graph_holds_every_op_and_edge_of_its_pattern():
    from onnxscript.rewriter.rules.common import matmul_add_to_gemm_rule

    from kiln.compiler.passes.rule import (
        Present,
        required_edges,
        required_ops,
        rules_that_may_match,
    )

    assert required_ops(matmul_add_to_gemm_rule) == {"Add", "MatMul"}
    assert required_edges(matmul_add_to_gemm_rule) == {("Add", "MatMul")}
    rules = RewriteRuleSet([matmul_add_to_gemm_rule, transpose_transpose_rule])
    assert rules_that_may_match(rules, Present({"Add", "Conv"}, {("Add", "Conv")})) is None
    wrong_way = Present({"Add", "MatMul"}, {("MatMul", "Add")})
    assert rules_that_may_match(rules, wrong_way) is None
    kept = rules_that_may_match(rules, Present({"Add", "MatMul"}, {("Add", "MatMul")}))
    assert [rule.rule for rule in kept.rules] == [matmul_add_to_gemm_rule]
    assert kept.remove_unused_nodes == rules.remove_unused_nodes


def test_a_rule_is_tried_only_at_nodes_of_its_root_op_type(monkeypatch):
    """Add(MatMul(a, b), c) is rooted at the Add: at the MatMul the rule is not tried at all
    (onnxscript would set up a match there only to fail it); at the Add it is."""
    from onnxscript.rewriter.rules.common import matmul_add_to_gemm_rule

    from kiln.compiler.passes.rule import _RootFiltered

    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    model = float_model(nodes, {"x": [2, 2]}, {"y": [2, 2]},
                        {"w": np.eye(2, dtype=np.float32), "b": np.zeros(2, np.float32)})
    tried = []
    monkeypatch.setattr(matmul_add_to_gemm_rule, "try_rewrite",
                        lambda model, graph, node, **kw: tried.append(node.op_type))
    filtered = _RootFiltered.of(matmul_add_to_gemm_rule)
    for node in model.graph:
        filtered.try_rewrite(model, model.graph, node)
    assert tried == ["Add"]
    assert filtered.name == matmul_add_to_gemm_rule.name  # the rest is the rule's own


def test_present_holds_the_ops_and_the_producer_consumer_pairs_of_a_model():
    from kiln.compiler.passes.rule import Present

    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    model = float_model(nodes, {"x": [2, 2]}, {"y": [2, 2]},
                        {"w": np.eye(2, dtype=np.float32), "b": np.zeros(2, np.float32)})
    present = Present.of(model)
    assert present.ops == {"MatMul", "Add"} and present.edges == {("Add", "MatMul")}


def test_a_rule_whose_ops_an_earlier_rule_creates_still_fires_in_the_same_pass():
    """Flatten -> Reshape makes the Reshape pair the next rule collapses; no Reshape was in
    the graph when the pass started."""
    from onnxscript.rewriter.rules.common import flatten_to_reshape_rule, reshape_reshape_rule

    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
             helper.make_node("Flatten", ["f"], ["y"], axis=1)]
    model = float_model(nodes, {"x": [2, 3, 4]}, {"y": [2, 12]}, {})
    ir.passes.common.ShapeInferencePass()(model)
    step = OnnxscriptRulesPass([reshape_reshape_rule, flatten_to_reshape_rule])
    assert step(model).modified
    assert ops(model) == ["Reshape"]
    assert step.fired == {"Flatten2Reshape": 2, "ReshapeReshape": 1}


@pytest.mark.parametrize("dead", [False, True])
def test_a_rule_set_that_matches_nothing_leaves_the_graph_as_onnxscript_would(dead):
    """A set tried and matching nothing (a Squeeze -> Reshape to 2-D keeps both) ends as
    onnxscript's own application does: a set with a rule that leaves nodes to the final
    removal of unused nodes removes dead ones; that removal is skipped when nothing is
    unused."""
    from onnxscript.rewriter.rules.common import squeeze_reshape_1d_rule

    nodes = [helper.make_node("Squeeze", ["x", "axes"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["y"])]
    if dead:
        nodes.append(helper.make_node("Abs", ["x"], ["unused"]))

    def model():
        return float_model(nodes, {"x": [1, 4]}, {"y": [2, 2]},
                           {"axes": np.array([0]), "shape": np.array([2, 2])})

    expected, got = model(), model()
    rules = RewriteRuleSet([squeeze_reshape_1d_rule])
    assert rules.remove_unused_nodes
    assert rules.apply_to_model(expected) == 0
    step = OnnxscriptRulesPass([squeeze_reshape_1d_rule])
    assert not step(got).modified and not step.fired
    assert ir.to_proto(got) == ir.to_proto(expected)
    assert [n.op_type for n in got.graph] == ["Squeeze", "Reshape"]


class _MatchesNothingHere(Rule):
    """Declares Softmax roots needing a MatMul; any call of ``match`` is a failure here."""

    name = "never-tried"
    ops = frozenset({"Softmax"})
    needs = frozenset({"MatMul"})

    def match(self, node: ir.Node) -> Match | None:
        raise AssertionError("a rule whose ops are absent was tried")

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        raise AssertionError


def test_rule_pass_skips_its_walk_when_no_rule_can_match_the_graphs_ops():
    nodes = [helper.make_node("Softmax", ["x"], ["y"])]  # a root, but no MatMul
    model = float_model(nodes, {"x": [2]}, {"y": [2]}, {})
    step = RulePass([_MatchesNothingHere()])
    assert not step(model).modified and not step.fired and not step.rejected
    with pytest.raises(AssertionError):  # with a MatMul the rule is tried
        RulePass([_MatchesNothingHere()])(float_model(
            [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Softmax", ["m"], ["y"])], {"x": [2, 2]}, {"y": [2, 2]},
            {"w": np.eye(2, dtype=np.float32)}))


def _kiln_rules() -> list[Rule]:
    """Every kiln rule the pipelines run that declares its ops."""
    from kiln.backends.registry import get_backend
    from kiln.compiler.capabilities import BackendCaps
    from kiln.compiler.passes.fuse_epilogue import FuseBatchNormEpilogue, FuseGemmEpilogue
    from kiln.compiler.passes.fuse_int8 import FuseByteTableIntoQOp, int8_rules
    from kiln.compiler.pipeline import build_pipeline

    rules: list[Rule] = [FuseGemmEpilogue(), FuseBatchNormEpilogue(), FuseByteTableIntoQOp()]
    for caps in (BackendCaps("onnxruntime"), get_backend("native").caps()):
        rules += int8_rules(caps)
        for _, step in build_pipeline(3, None, caps):
            rules += getattr(step, "rules", [])
    return [r for r in rules if isinstance(r, Rule) and r.ops is not None]


def test_each_kiln_rule_matches_only_at_the_op_types_it_declares():
    """A node of any other op type (its inputs a Relu's, so producers exist to look at)
    gets None from ``match``: the declaration that lets a RulePass skip its walk is true."""
    rules = _kiln_rules()
    assert len({type(r) for r in rules}) >= 12
    every_op = sorted(set().union(*(r.ops for r in rules)) | {"Relu", "Clip", "Add"})
    for rule in rules:
        for op in every_op:
            if op in rule.ops:
                continue
            relu = ir.node("Relu", [ir.Value(name="x")])
            node = ir.node(op, [relu.outputs[0], relu.outputs[0]], num_outputs=1)
            graph = ir.Graph([], node.outputs, nodes=[relu, node])  # noqa: F841 - owns them
            assert rule.match(node) is None, (rule.name, op)
