"""Write kiln-domain ops back as standard ONNX for backends that do not run them.

The int8 ops (QGemm, QConv, QConvTranspose, QMaxPool) go back to the Q/DQ ONNX fuse_int8.py
derived them from; a FusedBatchNorm to BatchNormalization and its activation; the float ops as
follows.

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
from kiln.compiler.graph_index import graph_index
from kiln.compiler.passes._util import attr, const, new_initializer, opset
from kiln.compiler.passes.nhwc_layout import LAYOUT_IN, LAYOUT_OUT, LAYOUT_RESIDUAL, NCHW, NHWC
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


#: the standard op under each fused float op, and how many of its inputs are that op's
#: Transpose perms of the layouts the int8 ops and FusedConv hand over (fuse_int8.py,
#: nhwc_layout.py)
_TO_NHWC, _TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
_LAYOUTS = (LAYOUT_IN, LAYOUT_OUT, LAYOUT_RESIDUAL)
_BASES = {"FusedConv": ("Conv", 3), "FusedGemm": ("Gemm", 3),
          "FusedBatchNorm": ("BatchNormalization", 5)}


def expand_fused(graph: ir.Graph, node: ir.Node) -> tuple[list[ir.Node], ir.Value]:
    """Standard-ONNX nodes equal to a kiln FusedConv/FusedGemm/FusedBatchNorm node, and
    their output. A FusedConv's NHWC layouts (nhwc_layout.py) become Transposes."""
    base, arity = _BASES[node.op_type]
    inputs = list(node.inputs)
    nodes: list[ir.Node] = []

    def to_nchw(value: ir.Value | None, key: str) -> ir.Value | None:
        if value is None or attr(node, key, NCHW) != NHWC:
            return value
        nodes.append(ir.node("Transpose", [value], attributes={"perm": list(_TO_NCHW)}))
        return nodes[-1].outputs[0]

    if base == "Conv":
        inputs[0] = to_nchw(inputs[0], LAYOUT_IN)
        if len(inputs) > 3:
            inputs[3] = to_nchw(inputs[3], LAYOUT_RESIDUAL)
    residual = inputs[3] if base != "BatchNormalization" and len(inputs) > 3 else None
    core_inputs = inputs[:arity]
    while core_inputs and core_inputs[-1] is None:
        core_inputs.pop()
    skip = {"activation", "alpha", "beta", "prologue", *_LAYOUTS} if base == "Conv" else {
        "activation", "activation_alpha", "activation_beta"}
    attributes = {k: v for k, v in node.attributes.items() if k not in skip}
    prologue = str(attr(node, "prologue", ""))
    if prologue:  # scale and shift are [C, 1, 1]: they broadcast over NCHW as they are
        scaled = ir.node("Mul", [core_inputs[0], inputs[4]])
        shifted = ir.node("Add", [scaled.outputs[0], inputs[5]])
        nodes += [scaled, shifted]
        if prologue == "affine_relu":
            nodes.append(ir.node("Relu", [shifted.outputs[0]]))
        core_inputs[0] = nodes[-1].outputs[0]
    a_shape = core_inputs[0].shape if core_inputs and core_inputs[0] is not None else None
    if base == "Gemm" and a_shape is not None and len(a_shape) > 2:
        # A of rank > 2 (fuse_epilogue's MatMul + bias): MatMul, then the bias C as an Add
        nodes.append(ir.node("MatMul", core_inputs[:2], name=node.name))
        if len(core_inputs) > 2:
            nodes.append(ir.node("Add", [nodes[-1].outputs[0], core_inputs[2]]))
    else:
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
    if base == "Conv" and attr(node, LAYOUT_OUT, NCHW) == NHWC:
        nodes.append(ir.node("Transpose", [out], attributes={"perm": list(_TO_NHWC)}))
        out = nodes[-1].outputs[0]
    return nodes, out


_INT8_ONLY = {"activation", LAYOUT_IN, LAYOUT_OUT}


