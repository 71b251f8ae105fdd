"""Rewrites as data: a rule is ``match`` (the pattern), ``check`` (why not) and ``rewrite``.

``RulePass`` runs kiln's own rules; ``OnnxscriptRulesPass`` runs rules written with
onnxscript's rewriter. Both count how often each rule fired and the reasons each rejection
gave (``check`` for kiln's rules, the rule's condition for onnxscript's, read through its
matching tracer), so a report can say why a fusion did not happen.
"""

from __future__ import annotations

import abc
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import onnx_ir as ir
import onnxscript.optimizer
from onnxscript.rewriter import RewriteRule, RewriteRuleSet
from onnxscript.rewriter._basics import MatchingTracer, MatchResult, MatchStatus
from onnxscript.rewriter._matcher import SimplePatternMatcher
from onnxscript.rewriter._pattern_ir import NodeOutputPattern, NodePattern, StringConstantPattern

from kiln.compiler.graph_index import GraphIndex, graph_index, walk_nodes
from kiln.compiler.passes.cleanup import nothing_unused


@dataclasses.dataclass
class Match:
    """What a pattern bound: the root node, the nodes it covers and named pieces."""

    root: ir.Node
    nodes: list[ir.Node]
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


class Rule(abc.ABC):
    """One rewrite. Subclasses give a ``name`` and the three steps, and may say which op
    types a match needs (``ops``, ``needs``): a ``RulePass`` whose rules cannot match the
    graph's op types then skips its walk of the graph."""

    name: str = "rule"
    #: the op types of the nodes ``match`` can return a match at (None: any)
    ops: frozenset[str] | None = None
    #: op types that must be in the graph too for a match (a pattern's other nodes)
    needs: frozenset[str] = frozenset()

    def may_match(self, present: frozenset[str] | set[str]) -> bool:
        """Whether a graph holding the op types ``present`` (by op type, any domain) can
        hold a match."""
        return (self.ops is None or not self.ops.isdisjoint(present)) and self.needs <= present

    @abc.abstractmethod
    def match(self, node: ir.Node) -> Match | None:
        """The pattern rooted at ``node``, or None when the node does not start one."""

    def check(self, match: Match) -> str | None:
        """Why the match must not be rewritten (None accepts it)."""
        return None

    @abc.abstractmethod
    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        """Replace ``match.nodes`` in ``graph``."""


class CountingPass(ir.passes.InPlacePass):
    """An in-place pass that counts what it did (``fired``) and what it declined and why
    (``rejected``), per rule or reason: what the compile report shows for each step.

    ``keeps_shapes``: the pass leaves every value's type and shape as onnx's shape inference
    would give them (what it rewrites keeps its type and shape, what it makes carries its
    own), so a pipeline need not infer shapes again after it (``run_steps``)."""

    keeps_shapes: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.fired: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()


class RulePass(CountingPass):
    """Apply kiln rules over the main graph until none fires (at most ``max_rounds``).

    ``rejected`` holds the refusals of the last round: the ones that stand in the result
    (a node refused in every round counts once). ``keeps_shapes``: every rule replaces a
    value with one of the same type and shape (``CountingPass``)."""

    def __init__(self, rules: Sequence[Rule], max_rounds: int = 8,
                 keeps_shapes: bool = False) -> None:
        super().__init__()
        self.rules = list(rules)
        self.max_rounds = max_rounds
        self.keeps_shapes = keeps_shapes

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fired = Counter()
        self.rejected = Counter()
        present = graph_index(model).ops
        if not any(rule.may_match(present) for rule in self.rules):
            return ir.passes.PassResult(model, modified=False)  # every node would say no
        graph = model.graph
        for _ in range(self.max_rounds):
            changed = False
            dead: set[int] = set()
            self.rejected = Counter()
            for node in list(graph):
                if id(node) in dead or node.graph is not graph:
                    continue
                for rule in self.rules:
                    found = rule.match(node)
                    if found is None:
                        continue
                    why = rule.check(found)
                    if why is not None:
                        self.rejected[f"{rule.name}: {why}"] += 1
                        continue
                    dead.update(id(n) for n in found.nodes)
                    rule.rewrite(graph, found)
                    self.fired[rule.name] += 1
                    changed = True
                    break
            if not changed:
                break
        return ir.passes.PassResult(model, modified=bool(self.fired))


