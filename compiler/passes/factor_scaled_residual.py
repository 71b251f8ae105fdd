"""Factor a residual that adds a scaled copy of itself into one scaling.

    x + x * s  ->  x * (1 + s)

Squeeze-excitation variants (the RSE layers of PP-OCR's detection neck) add a tensor to its
own channel-gated copy. Written as exported, that is two passes over the large tensor (the
Mul, then the Add); factored, it is one pass plus an Add on the small gate ``s``. Exact up
to rounding: one product instead of a product and a sum. The rule needs ``x * s`` to have
``x``'s shape (``s`` broadcasts into x, never x into s), which shape inference states.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes._util import is_onnx, new_initializer, sole_consumer
from kiln.compiler.passes.rule import Match, Rule, RulePass

_FLOATS = {ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16,
           ir.DataType.DOUBLE: np.float64}


class FactorScaledResidual(Rule):
    """Add(x, Mul(x, s)) (operands in any order) -> Mul(x, Add(s, 1))."""

    name = "FactorScaledResidual"
    ops = frozenset({"Add"})
    needs = frozenset({"Mul"})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "Add") or len(node.inputs) != 2 or None in node.inputs:
            return None
        for i in (0, 1):
            scaled, x = node.inputs[i], node.inputs[1 - i]
            mul = scaled.producer()
            if mul is None or not is_onnx(mul, "Mul") or len(mul.inputs) != 2:
                continue
            if mul.inputs[0] is x and mul.inputs[1] is not x:
                return Match(node, [mul, node], {"x": x, "s": mul.inputs[1], "mul": mul})
            if mul.inputs[1] is x and mul.inputs[0] is not x:
                return Match(node, [mul, node], {"x": x, "s": mul.inputs[0], "mul": mul})
        return None

    def check(self, match: Match) -> str | None:
        x: ir.Value = match["x"]
        mul: ir.Node = match["mul"]
        if sole_consumer(mul.outputs[0]) is not match.root:
            return "the scaled value is used outside the residual"
        if x.dtype not in _FLOATS:
            return f"element type {x.dtype} is not float, float16 or double"
        if x.shape is None or mul.outputs[0].shape is None:
            return "shapes are unknown"
        if x.shape != mul.outputs[0].shape:
            return f"x * s has shape {mul.outputs[0].shape}, not x's {x.shape}"
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        x: ir.Value = match["x"]
        root = match.root
        one = new_initializer(graph, np.array(1, _FLOATS[x.dtype]), "one")
        gate = ir.node("Add", [match["s"], one], name=f"{root.name}_gate")
        scaled = ir.node("Mul", [x, gate.outputs[0]], name=root.name)
        ir.convenience.replace_nodes_and_values(
            graph, root, match.nodes, [gate, scaled], [root.outputs[0]], [scaled.outputs[0]])


class FactorScaledResidualPass(RulePass):
    """x + x * s -> x * (1 + s) wherever x * s keeps x's shape."""

    def __init__(self) -> None:
        super().__init__([FactorScaledResidual()])
