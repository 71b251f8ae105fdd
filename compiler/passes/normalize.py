"""Canonical forms that later rules match on.

- ``Sum(a, b)`` -> ``Add(a, b)`` (old exporters write residual adds as two-input Sum);
- ``Sum(a)`` -> ``Identity(a)``;
- ``Dropout(x)`` in inference -> ``Identity(x)`` when only its first output is used.

``RemoveWholeSlice`` (a Slice that keeps every element -> its input) runs as a step of its
own, ``remove-whole-slices``, which engines that clean up at their load skip.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes._util import const, is_onnx
from kiln.compiler.passes.rule import Match, Rule


class SumToAdd(Rule):
    """Sum(a, b) -> Add(a, b); Sum(a) -> Identity(a)."""

    name = "Sum->Add"
    ops = frozenset({"Sum"})

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
    ops = frozenset({"Dropout"})

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


#: An end at or past this keeps a whole axis of any size (exporters write 2**31 - 1 or more).
_NO_END = 2**31 - 1


class RemoveWholeSlice(Rule):
    """``Slice(x)`` that keeps every element -> ``x``: each sliced axis starts at 0 (or at or
    before ``-size``), ends at or past its static size (a symbolic size: at 2**31 - 1 or
    past), with step 1. jax2tf / tf2onnx write
    these (Magika's ``strided_slice`` of a [1, 512, 508, 1] Conv output, ends 2**31 - 1):
    onnxruntime and OpenVINO drop them at load, kiln's native engine would copy the tensor."""

    name = "RemoveWholeSlice"
    ops = frozenset({"Slice"})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "Slice") or len(node.inputs) < 3 or not node.outputs:
            return None
        data, out = node.inputs[0], node.outputs[0]
        if data is None or data.shape is None or out.is_graph_output():
            return None
        starts, ends = const(node.inputs[1]), const(node.inputs[2])
        given = [v is not None for v in (list(node.inputs) + [None, None])[3:5]]
        axes = const(node.inputs[3]) if given[0] else None
        steps = const(node.inputs[4]) if given[1] else None
        if starts is None or ends is None or given[0] and axes is None \
                or given[1] and (steps is None or bool((steps != 1).any())):
            return None
        rank = len(data.shape)
        axes = axes.reshape(-1) if axes is not None else np.arange(starts.size)
        if not (starts.size == ends.size == axes.size) or axes.size == 0:
            return None
        for axis, start, end in zip(axes.tolist(), starts.reshape(-1).tolist(),
                                    ends.reshape(-1).tolist()):
            if not -rank <= axis < rank:
                return None
            size = data.shape[axis % rank]
            if not isinstance(size, int):  # a symbolic size: only an end no tensor reaches
                if start != 0 or end < _NO_END:
                    return None
            elif not (start == 0 or start <= -size) or end < size:
                return None
        return Match(node, [node])

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node = match.root
        ir.convenience.replace_all_uses_with(node.outputs[0], node.inputs[0])
        graph.remove(node, safe=True)