class OnnxscriptRulesPass(CountingPass):
    """Apply onnxscript rewrite rules, counting firings per rule name.

    Rules sharing a name (the commuted variants of one rule) are applied together.
    ``keeps_shapes``: every rule replaces a value with one of the same type and shape
    (``CountingPass``).
    """

    #: rule name -> op types a match needs that ``required_ops`` cannot see in the pattern
    #: (nodes it reaches only through an ``OrValue``)
    needs: dict[str, frozenset[str]] = {}

    def __init__(self, rules: Sequence[RewriteRule], max_rounds: int = 4,
                 keeps_shapes: bool = False) -> None:
        super().__init__()
        self.rules = list(rules)
        self.max_rounds = max_rounds
        self.keeps_shapes = keeps_shapes

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fired = Counter()
        groups: dict[str, list[RewriteRule]] = {}
        for rule in self.rules:
            groups.setdefault(rule.name or type(rule).__name__, []).append(rule)
        sets = {name: RewriteRuleSet(rules) for name, rules in groups.items()}
        index = graph_index(model)
        present = Present(index.ops, index.edges)
        # Each round first matches every set with a tracer that stops at the first match
        # (onnxscript then rewrites nothing), and rewrites only with a set that found one:
        # most sets match nothing, and the round at the fixpoint is the one whose refusals
        # stand, so it is matched once. (A tracer run that went on past a match would build
        # the replacement's nodes, left reading the matched values: other rules would then
        # see those values as shared and refuse them.)
        at_fixpoint = False
        # whether the graph is as a set that matched nothing leaves it (constants propagated,
        # unused nodes removed): until a rewrite, skipping another set has nothing left to do
        tidy = False
        for _ in range(self.max_rounds):
            self.rejected = Counter()
            round_count = 0
            for name, full_set in sets.items():
                rule_set = rules_that_may_match(full_set, present, self.needs)
                if rule_set is None:
                    if not tidy:
                        _skip(full_set, model, present.ops, index)
                        tidy = full_set.remove_unused_nodes
                    continue
                refused: Counter[str] = Counter()
                removes = rule_set.remove_unused_nodes
                rule_set.remove_unused_nodes = False  # after a tracer run: _remove_unused
                try:
                    rule_set.apply_to_model(
                        model, tracer=_RejectionTracer(name, refused, stop_at_match=True))
                except _MatchFound:
                    rule_set.remove_unused_nodes = removes
                else:
                    if removes:
                        _remove_unused(model, index)
                    self.rejected.update(refused)
                    tidy = tidy or removes
                    continue
                count = rule_set.apply_to_model(model)
                if count:
                    self.fired[name] += count
                    round_count += count
                    present = Present.of(model)
                    index = None  # the graph is no longer as indexed
                    tidy = False
                else:  # matched, but its replacement failed: the refusals of the whole graph
                    rule_set.apply_to_model(model,
                                            tracer=_RejectionTracer(name, self.rejected))
            if not round_count:
                at_fixpoint = True
                break
        if not at_fixpoint:  # out of rounds: the refusals of the graph as it stands
            self.rejected = Counter()
            for name, full_set in sets.items():
                rule_set = rules_that_may_match(full_set, present, self.needs)
                if rule_set is not None:
                    rule_set.apply_to_model(model, tracer=_RejectionTracer(name, self.rejected))
                elif not tidy:
                    _skip(full_set, model, present.ops, index)
                    tidy = full_set.remove_unused_nodes
        _forget_matches(self.rules)
        return ir.passes.PassResult(model, modified=bool(self.fired))


