"""Canonical forms that later rules match on.

- ``Sum(a, b)`` -> ``Add(a, b)`` (old exporters write residual adds as two-input Sum);
- ``Sum(a)`` -> ``Identity(a)``;
- ``Dropout(x)`` in inference -> ``Identity(x)`` when only its first output is used.
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.compiler.passes._util import is_onnx
from kiln.compiler.passes.rule import Match, Rule


class SumToAdd(Rule):
    """Sum(a, b) -> Add(a, b); Sum(a) -> Identity(a)."""

    name = "Sum->Add"

    def match(self, node: ir.Node) -> Match | None:
        if is_onnx(node, "Sum") and len(node.inputs) in (1, 2):
            return Match(node, [node])
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node = match.root
        op = "Add" if len(node.inputs) == 2 else "Identity"
        new = ir.node(op, list(node.inputs), name=node.name)
        ir.convenience.replace_nodes_and_values(
            graph, node, [node], [new], [node.outputs[0]], [new.outputs[0]])


class DropoutToIdentity(Rule):
    """Dropout(x) -> Identity(x): inference mode, mask output unused."""

    name = "Dropout->Identity"

    def match(self, node: ir.Node) -> Match | None:
        if is_onnx(node, "Dropout"):
            return Match(node, [node])
        return None

    def check(self, match: Match) -> str | None:
        node = match.root
        if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
            return "the dropout mask is used"
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            training = node.inputs[2].const_value
            if training is None or bool(training.numpy()):
                return "training_mode is not a constant false"
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node = match.root
        new = ir.node("Identity", [node.inputs[0]], name=node.name)
        ir.convenience.replace_nodes_and_values(
            graph, node, [node], [new], [node.outputs[0]], [new.outputs[0]])


NORMALIZE_RULES = [SumToAdd(), DropoutToIdentity()]
