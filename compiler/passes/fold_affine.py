"""Fold a Mul/Div/Add/Sub by a per-channel constant into the linear op that precedes it.

A linear op L (Conv, ConvTranspose with one group, Gemm, MatMul with a constant weight,
inference BatchNormalization) is
``y_c = sum(W_c * x) + b_c`` per output channel c. A constant ``k`` that varies at most along
the channel axis commutes into it:

    y_c * k_c = sum((W_c * k_c) * x) + b_c * k_c        ->  W' = W * k,  b' = b * k
    y_c + k_c = sum(W_c * x) + (b_c + k_c)               ->  b' = b + k
    y_c / k_c = y_c * (1 / k_c),   y_c - k_c = y_c + (-k_c)

ConvTranspose's weight is [C, M, kh, kw]: its output channels are axis 1.
For BatchNormalization the "weight" is ``scale`` and the "bias" is ``B``. MatMul has no bias
input, so only the scaling forms fold into it. Gemm's ``alpha``/``beta`` stay exact:
``alpha*A*B*k + beta*C*k`` is written as ``B' = B*k`` and ``C' = beta*C*k`` with ``beta = 1``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes._util import attr, const, is_onnx, new_initializer, sole_consumer
from kiln.compiler.passes.rule import Match, Rule

_LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization")
_AFFINE = ("Mul", "Div", "Add", "Sub")


def _channel_vector(k: np.ndarray, out_rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``k`` as one value per channel when it broadcasts only along ``axis``; else None."""
    if k.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - k.ndim) + tuple(k.shape)
    axis %= out_rank
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(k.reshape(-1), (channels,)).astype(np.float64)


class FoldAffineIntoLinear(Rule):
    """L(x) (*|/|+|-) k  ->  L'(x) with k folded into L's weight and bias."""

    name = "FoldAffineIntoLinear"
    ops = frozenset(_LINEAR)

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, *_LINEAR) or len(node.outputs) != 1:
            return None
        nxt = sole_consumer(node.outputs[0])
        if nxt is None or not is_onnx(nxt, *_AFFINE) or len(nxt.inputs) != 2:
            return None
        y = node.outputs[0]
        if nxt.inputs[0] is y and nxt.inputs[1] is not y:
            k_value = nxt.inputs[1]
        elif nxt.inputs[1] is y and nxt.op_type in ("Mul", "Add") and nxt.inputs[0] is not y:
            k_value = nxt.inputs[0]
        else:
            return None
        return Match(node, [node, nxt], {"linear": node, "affine": nxt, "k": k_value})

    def check(self, match: Match) -> str | None:
        lin: ir.Node = match["linear"]
        aff: ir.Node = match["affine"]
        k = const(match["k"])
        if k is None:
            return f"{aff.op_type} operand is not a constant"
        if not np.issubdtype(k.dtype, np.floating):
            return "operand is not floating point"
        layout = self._layout(lin)
        if isinstance(layout, str):
            return layout
        rank, axis, channels = layout
        vec = _channel_vector(k, rank, axis, channels)
        if vec is None:
            return f"operand of shape {list(k.shape)} is not per-channel"
        if aff.op_type in ("Add", "Sub") and lin.op_type == "MatMul":
            return "MatMul has no bias input to absorb an Add"
        if aff.op_type == "Div" and np.any(vec == 0):
            return "division by zero in the constant"
        match.values["vec"] = vec
        return None

    @staticmethod
    def _layout(lin: ir.Node) -> tuple[int, int, int] | str:
        """(output rank, channel axis, channel count) or a rejection reason."""
        op = lin.op_type
        if op == "BatchNormalization":
            params = [const(v) for v in lin.inputs[1:5]]
            if any(p is None for p in params):
                return "BatchNormalization parameters are not constant"
            shape = lin.outputs[0].shape
            if shape is None:
                return "BatchNormalization output rank unknown"
            return len(shape), 1, params[0].shape[0]  # type: ignore[union-attr]
        w = const(lin.inputs[1])
        if w is None:
            return f"{op} weight is not a constant"
        if len(lin.inputs) > 2 and lin.inputs[2] is not None and const(lin.inputs[2]) is None:
            return f"{op} bias is not a constant"
        if op == "Conv":
            return w.ndim, 1, w.shape[0]
        if op == "ConvTranspose":
            if int(attr(lin, "group", 1)) != 1:
                return "ConvTranspose has more than one group"
            return w.ndim, 1, w.shape[1]
        if op == "Gemm":
            return 2, 1, w.shape[0] if attr(lin, "transB", 0) else w.shape[1]
        if w.ndim != 2:
            return "MatMul weight is not 2-D"
        shape = lin.outputs[0].shape
        if shape is None:
            return "MatMul output rank unknown"
        return len(shape), -1, w.shape[1]

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        lin: ir.Node = match["linear"]
        aff: ir.Node = match["affine"]
        vec: np.ndarray = match["vec"]
        op = aff.op_type
        scale = 1.0 / vec if op == "Div" else vec if op == "Mul" else None
        shift = -vec if op == "Sub" else vec if op == "Add" else None
        inputs = list(lin.inputs)
        attributes = dict(lin.attributes)
        hint = lin.name or lin.op_type

        if lin.op_type == "BatchNormalization":
            gamma, beta = const(inputs[1]), const(inputs[2])
            if scale is not None:
                gamma, beta = gamma * scale, beta * scale
            else:
                beta = beta + shift
            inputs[1] = new_initializer(graph, gamma.astype(const(inputs[1]).dtype), hint + "_s")
            inputs[2] = new_initializer(graph, beta.astype(const(inputs[2]).dtype), hint + "_b")
        else:
            w = const(inputs[1])
            dtype = w.dtype
            if lin.op_type == "Conv":
                w_axis, bias_len = 0, w.shape[0]
            elif lin.op_type == "ConvTranspose":
                w_axis, bias_len = 1, w.shape[1]
            elif lin.op_type == "Gemm":
                w_axis = 0 if attr(lin, "transB", 0) else 1
                bias_len = w.shape[w_axis]
            else:
                w_axis, bias_len = 1, w.shape[1]
            if scale is not None:
                bshape = [1] * w.ndim
                bshape[w_axis] = -1
                w = w * scale.reshape(bshape)
                inputs[1] = new_initializer(graph, w.astype(dtype), hint + "_w")
            if lin.op_type != "MatMul":
                has_bias = len(inputs) > 2 and inputs[2] is not None
                b = const(inputs[2]) if has_bias else np.zeros((bias_len,), dtype)
                if lin.op_type == "Gemm":
                    b = b * float(attr(lin, "beta", 1.0))
                    attributes.pop("beta", None)
                b = b * scale if scale is not None else b + shift
                while len(inputs) < 3:
                    inputs.append(None)
                inputs[2] = new_initializer(graph, np.asarray(b).astype(dtype), hint + "_b")
        new = ir.node(lin.op_type, inputs, attributes=attributes, name=lin.name,
                      domain=lin.domain)
        ir.convenience.replace_nodes_and_values(
            graph, aff, [lin, aff], [new], [aff.outputs[0]], [new.outputs[0]])


FOLD_AFFINE_RULES = [FoldAffineIntoLinear()]
