"""Recognize hard-sigmoid and hard-swish in their exported forms.

Mobile convnets (MobileNetV3, PP-LCNet, the PP-OCR backbones) are exported with ReLU6
arithmetic instead of the ONNX ops. With relu6(t) = clip(t, 0, k) written as Clip(0, k):

    clip(x + c, 0, k) / k      = max(0, min(1, x / k + c / k)) = HardSigmoid(x, 1/k, c/k)
    x * clip(x + c, 0, k) / k  = x * HardSigmoid(x, 1/k, c/k)
    x * HardSigmoid(x, 1/6, 1/2)                             = HardSwish(x)      (opset >= 14)

The division may be written ``Div(t, k)`` or ``Mul(t, 1/k)``, Mul operands in either order,
and the outer scale may come before or after the multiplication by x. The Clip bounds
are attributes before opset 11 and constant inputs from 11. The rewritten ops are what
the epilogue fusion folds into a preceding Conv/Gemm; below opset 14, where ONNX has no
HardSwish, the ``x * HardSigmoid(x, 1/6, 1/2)`` pair is what it recognizes instead.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes._util import attr, const, is_onnx, opset
from kiln.compiler.passes.fuse_epilogue import activation_of
from kiln.compiler.passes.rule import Match, Rule, RulePass

HARD_SWISH_OPSET = 14
_RTOL = 1e-5


def _scalar(value: ir.Value | None) -> float | None:
    array = const(value)
    return None if array is None or array.size != 1 else float(array.reshape(-1)[0])


def _scale(node: ir.Node) -> tuple[ir.Value, float] | None:
    """``Div(t, k)`` or ``Mul(t, 1/k)`` (either order): (t, the factor t is multiplied by)."""
    if len(node.inputs) != 2 or None in node.inputs:
        return None
    if is_onnx(node, "Div"):
        k = _scalar(node.inputs[1])
        return (node.inputs[0], 1.0 / k) if k else None
    if is_onnx(node, "Mul"):
        for i in (0, 1):
            k = _scalar(node.inputs[i])
            if k is not None and const(node.inputs[1 - i]) is None:
                return node.inputs[1 - i], k
    return None


def _other(node: ir.Node, value: ir.Value) -> ir.Value | None:
    a, b = node.inputs
    return b if a is value else a if b is value else None


def _relu6_of_shift(value: ir.Value | None) -> tuple[ir.Value, float, float, list[ir.Node]] | None:
    """``Clip(Add(x, c), 0, k)``: (x, c, k, [add, clip])."""
    clip = value.producer() if value is not None else None
    if clip is None or not is_onnx(clip, "Clip") or clip.inputs[0] is None:
        return None
    found = activation_of(clip, clip.inputs[0])
    if found is None or found[1] != 0.0 or not found[2] > 0.0:
        return None
    add = clip.inputs[0].producer()
    if add is None or not is_onnx(add, "Add") or len(add.inputs) != 2 or None in add.inputs:
        return None
    for i in (0, 1):
        c = _scalar(add.inputs[i])
        if c is not None and const(add.inputs[1 - i]) is None:
            return add.inputs[1 - i], c, found[2], [add, clip]
    return None


def _used_only_inside(match: Match) -> str | None:
    """Why the covered nodes cannot go: an intermediate read outside the match."""
    for node in match.nodes[:-1]:
        for out in node.outputs:
            if out.is_graph_output() or any(u not in match.nodes for u in out.consumers()):
                return f"{node.op_type} output is used outside the pattern"
    return None


def _float_input(x: ir.Value) -> str | None:
    if x.dtype not in (None, ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16,
                       ir.DataType.DOUBLE):
        return f"element type {x.dtype} is not floating point"
    return None


def _is_hard_swish(alpha: float, beta: float) -> bool:
    """x * HardSigmoid(x, alpha, beta) is HardSwish(x): HardSwish's own (1/6, 1/2)."""
    return bool(np.isclose(alpha, 1 / 6, rtol=_RTOL) and np.isclose(beta, 0.5, rtol=_RTOL))


def _hard_sigmoid(x: ir.Value, alpha: float, beta: float, name: str) -> ir.Node:
    return ir.node("HardSigmoid", [x], attributes={"alpha": alpha, "beta": beta}, name=name)


def _hard_swish(graph: ir.Graph, x: ir.Value, alpha: float, beta: float,
                name: str) -> list[ir.Node]:
    """HardSwish(x) where the opset has it and the constants are its own, else x * hsig(x)."""
    if opset(graph) >= HARD_SWISH_OPSET and _is_hard_swish(alpha, beta):
        return [ir.node("HardSwish", [x], name=name)]
    hsig = _hard_sigmoid(x, alpha, beta, f"{name}_hsig")
    return [hsig, ir.node("Mul", [x, hsig.outputs[0]], name=name)]


