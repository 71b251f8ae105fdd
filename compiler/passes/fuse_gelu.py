"""Fuse the erf and tanh forms of GELU into ONNX ``Gelu`` (opset 20).

    exact:  gelu(x) = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
    tanh:   gelu(x) ~ 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))

Exporters write the exact form as ``Div(x, 1.4142) -> Erf -> Add 1 -> Mul x -> Mul 0.5`` (or
``Mul(x, 0.7071)`` inside, or ``0.5 * x`` formed first, or PyTorch's dynamo exporter's
``Mul(0.5, 1 + erf) -> Mul x``) and the tanh form with ``Pow(x, 3)``
or ``x * x * x``; operands of Add/Mul come in either order. The rule is anchored on the Erf
or Tanh node and walks outwards; ``check`` compares every constant with the value the
formula needs (relative 1e-3) and names the one that differs.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes._util import const, is_onnx, opset, sole_consumer
from kiln.compiler.passes.rule import Match, Rule, RulePass

GELU_OPSET = 20
_SQRT2 = math.sqrt(2.0)
_TANH_K = math.sqrt(2.0 / math.pi)


def _scalar(value: ir.Value | None) -> float | None:
    array = const(value)
    return None if array is None or array.size != 1 else float(array.reshape(-1)[0])


def _split(node: ir.Node) -> tuple[ir.Value, float] | None:
    """A binary node with one constant-scalar operand: (the other operand, the scalar)."""
    if len(node.inputs) != 2:
        return None
    for i in (0, 1):
        k = _scalar(node.inputs[i])
        other = node.inputs[1 - i]
        if k is not None and other is not None:
            if node.op_type in ("Div", "Sub", "Pow") and i == 0:
                return None  # c / x, c - x, c ^ x are not what we look for
            return other, k
    return None


def _other(node: ir.Node, value: ir.Value) -> ir.Value | None:
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    return b if a is value else a if b is value else None


class FuseGelu(Rule):
    """0.5 * x * (1 + erf(x / sqrt 2)) -> Gelu(x); the tanh form -> Gelu(x, "tanh")."""

    name = "FuseGelu"
    ops = frozenset({"Erf", "Tanh"})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "Erf", "Tanh"):
            return None
        found = self._inner(node)
        if found is None:
            return None
        x, inner_nodes, consts = found
        tail = self._tail(node, x)
        if tail is None:
            return None
        tail_nodes, tail_consts = tail
        return Match(tail_nodes[-1], inner_nodes + [node] + tail_nodes,
                     {"x": x, "consts": consts + tail_consts,
                      "approximate": "none" if node.op_type == "Erf" else "tanh"})

    @staticmethod
    def _inner(node: ir.Node) -> tuple[ir.Value, list[ir.Node], list] | None:
        """x and the nodes between x and the Erf/Tanh, with (name, value, wanted) constants."""
        arg = node.inputs[0].producer() if node.inputs[0] is not None else None
        if arg is None or not is_onnx(arg, "Mul", "Div"):
            return None
        split = _split(arg)
        if split is None:
            return None
        inner, k = split
        if node.op_type == "Erf":
            want = _SQRT2 if arg.op_type == "Div" else 1.0 / _SQRT2
            return inner, [arg], [("erf scale", k, want)]
        if arg.op_type != "Mul":  # tanh: Mul(x + 0.044715 x^3, sqrt(2/pi))
            return None
        poly = inner.producer()
        if poly is None or not is_onnx(poly, "Add"):
            return None
        for i in (0, 1):
            x, cubic = poly.inputs[i], poly.inputs[1 - i]
            if x is None:
                continue
            scaled = cubic.producer() if cubic is not None else None
            if scaled is None or not is_onnx(scaled, "Mul") or _split(scaled) is None:
                continue
            cube_value, c = _split(scaled)  # type: ignore[misc]
            cube = cube_value.producer()
            if cube is None:
                continue
            if is_onnx(cube, "Pow") and cube.inputs[0] is x and _scalar(cube.inputs[1]) == 3.0:
                nodes = [cube, scaled, poly, arg]
            elif is_onnx(cube, "Mul") and x in cube.inputs:
                sq = _other(cube, x)
                sq_node = sq.producer() if sq is not None else None
                if sq_node is None or not is_onnx(sq_node, "Mul") or list(sq_node.inputs) != [x, x]:
                    continue
                nodes = [sq_node, cube, scaled, poly, arg]
            else:
                continue
            return x, nodes, [("cubic coefficient", c, 0.044715), ("tanh scale", k, _TANH_K)]
        return None

    @staticmethod
    def _tail(node: ir.Node, x: ir.Value) -> tuple[list[ir.Node], list] | None:
        """The ``(1 + .) * x * 0.5`` after the Erf/Tanh, in any operand order."""
        add = sole_consumer(node.outputs[0])
        if add is None or not is_onnx(add, "Add"):
            return None
        one = _other(add, node.outputs[0])
        mul1 = sole_consumer(add.outputs[0])
        if one is None or mul1 is None or not is_onnx(mul1, "Mul"):
            return None
        partner = _other(mul1, add.outputs[0])
        if partner is x:  # (x * phi) * 0.5
            mul2 = sole_consumer(mul1.outputs[0])
            if mul2 is None or not is_onnx(mul2, "Mul"):
                return None
            half = _other(mul2, mul1.outputs[0])
            return [add, mul1, mul2], [("offset", _scalar(one), 1.0),
                                       ("outer factor", _scalar(half), 0.5)]
        if partner is not None and _scalar(partner) is not None:  # ((1 + phi) * 0.5) * x
            mul2 = sole_consumer(mul1.outputs[0])
            if mul2 is None or not is_onnx(mul2, "Mul") or _other(mul2, mul1.outputs[0]) is not x:
                return None
            return [add, mul1, mul2], [("offset", _scalar(one), 1.0),
                                       ("outer factor", _scalar(partner), 0.5)]
        half_node = partner.producer() if partner is not None else None
        if half_node is None or not is_onnx(half_node, "Mul") or x not in half_node.inputs:
            return None
        half = _other(half_node, x)
        if sole_consumer(half_node.outputs[0]) is not mul1:
            return None
        return [half_node, add, mul1], [("offset", _scalar(one), 1.0),
                                        ("outer factor", _scalar(half), 0.5)]

    def check(self, match: Match) -> str | None:
        version = opset(match.root.graph)
        if version < GELU_OPSET:
            return f"the model imports opset {version}; Gelu needs {GELU_OPSET}"
        for what, got, want in match["consts"]:
            if got is None:
                return f"{what} is not a constant scalar"
            if not np.isclose(got, want, rtol=1e-3):
                return f"{what} is {got:.6g}, GELU needs {want:.6g}"
        x: ir.Value = match["x"]
        for node in match.nodes[:-1]:
            for out in node.outputs:
                users = [u for u in out.consumers() if u not in match.nodes]
                if users or out.is_graph_output():
                    return f"{node.op_type} output is used outside the GELU"
        if x.dtype not in (None, ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16,
                           ir.DataType.DOUBLE):
            return f"element type {x.dtype} is not floating point"
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        last = match.nodes[-1]
        gelu = ir.node("Gelu", [match["x"]], attributes={"approximate": match["approximate"]},
                       name=last.name)
        ir.convenience.replace_nodes_and_values(
            graph, last, match.nodes, [gelu], [last.outputs[0]], [gelu.outputs[0]])


class FuseGeluPass(RulePass):
    """Fuse both GELU forms into ONNX Gelu; the model must import opset >= 20."""

    def __init__(self) -> None:
        super().__init__([FuseGelu()])