def _pattern_nodes(rule: RewriteRule) -> list[NodePattern]:
    """Every node of ``rule``'s pattern, once: its output nodes and every node they reach
    through plain inputs (alternatives, variables and constants are not nodes)."""
    nodes: list[NodePattern] = []
    todo: list[NodePattern] = list(rule._target_pattern.output_nodes)  # noqa: SLF001
    seen: set[int] = set()
    while todo:
        pattern = todo.pop()
        if id(pattern) in seen:
            continue
        seen.add(id(pattern))
        nodes.append(pattern)
        todo += [v.producer() for v in pattern.inputs if isinstance(v, NodeOutputPattern)]
    return nodes


def _op_type(pattern: NodePattern) -> str | None:
    return pattern.op.value() if isinstance(pattern.op, StringConstantPattern) else None


def required_ops(rule: RewriteRule) -> frozenset[str]:
    """Op types a graph must hold for ``rule``'s pattern to match (nodes whose op type the
    pattern leaves open add none)."""
    return frozenset(op for op in map(_op_type, _pattern_nodes(rule)) if op is not None)


def required_edges(rule: RewriteRule) -> frozenset[tuple[str, str]]:
    """(consumer op, producer op) pairs a graph must hold for ``rule``'s pattern to match:
    each node of the pattern that reads another's output directly, by their op types."""
    needed: set[tuple[str, str]] = set()
    for pattern in _pattern_nodes(rule):
        for value in pattern.inputs:
            if not isinstance(value, NodeOutputPattern):
                continue
            consumer, producer = _op_type(pattern), _op_type(value.producer())
            if consumer is not None and producer is not None:
                needed.add((consumer, producer))
    return frozenset(needed)


@dataclasses.dataclass(frozen=True)
class Present:
    """The op types of every node onnxscript's rewriter visits (the graph, its subgraphs and
    the model's functions) and the (consumer op, producer op) pairs among them."""

    ops: set[str]
    edges: set[tuple[str, str]]

    @classmethod
    def of(cls, model: ir.Model) -> Present:
        ops: set[str] = set()
        edges: set[tuple[str, str]] = set()
        for graph in (model.graph, *model.functions.values()):
            for node in walk_nodes(graph):
                ops.add(node.op_type)
                for value in node.inputs:
                    producer = value.producer() if value is not None else None
                    if producer is not None:
                        edges.add((node.op_type, producer.op_type))
        return cls(ops, edges)


def _may_match(rule: RewriteRule, present: Present,
               needs: Mapping[str, frozenset[str]]) -> bool:
    return required_ops(rule) <= present.ops and required_edges(rule) <= present.edges and \
        needs.get(rule.name, frozenset()) <= present.ops


def rules_that_may_match(rule_set: RewriteRuleSet, present: Present,
                         needs: Mapping[str, frozenset[str]] | None = None
                         ) -> RewriteRuleSet | None:
    """``rule_set`` without the rules that cannot match a graph holding ``present``'s ops and
    edges (None when none can). onnxscript tries every rule at every node, and trying rules
    that cannot match cost most of the rewriting time (YOLOv8n: ~15 000 failed matches a
    compile). A rule that cannot match changes nothing where it is tried, so the smaller set
    rewrites exactly as the whole one (its per-graph setup and cleanup only serve its own
    matches), and it keeps the set's final removal of unused nodes."""
    rules = [rule for rule in rule_set.rules if _may_match(rule, present, needs or {})]
    if not rules:
        return None
    subset = RewriteRuleSet([_RootFiltered.of(rule) for rule in rules])
    subset.remove_unused_nodes = rule_set.remove_unused_nodes
    return subset


