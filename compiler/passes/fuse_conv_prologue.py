"""Fold a per-channel affine that only feeds a convolution into the convolution's input side.

Pre-activation networks (DenseNet's BN-ReLU-Conv layers) and learnable affine blocks
(PP-LCNet's ``Mul(x, s) -> Add(., t)``, the constant on either side: Paddle exports write
``Mul(s, x)``) put ``y = scale * x + shift [-> Relu]`` in front of a conv, where
``fuse-batchnorm`` cannot fold it into weights: the conv zero-pads ``y``, not ``x``,
so a folded shift would be wrong at the borders. A backend whose convolution applies a channel
prologue while it packs (1x1) or pads (depthwise) its input reads ``x`` once instead:

    Conv(act(scale * x + shift), W, B) -> kiln::FusedConv(x, W, B, R, scale, shift,
                                                          prologue="affine" | "affine_relu")

``scale`` and ``shift`` are [C, 1, 1] constants, so the standard-ONNX expansion is a plain
broadcast ``Mul``/``Add`` in front of the conv. Only the 1x1 and depthwise forms are fused:
those are where the prologue rides on a pass the conv makes anyway; a full 3x3 conv would apply
it as a separate pass, which is what the unfused graph does already.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.compiler.capabilities import KILN_DOMAIN
from kiln.compiler.passes._util import (
    attr,
    const,
    depthwise_weights,
    is_onnx,
    new_initializer,
    sole_consumer,
)
from kiln.compiler.passes.rule import Match, Rule

PROLOGUES = ("affine", "affine_relu")


def _private(value: ir.Value | None, reader: ir.Node, first_only: bool = True) -> bool:
    """Whether ``reader`` is the only reader of ``value`` (as its first input, or as any one
    input when not ``first_only``: Add and Mul commute) and the value is not a graph output."""
    if value is None or sole_consumer(value) is not reader:
        return False
    uses = list(value.uses())
    return len(uses) == 1 if not first_only else all(use.idx == 0 for use in uses)


def _is_conv(node: ir.Node) -> bool:
    return is_onnx(node, "Conv") or (node.domain == KILN_DOMAIN and node.op_type == "FusedConv")


def _conv_kind(conv: ir.Node) -> tuple[str, int] | None:
    """("pointwise" | "depthwise", input channels) for a 2-D conv with a constant float32
    weight that is 1x1 / stride 1 / unpadded / one group, or one group per channel."""
    w = const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if w is None or w.ndim != 4 or w.dtype != np.float32:
        return None
    group = int(attr(conv, "group", 1))
    channels = int(w.shape[1]) * group
    if depthwise_weights(group, w.shape):
        return "depthwise", channels
    auto_pad = str(attr(conv, "auto_pad", "NOTSET"))
    if (group == 1 and w.shape[2:] == (1, 1) and auto_pad in ("NOTSET", "VALID")
            and all(v == 1 for v in attr(conv, "strides", None) or [])
            and all(v == 0 for v in attr(conv, "pads", None) or [])):
        return "pointwise", channels
    return None


def _scalar_operand(node: ir.Node) -> tuple[ir.Value, float] | None:
    """(computed input, k) of a binary Add/Mul whose other input is a one-element float32
    constant k, on either side."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    for data, other in (node.inputs, node.inputs[::-1]):
        k = const(other)
        if const(data) is None and k is not None:
            if k.size != 1 or k.dtype != np.float32:
                return None
            return data, float(k.reshape(-1)[0])  # type: ignore[return-value]
    return None


