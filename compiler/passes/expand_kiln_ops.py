"""Write kiln-domain ops back as standard ONNX for backends that do not run them.

``kiln::FusedConv(X, W, B, R)`` with activation ``act`` becomes ``act(Add(Conv(X, W, B), R))``
(with a prologue, ``X`` is first replaced by ``[Relu](Add(Mul(X, scale), shift))``)
(and likewise for FusedGemm), each activation spelled with the ops the model's opset has:
Clip bounds as attributes below opset 11 and as inputs from 11; HardSwish as
``x * HardSigmoid(x, 1/6, 1/2)`` below opset 14; Gelu as its erf or tanh formula below
opset 20.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

from kiln.compiler.capabilities import KILN_DOMAIN
from kiln.compiler.passes._util import attr, new_initializer, opset
from kiln.compiler.passes.rule import CountingPass


def _scalar(graph: ir.Graph, x: ir.Value, value: float, hint: str) -> ir.Value:
    dtype = x.dtype.numpy() if x.dtype is not None else np.float32
    return new_initializer(graph, np.array(value, dtype=dtype), hint)


def expand_activation(graph: ir.Graph, x: ir.Value, name: str, alpha: float, beta: float,
                      nodes: list[ir.Node]) -> ir.Value:
    """Append the standard-ONNX nodes computing ``name(x)`` to ``nodes``; returns the output."""
    version = opset(graph)

    def op(op_type: str, *inputs: ir.Value | None, **attributes: Any) -> ir.Value:
        node = ir.node(op_type, list(inputs), attributes=attributes or None)
        nodes.append(node)
        return node.outputs[0]

    def k(value: float) -> ir.Value:
        return _scalar(graph, x, value, f"{name or 'act'}_k")

    if name == "":
        return x
    if name in ("Relu", "Sigmoid", "Tanh"):
        return op(name, x)
    if name == "LeakyRelu":
        return op("LeakyRelu", x, alpha=alpha)
    if name == "HardSigmoid":
        return op("HardSigmoid", x, alpha=alpha, beta=beta)
    if name == "Clip":
        if version < 11:
            return op("Clip", x, min=alpha, max=beta)
        return op("Clip", x, k(alpha), k(beta))
    if name == "SiLU":
        return op("Mul", x, op("Sigmoid", x))
    if name == "HardSwish":
        if version >= 14:
            return op("HardSwish", x)
        return op("Mul", x, op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5))
    if name in ("Gelu", "GeluTanh"):
        if version >= 20:
            return op("Gelu", x, approximate="tanh" if name == "GeluTanh" else "none")
        if name == "Gelu":  # 0.5 * x * (1 + erf(x / sqrt(2)))
            inner = op("Erf", op("Mul", x, k(1.0 / math.sqrt(2.0))))
        else:  # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
            cube = op("Mul", op("Mul", x, x), x)
            poly = op("Add", x, op("Mul", cube, k(0.044715)))
            inner = op("Tanh", op("Mul", poly, k(math.sqrt(2.0 / math.pi))))
        return op("Mul", op("Mul", x, op("Add", inner, k(1.0))), k(0.5))
    raise ValueError(f"unknown fused activation '{name}'")


def expand_fused(graph: ir.Graph, node: ir.Node) -> tuple[list[ir.Node], ir.Value]:
    """Standard-ONNX nodes equal to a kiln FusedConv/FusedGemm node, and their output."""
    base = "Conv" if node.op_type == "FusedConv" else "Gemm"
    inputs = list(node.inputs)
    residual = inputs[3] if len(inputs) > 3 else None
    core_inputs = inputs[:3]
    while core_inputs and core_inputs[-1] is None:
        core_inputs.pop()
    skip = {"activation", "alpha", "beta", "prologue"} if base == "Conv" else {
        "activation", "activation_alpha", "activation_beta"}
    attributes = {k: v for k, v in node.attributes.items() if k not in skip}
    nodes: list[ir.Node] = []
    prologue = str(attr(node, "prologue", ""))
    if prologue:  # scale and shift are [C, 1, 1]: they broadcast over NCHW as they are
        scaled = ir.node("Mul", [core_inputs[0], inputs[4]])
        shifted = ir.node("Add", [scaled.outputs[0], inputs[5]])
        nodes += [scaled, shifted]
        if prologue == "affine_relu":
            nodes.append(ir.node("Relu", [shifted.outputs[0]]))
        core_inputs[0] = nodes[-1].outputs[0]
    nodes.append(ir.node(base, core_inputs, attributes=attributes, name=node.name))
    out = nodes[-1].outputs[0]
    if residual is not None:
        nodes.append(ir.node("Add", [out, residual]))
        out = nodes[-1].outputs[0]
    prefix = "" if base == "Conv" else "activation_"
    name = str(attr(node, "activation", ""))
    alpha = float(attr(node, prefix + "alpha", 0.0))
    beta = float(attr(node, prefix + "beta", 0.0))
    out = expand_activation(graph, out, name, alpha, beta, nodes)
    return nodes, out


def _expander(op_type: str) -> Callable[[ir.Graph, ir.Node], tuple[list[ir.Node], ir.Value]]:
    if op_type in ("FusedConv", "FusedGemm"):
        return expand_fused
    raise ValueError(f"no standard-ONNX expansion for kiln op '{op_type}'")


class ExpandKilnOpsPass(CountingPass):
    """Expand every kiln-domain op not in ``keep`` into standard ONNX."""

    def __init__(self, keep: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.keep = keep

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fired = Counter()
        graph = model.graph
        for node in list(graph):
            if node.domain != KILN_DOMAIN or node.op_type in self.keep:
                continue
            nodes, out = _expander(node.op_type)(graph, node)
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], nodes, [node.outputs[0]], [out])
            self.fired[f"expand {node.op_type}"] += 1
        if not any(n.domain == KILN_DOMAIN for n in graph.all_nodes()):
            graph.opset_imports.pop(KILN_DOMAIN, None)
            model.opset_imports.pop(KILN_DOMAIN, None)
        return ir.passes.PassResult(model, modified=bool(self.fired))