class _RootFiltered:
    """``rule`` tried only at nodes of its pattern's root op type. onnxscript tries every rule
    at every node, and a try sets up a whole match before its first step compares that op
    type (MiniLM-L6: ~6,600 tries a compile, most at a node of another op type). A node of
    another op type cannot match the rule's single output node, so the try it skips would
    have changed nothing (its tracer would have logged a plain mismatch, not a refusal)."""

    def __init__(self, rule: RewriteRule, op_type: str) -> None:
        self.rule = rule
        self._op_type = op_type

    @staticmethod
    def of(rule: RewriteRule) -> Any:
        """``rule`` filtered by its root op type, or ``rule`` itself when the root's op type
        is not one fixed name (or the pattern has several output nodes, or its own matcher)."""
        pattern = rule._target_pattern  # noqa: SLF001
        if not pattern.has_single_output_node or \
                type(rule._matcher) is not SimplePatternMatcher:  # noqa: SLF001
            return rule
        op_type = _op_type(pattern.output_node)
        return rule if op_type is None else _RootFiltered(rule, op_type)

    def try_rewrite(self, model: ir.Model, graph_or_function: Any, node: ir.Node,
                    **kwargs: Any) -> Any:
        if node.op_type != self._op_type:
            return None
        return self.rule.try_rewrite(model, graph_or_function, node, **kwargs)

    def __getattr__(self, name: str) -> Any:  # name, remove_nodes, the visitors, ...
        return getattr(self.rule, name)


def _skip(rule_set: RewriteRuleSet, model: ir.Model, present: set[str] | frozenset[str],
          index: GraphIndex | None = None) -> None:
    """What ``apply_to_model`` does to a graph even when no rule matches, done without
    trying the rules, so skipping a rule set leaves the graph exactly as applying it would
    (its constant propagation reads Constant nodes only). ``index``: the graph's, when it is
    as indexed."""
    if "Constant" in present:
        onnxscript.optimizer.basic_constant_propagation(model.graph)
        for function in model.functions.values():
            onnxscript.optimizer.basic_constant_propagation(function)
    if rule_set.remove_unused_nodes:
        _remove_unused(model, index)


def _remove_unused(model: ir.Model, index: GraphIndex | None = None) -> None:
    """onnxscript's removal of unused nodes (what a rule set ends with), skipped when a walk
    finds nothing it would change (``nothing_unused``: it looks up every node's schema).
    ``index``: the graph's, when it is as indexed."""
    if not nothing_unused(model, index):
        onnxscript.optimizer.remove_unused_nodes(model)


#: What onnxscript's pattern matchers keep of their last match (the graph, a node, the
#: bindings, the tracer)
_MATCH_STATE = ("_graph", "_current_node", "_match", "_tracer")


def _forget_matches(rules: Sequence[RewriteRule]) -> None:
    """Drop what the rules' matchers remember of the last graph they matched. onnxscript's
    common rules are module-level objects, so that memory would keep a graph, and every
    weight it holds (the whole imported model), alive for the life of the process."""
    for rule in rules:
        matcher = getattr(rule, "_matcher", None)
        for attr in _MATCH_STATE:
            if getattr(matcher, attr, None) is not None:
                setattr(matcher, attr, None)


class _MatchFound(Exception):
    """A tracer with ``stop_at_match`` saw a match: the rule set has something to rewrite."""


class _RejectionTracer(MatchingTracer):
    """Counts the matches whose condition (the rule's ``check``) failed, by reason;
    ``stop_at_match`` ends the matching at the first match (raising ``_MatchFound``)."""

    def __init__(self, name: str, rejected: Counter[str], stop_at_match: bool = False) -> None:
        super().__init__()
        self.name = name
        self.rejected = rejected
        self.stop_at_match = stop_at_match

    def log(self, rule: RewriteRule, container: ir.Graph | ir.Function, node: ir.Node,
            match_result: MatchResult, status: MatchStatus) -> None:
        if status == MatchStatus.SUCCESS and self.stop_at_match:
            raise _MatchFound
        if status == MatchStatus.CONDITION_FAILED:
            self.rejected[f"{self.name}: {match_result.reason or 'condition failed'}"] += 1