def _batch_norm(node: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) of an inference BatchNormalization with constant 1-D float32 statistics
    whose extra outputs nobody reads."""
    if not is_onnx(node, "BatchNormalization") or len(node.inputs) != 5:
        return None
    if int(attr(node, "training_mode", 0)) != 0 or node.inputs[0] is None:
        return None
    if const(node.inputs[0]) is not None:
        return None
    params = [const(v) for v in node.inputs[1:]]
    if any(p is None or p.ndim != 1 or p.dtype != np.float32 for p in params):
        return None
    if any(o is not None and o.uses() for o in node.outputs[1:]):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
    scale = gamma / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
    return scale, beta - mean * scale


class FuseConvPrologue(Rule):
    """``BatchNormalization [-> Relu]``, ``Mul(x, s) [-> Add(., t)]`` or ``Add(x, t)`` read
    only by a conv -> one kiln::FusedConv carrying the affine as its prologue."""

    name = "FuseConvPrologue"
    ops = frozenset({"Conv", "FusedConv"})

    def match(self, node: ir.Node) -> Match | None:
        if not _is_conv(node) or not node.inputs or str(attr(node, "prologue", "")):
            return None
        chain: list[ir.Node] = []
        value = node.inputs[0]
        relu = False
        producer = value.producer() if value is not None else None
        if producer is not None and is_onnx(producer, "Relu"):
            bn = producer.inputs[0].producer() if producer.inputs[0] is not None else None
            if bn is None or _batch_norm(bn) is None:
                return None
            chain, relu = [bn, producer], True
        elif producer is not None and _batch_norm(producer) is not None:
            chain = [producer]
        elif producer is not None and is_onnx(producer, "Add", "Mul") \
                and (operand := _scalar_operand(producer)) is not None:
            first = operand[0].producer()
            if (is_onnx(producer, "Add") and first is not None and is_onnx(first, "Mul")
                    and _scalar_operand(first) is not None
                    and _private(first.outputs[0], producer, first_only=False)):
                chain = [first, producer]
            else:
                chain = [producer]
        else:
            return None
        return Match(root=node, nodes=[*chain, node], values={"relu": relu})

    def check(self, match: Match) -> str | None:
        chain, conv = match.nodes[:-1], match.root
        for node, reader in zip(chain, match.nodes[1:]):
            if not _private(node.outputs[0], reader, first_only=reader is match.root):
                return f"the {node.op_type} output is read elsewhere"
        if _conv_kind(conv) is None:
            return "the conv is neither 1x1 (stride 1, unpadded) nor depthwise"
        if match.nodes[0].outputs[0].dtype not in (None, ir.DataType.FLOAT):
            return "not float32"
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        chain, conv = match.nodes[:-1], match.root
        kind = _conv_kind(conv)
        assert kind is not None  # check() passed
        channels = kind[1]
        scale, shift = np.ones(channels), np.zeros(channels)
        for node in chain:
            if is_onnx(node, "BatchNormalization"):
                scale, shift = _batch_norm(node)  # type: ignore[misc]
            elif is_onnx(node, "Mul"):
                k = _scalar_operand(node)[1]  # type: ignore[index]
                scale, shift = scale * k, shift * k
            elif is_onnx(node, "Add"):
                shift = shift + _scalar_operand(node)[1]  # type: ignore[index]
        inputs = list(conv.inputs[1:4])
        while len(inputs) < 3:
            inputs.append(None)
        hint = conv.name or "conv"
        head = chain[0]
        x = head.inputs[0] if is_onnx(head, "BatchNormalization") else _scalar_operand(head)[0]
        inputs = [x, *inputs,  # type: ignore[index]
                  new_initializer(graph, scale.astype(np.float32).reshape(channels, 1, 1),
                                  f"{hint}_prologue_scale"),
                  new_initializer(graph, shift.astype(np.float32).reshape(channels, 1, 1),
                                  f"{hint}_prologue_shift")]
        attributes = dict(conv.attributes)
        if conv.op_type == "Conv":
            attributes["activation"] = ir.convenience.convert_attribute("activation", "")
        attributes["prologue"] = ir.convenience.convert_attribute(
            "prologue", "affine_relu" if match["relu"] else "affine")
        fused = ir.node("FusedConv", inputs, attributes=attributes, domain=KILN_DOMAIN,
                        name=conv.name)
        ir.convenience.replace_nodes_and_values(
            graph, conv, match.nodes, [fused], [conv.outputs[0]], [fused.outputs[0]])
        graph.opset_imports.setdefault(KILN_DOMAIN, 1)