def expand_int8(graph: ir.Graph, node: ir.Node) -> tuple[list[ir.Node], ir.Value]:
    """Standard Q/DQ ONNX equal to a kiln QGemm / QConv / QConvTranspose / QMaxPool node (the
    contracts are in fuse_int8.py), and its output. A QGemm whose a_scale is computed (dynamic
    int8) becomes MatMulInteger -> Cast -> Mul(a_scale * w_scale); a byte table a Gather from
    it indexed by the result bytes; an NHWC layout becomes a Transpose."""
    nodes: list[ir.Node] = []

    def op(op_type: str, *inputs: ir.Value | None, **attributes: Any) -> ir.Value:
        present = list(inputs)
        while present and present[-1] is None:
            present.pop()
        made = ir.node(op_type, present, attributes=attributes or None)
        nodes.append(made)
        return made.outputs[0]

    ins = list(node.inputs) + [None] * 9
    own = {k: v for k, v in node.attributes.items() if k not in _INT8_ONLY}
    x = ins[0]
    if attr(node, LAYOUT_IN, NCHW) == NHWC:
        x = op("Transpose", x, perm=_TO_NCHW)
    if node.op_type == "QMaxPool":
        y_scale, y_zero = ins[3], ins[4]
        pool = ir.node("MaxPool", [op("DequantizeLinear", x, ins[1], ins[2])], attributes=own)
        nodes.append(pool)
        y = pool.outputs[0]
    else:
        w, a_scale, a_zero, w_scale, bias, y_scale, y_zero = ins[1:8]
        if node.op_type == "QGemm" and const(a_scale) is None:
            product = op("Cast", op("MatMulInteger", x, w, a_zero), to=ir.DataType.FLOAT)
            y = op("Mul", product, op("Mul", a_scale, w_scale))
        else:
            scales = const(w_scale)
            if scales is not None and scales.size == 1:  # per tensor: a scalar scale
                w_scale = new_initializer(graph, scales.reshape(()), "w_scale")
            axis = 0 if node.op_type == "QConv" else 1  # W's output channels
            xd = op("DequantizeLinear", x, a_scale, a_zero)
            wd = op("DequantizeLinear", w, w_scale, axis=axis)
            if node.op_type in ("QConv", "QConvTranspose"):
                conv = ir.node(node.op_type[1:], [xd, wd] + ([bias] if bias is not None else []),
                               attributes=own, name=node.name)
                nodes.append(conv)
                y, bias = conv.outputs[0], None
            else:
                y = op("MatMul", xd, wd)
        if bias is not None:
            y = op("Add", y, bias)
        y = expand_activation(graph, y, str(attr(node, "activation", "")), 0.0, 0.0, nodes)
    if y_scale is not None:
        y = op("QuantizeLinear", y, y_scale, y_zero)
    if node.op_type != "QMaxPool" and ins[8] is not None:  # byte b -> table[b]
        y = op("Gather", ins[8], op("Cast", y, to=ir.DataType.INT32), axis=0)
    if attr(node, LAYOUT_OUT, NCHW) == NHWC:
        y = op("Transpose", y, perm=_TO_NHWC)
    return nodes, y


def _cancel_transposes(graph: ir.Graph, made: list[ir.Node]) -> None:
    """Transpose(to NCHW) of a Transpose(to NHWC), both made by expansions (two expanded
    int8 ops that handed u8 over in NHWC): the value is read as it was computed."""
    def perm(node: ir.Node) -> tuple[int, ...]:
        return tuple(attr(node, "perm", ()))  # type: ignore[call-overload]

    for node in made:
        if node.graph is not graph or perm(node) != _TO_NCHW:
            continue
        first = node.inputs[0].producer() if node.inputs[0] is not None else None
        if first is None or first not in made or perm(first) != _TO_NHWC \
                or node.outputs[0].is_graph_output() or first.inputs[0] is None:
            continue
        ir.convenience.replace_all_uses_with(node.outputs[0], first.inputs[0])
        graph.remove(node, safe=True)
        if not first.outputs[0].uses() and not first.outputs[0].is_graph_output():
            graph.remove(first, safe=True)


def _expander(op_type: str) -> Callable[[ir.Graph, ir.Node], tuple[list[ir.Node], ir.Value]]:
    if op_type in _BASES:
        return expand_fused
    if op_type in ("QGemm", "QConv", "QConvTranspose", "QMaxPool"):
        return expand_int8
    raise ValueError(f"no standard-ONNX expansion for kiln op '{op_type}'")


#: How ``GraphIndex.histogram`` names a kiln-domain op ("<domain>::FusedConv").
_KILN_KEY = f"{KILN_DOMAIN}::"


class ExpandKilnOpsPass(CountingPass):
    """Expand every kiln-domain op not in ``keep`` into standard ONNX."""

    def __init__(self, keep: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.keep = keep

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fired = Counter()
        graph = model.graph
        if not any(key.startswith(_KILN_KEY) for key in graph_index(model).histogram):
            # no kiln op anywhere (the pipeline's index: no walk); only the import may go
            graph.opset_imports.pop(KILN_DOMAIN, None)
            model.opset_imports.pop(KILN_DOMAIN, None)
            return ir.passes.PassResult(model, modified=False)
        transposes: list[ir.Node] = []
        for node in list(graph):
            if node.domain != KILN_DOMAIN or node.op_type in self.keep:
                continue
            nodes, out = _expander(node.op_type)(graph, node)
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], nodes, [node.outputs[0]], [out])
            transposes += [n for n in nodes if n.op_type == "Transpose"]
            self.fired[f"expand {node.op_type}"] += 1
        _cancel_transposes(graph, transposes)
        if not any(n.domain == KILN_DOMAIN for n in graph.all_nodes()):
            graph.opset_imports.pop(KILN_DOMAIN, None)
            model.opset_imports.pop(KILN_DOMAIN, None)
        return ir.passes.PassResult(model, modified=bool(self.fired))