class FuseHardSigmoid(Rule):
    """clip(x + c, 0, k) / k -> HardSigmoid(x, 1/k, c/k)."""

    name = "FuseHardSigmoid"
    ops = frozenset({"Div", "Mul"})  # the scale (``_scale``)
    needs = frozenset({"Clip", "Add"})  # relu6(x + c) (``_relu6_of_shift``)

    def match(self, node: ir.Node) -> Match | None:
        scaled = _scale(node)
        if scaled is None:
            return None
        found = _relu6_of_shift(scaled[0])
        if found is None:
            return None
        x, c, k, nodes = found
        return Match(node, [*nodes, node], {"x": x, "c": c, "k": k, "factor": scaled[1]})

    def check(self, match: Match) -> str | None:
        if not np.isclose(match["factor"] * match["k"], 1.0, rtol=_RTOL):
            return f"scale {match['factor']:.6g} is not 1 / {match['k']:.6g}"
        return _used_only_inside(match) or _float_input(match["x"])

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        k = match["k"]
        new = _hard_sigmoid(match["x"], 1.0 / k, match["c"] / k, match.root.name)
        ir.convenience.replace_nodes_and_values(
            graph, match.root, match.nodes, [new], [match.root.outputs[0]], [new.outputs[0]])


class FuseHardSwish(Rule):
    """x * clip(x + c, 0, k) / k (scale before or after the product) -> hard-swish of x."""

    name = "FuseHardSwish"
    ops = frozenset({"Div", "Mul"})
    needs = frozenset({"Clip", "Add"})

    def match(self, node: ir.Node) -> Match | None:
        # Scale outermost: Div(Mul(x, relu6), k) / Mul(Mul(x, relu6), 1/k).
        scaled = _scale(node)
        if scaled is not None:
            inner = scaled[0].producer()
            if inner is not None and is_onnx(inner, "Mul") and len(inner.inputs) == 2:
                for r in inner.inputs:
                    found = _relu6_of_shift(r)
                    if found is not None and _other(inner, r) is found[0]:
                        x, c, k, nodes = found
                        return Match(node, [*nodes, inner, node],
                                     {"x": x, "c": c, "k": k, "factor": scaled[1]})
        # Scale innermost: Mul(x, Div(relu6, k)) is left to FuseHardSigmoid + the rule below.
        return None

    def check(self, match: Match) -> str | None:
        if not np.isclose(match["factor"] * match["k"], 1.0, rtol=_RTOL):
            return f"scale {match['factor']:.6g} is not 1 / {match['k']:.6g}"
        return _used_only_inside(match) or _float_input(match["x"])

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        k = match["k"]
        new = _hard_swish(graph, match["x"], 1.0 / k, match["c"] / k, match.root.name)
        ir.convenience.replace_nodes_and_values(
            graph, match.root, match.nodes, new, [match.root.outputs[0]], [new[-1].outputs[0]])


class HardSigmoidMulToHardSwish(Rule):
    """x * HardSigmoid(x, 1/6, 1/2) -> HardSwish(x) (opset >= 14)."""

    name = "HardSigmoidMulToHardSwish"
    ops = frozenset({"Mul"})
    needs = frozenset({"HardSigmoid"})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "Mul") or len(node.inputs) != 2 or None in node.inputs:
            return None
        for v in node.inputs:
            hsig = v.producer()
            if hsig is not None and is_onnx(hsig, "HardSigmoid") and \
                    _other(node, v) is hsig.inputs[0]:
                return Match(node, [hsig, node], {"x": hsig.inputs[0], "hsig": hsig})
        return None

    def check(self, match: Match) -> str | None:
        version = opset(match.root.graph)
        if version < HARD_SWISH_OPSET:
            return f"the model imports opset {version}; HardSwish needs {HARD_SWISH_OPSET}"
        hsig = match["hsig"]
        alpha, beta = float(attr(hsig, "alpha", 0.2)), float(attr(hsig, "beta", 0.5))
        if not _is_hard_swish(alpha, beta):
            return f"HardSigmoid({alpha:.6g}, {beta:.6g}) is not HardSwish's (1/6, 1/2)"
        return _used_only_inside(match) or _float_input(match["x"])

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        new = ir.node("HardSwish", [match["x"]], name=match.root.name)
        ir.convenience.replace_nodes_and_values(
            graph, match.root, match.nodes, [new], [match.root.outputs[0]], [new.outputs[0]])


HARD_ACTIVATION_RULES: list[Rule] = [FuseHardSwish(), FuseHardSigmoid(),
                                     HardSigmoidMulToHardSwish()]


def needs_hard_swish_opset(model: ir.Model) -> bool:
    """The model's opset has no HardSwish and it holds a hard-swish (ReLU6 arithmetic or
    x * HardSigmoid(x, 1/6, 1/2)). Below opset 14 it would stay two ops, which OpenVINO's CPU
    plugin neither folds into the Conv before it nor runs as one kernel: a PP-OCRv4 det ran
    1.8x slower that way than at opset 14 (or as exported). ``UpgradeOpsetPass`` takes
    this as its condition."""
    if opset(model.graph) >= HARD_SWISH_OPSET:
        return False
    swish, sigmoid_mul = FuseHardSwish(), HardSigmoidMulToHardSwish()
    for node in model.graph:
        match = swish.match(node)
        if match is not None and np.isclose(match["factor"] * match["k"], 1.0, rtol=_RTOL) \
                and _is_hard_swish(1.0 / match["k"], match["c"] / match["k"]):
            return True
        match = sigmoid_mul.match(node)
        if match is not None and _is_hard_swish(float(attr(match["hsig"], "alpha", 0.2)),
                                                float(attr(match["hsig"], "beta", 0.5))):
            return True
    return False


class FuseHardActivationsPass(RulePass):
    """Rewrite ReLU6-arithmetic hard-sigmoid / hard-swish into the ONNX ops."""

    def __init__(self) -> None:
        super().__init__(HARD_ACTIVATION_RULES)
