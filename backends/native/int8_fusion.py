"""Quantized regions of a graph, lowered to the native integer kernels.

kiln's quantizer writes int8 the way every engine reads it: static graphs as
QuantizeLinear -> DequantizeLinear pairs around float MatMul / Gemm / Conv nodes whose weights
come through DequantizeLinear, dynamic graphs as DynamicQuantizeLinear -> MatMulInteger ->
Cast -> Mul(scale). Run as written, the native engine would dequantize and multiply in float,
which is slower than the fp32 model. This module finds each such product and describes the one
``kiln::QGemm`` / ``kiln::QConv`` node that computes it on the u8 x s8 GEMM, together with the
nodes whose work that node takes over:

- the bias Add (MatMul) or the dequantized int32 bias (Gemm, Conv),
- a Relu reading the product,
- a QuantizeLinear reading the result (the kernel then writes u8 directly, and the next
  layer's DequantizeLinear disappears too when that layer is fused as well),
- after that QuantizeLinear, DequantizeLinear -> a chain of elementwise activations with
  scalar constants (hard-swish as x * HardSigmoid(x), a learned scale and shift, ...) ->
  QuantizeLinear: a function of one byte, so the kernel applies it as a 256-entry table
  (its input 8) and no float value exists between the two integer layers.

DequantizeLinear -> MaxPool -> QuantizeLinear becomes ``kiln::QMaxPool`` (the pool runs on the
bytes), and u8 values handed from one QConv / QMaxPool to the next stay in NHWC.

Only symmetric weights (zero points all 0), scalar activation parameters, u8 activations and
2-D convolutions of one group or depthwise (group == channels, one filter each) match;
anything else stays as written and runs on the ordinary ops, with the same results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

ConstOf = Callable[[ir.Value | None], np.ndarray | None]
# An input of the fused node: a graph value, an array made here, or absent.
FusedInput = ir.Value | np.ndarray | None


@dataclasses.dataclass
class Int8Op:
    """One kiln::QGemm / QConv / QMaxPool replacing ``anchor`` (and ``absorbed``); QConv and
    QMaxPool also carry the anchor's own attributes."""

    anchor: ir.Node
    op: str
    inputs: list[FusedInput]
    output: ir.Value
    attrs: dict[str, Any]
    absorbed: list[ir.Node]          # nodes whose only reader chain ends in this op
    shared: list[ir.Node]            # dequantizations other nodes may still need


def _is_onnx(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type == op_type


class _Matcher:
    def __init__(self, nodes: Sequence[ir.Node], wanted: set[str], const_of: ConstOf) -> None:
        self.present = set(nodes)
        self.wanted = wanted
        self.const_of = const_of

    def producer(self, value: ir.Value | None, op_type: str) -> ir.Node | None:
        node = value.producer() if value is not None else None
        return node if node in self.present and _is_onnx(node, op_type) else None

    def only_user(self, value: ir.Value, op_type: str) -> ir.Node | None:
        """The one node reading ``value`` when it is ``op_type`` and nobody else wants it."""
        if value.name in self.wanted or value.is_graph_output():
            return None
        users = {u.node for u in value.uses()}
        if len(users) != 1 or len(list(value.uses())) != 1:
            return None
        node = users.pop()
        return node if node in self.present and _is_onnx(node, op_type) else None

    def scalar(self, value: ir.Value | None, dtype: type) -> np.ndarray | None:
        arr = self.const_of(value)
        if arr is None or arr.size != 1 or arr.dtype != dtype:
            return None
        return arr.reshape(())

    def activation(self, value: ir.Value) -> tuple[ir.Value, np.ndarray, np.ndarray | None,
                                                   ir.Node] | None:
        """x_q, scale, zero point and the DequantizeLinear of a per-tensor u8 activation."""
        dq = self.producer(value, "DequantizeLinear")
        if dq is None or len(dq.inputs) < 2 or dq.inputs[0] is None:
            return None
        q = dq.inputs[0]
        scale = self.scalar(dq.inputs[1], np.float32)
        zero = dq.inputs[2] if len(dq.inputs) > 2 else None
        zero_arr = self.scalar(zero, np.uint8) if zero is not None else None
        if scale is None or zero is not None and zero_arr is None \
                or self.const_of(q) is not None:
            return None
        # x has its zero point's type (ONNX), so a u8 zero point makes x u8 when the graph
        # does not say
        if q.dtype != ir.DataType.UINT8 and not (q.dtype is None and zero_arr is not None):
            return None
        return q, scale, zero_arr, dq

    def constant_dq(self, value: ir.Value | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ir.Node] | None:
        """(x, scale, zero point or None, node) of a DequantizeLinear producing ``value`` whose
        inputs are all constants, with a float32 scale and no blocked quantization."""
        dq = self.producer(value, "DequantizeLinear")
        if dq is None or len(dq.inputs) < 2:
            return None
        if "block_size" in dq.attributes and dq.attributes["block_size"].as_int() != 0:
            return None
        x = self.const_of(dq.inputs[0])
        scale = self.const_of(dq.inputs[1])
        zero_in = dq.inputs[2] if len(dq.inputs) > 2 else None
        zero = self.const_of(zero_in) if zero_in is not None else None
        if x is None or scale is None or scale.dtype != np.float32 \
                or zero_in is not None and zero is None:
            return None
        return x, scale, zero, dq

    def weights(self, value: ir.Value, rank: int, channel_axis: int
                ) -> tuple[np.ndarray, np.ndarray, ir.Node] | None:
        """Symmetric int8 weights behind a DequantizeLinear: (w, scale per channel or one, dq)."""
        found = self.constant_dq(value)
        if found is None:
            return None
        w, scale, zero, dq = found
        if w.dtype != np.int8 or w.ndim != rank or zero is not None and np.any(zero):
            return None
        if scale.size != 1:
            axis = dq.attributes["axis"].as_int() if "axis" in dq.attributes else 1
            if scale.ndim != 1 or axis % rank != channel_axis \
                    or scale.size != w.shape[channel_axis]:
                return None
        return w, scale.reshape(-1), dq

    def bias(self, value: ir.Value | None, channels: int
             ) -> tuple[np.ndarray | None, ir.Node | None] | None:
        """A float bias of ``channels`` values, given directly or as dequantized int32."""
        if value is None:
            return None, None
        arr = self.const_of(value)
        if arr is not None:
            return (arr.astype(np.float32).reshape(-1), None) \
                if arr.dtype == np.float32 and arr.size == channels else None
        found = self.constant_dq(value)
        if found is None:
            return None
        q, scale, zero, dq = found
        if q.dtype != np.int32 or q.size != channels or scale.size not in (1, channels) \
                or zero is not None and zero.size not in (1, channels):
            return None
        z = zero.astype(np.float64).reshape(-1) if zero is not None else 0.0
        b = (q.astype(np.float64).reshape(-1) - z) * scale.astype(np.float64).reshape(-1)
        return b.astype(np.float32), dq

    def tail(self, out: ir.Value, channels: int, bias_add: bool
             ) -> tuple[ir.Value, np.ndarray | None, bool, tuple | None, list[ir.Node]]:
        """What follows the product and can run in its epilogue: a constant bias Add (MatMul
        only), a Relu, a per-tensor u8 QuantizeLinear."""
        absorbed: list[ir.Node] = []
        bias = None
        if bias_add and (add := self.only_user(out, "Add")) is not None:
            other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
            arr = self.const_of(other)
            # a 1-D bias never changes the product's rank; a longer one must be known not to
            if arr is not None and arr.dtype == np.float32 and arr.size == channels and (
                    arr.ndim == 1 or out.shape is not None and arr.ndim <= len(out.shape)):
                bias, out = arr.reshape(-1), add.outputs[0]
                absorbed.append(add)
        relu = False
        if (r := self.only_user(out, "Relu")) is not None:
            relu, out = True, r.outputs[0]
            absorbed.append(r)
        quant = None
        if (q := self.only_user(out, "QuantizeLinear")) is not None and len(q.inputs) == 3:
            scale = self.scalar(q.inputs[1], np.float32)
            zero = self.scalar(q.inputs[2], np.uint8)
            if scale is not None and zero is not None and np.isfinite(scale) and scale > 0:
                quant, out = (scale, zero), q.outputs[0]
                absorbed.append(q)
        return out, bias, relu, quant, absorbed

    # -- anchors ------------------------------------------------------------------------------

    def static(self, node: ir.Node) -> Int8Op | None:
        """MatMul / Gemm / Conv reading dequantized u8 activations and int8 weights."""
        if len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None:
            return None
        act = self.activation(node.inputs[0])
        if act is None:
            return None
        q, a_scale, a_zero, a_dq = act
        bias_in = node.inputs[2] if len(node.inputs) > 2 else None
        attrs: dict[str, Any] = {}
        if _is_onnx(node, "MatMul"):
            w = self.weights(node.inputs[1], 2, 1)
            if w is None:
                return None
            weights, w_scale, w_dq = w
            op, bias, bias_dq = "QGemm", None, None
        elif _is_onnx(node, "Gemm"):
            a = node.attributes
            if any(a[k].as_float() != 1.0 for k in ("alpha", "beta") if k in a) \
                    or ("transA" in a and a["transA"].as_int()):
                return None
            trans_b = "transB" in a and a["transB"].as_int() == 1
            w = self.weights(node.inputs[1], 2, 0 if trans_b else 1)
            if w is None:
                return None
            weights, w_scale, w_dq = w
            if trans_b:
                weights = np.ascontiguousarray(weights.T)
            got = self.bias(bias_in, weights.shape[1])
            if got is None:
                return None
            (bias, bias_dq), op = got, "QGemm"
        elif _is_onnx(node, "Conv"):
            w = self.weights(node.inputs[1], 4, 0)
            if w is None or not _conv_groups_supported(node, w[0]):
                return None
            weights, w_scale, w_dq = w
            got = self.bias(bias_in, weights.shape[0])
            if got is None:
                return None
            (bias, bias_dq), op = got, "QConv"  # the Conv's attributes are kept
        else:
            return None
        channels = weights.shape[0] if op == "QConv" else weights.shape[1]
        out, tail_bias, relu, quant, absorbed = self.tail(node.outputs[0], channels,
                                                          bias_add=op == "QGemm" and bias is None)
        if tail_bias is not None:
            bias = tail_bias
        if relu:
            attrs["activation"] = "Relu"
        inputs: list[FusedInput] = [q, weights, a_scale, a_zero, w_scale, bias,
                                    *(quant if quant else (None, None))]
        if quant is not None and (found := self.byte_map(out)) is not None:
            table, out, chain = found
            inputs.append(table)
            absorbed += chain
        shared = [a_dq, w_dq] + ([bias_dq] if bias_dq is not None else [])
        return Int8Op(node, op, inputs, out, attrs, absorbed, shared)

    def byte_map(self, value: ir.Value) -> tuple[np.ndarray, ir.Value, list[ir.Node]] | None:
        """DequantizeLinear -> elementwise chain -> QuantizeLinear reading the u8 ``value``:
        (the 256-entry table of the whole chain, the final QuantizeLinear's output, its nodes).
        """
        dq = self.only_user(value, "DequantizeLinear")
        if dq is None or len(dq.inputs) < 2:
            return None
        scale = self.scalar(dq.inputs[1], np.float32)
        zero = self.scalar(dq.inputs[2], np.uint8) if len(dq.inputs) > 2 else np.uint8(0)
        if scale is None or zero is None:
            return None
        chain = _elementwise_chain(self, dq.outputs[0])
        if chain is None:
            return None
        nodes, q = chain
        known = {dq.outputs[0].name: (np.arange(256, dtype=np.float32) - np.float32(zero))
                 * scale}
        for node in nodes:
            result = _evaluate(node, known, self.const_of)
            if result is None:
                return None
            known[node.outputs[0].name] = result
        y_scale = self.scalar(q.inputs[1], np.float32)
        y_zero = self.scalar(q.inputs[2], np.uint8) if len(q.inputs) > 2 else None
        x = known.get(q.inputs[0].name)
        if x is None or y_scale is None or y_zero is None \
                or not (np.isfinite(y_scale) and y_scale > 0):
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            y = np.rint(x.astype(np.float32) / y_scale) + np.float32(y_zero)
        table = np.clip(np.nan_to_num(y, nan=255.0), 0, 255).astype(np.uint8)
        return table, q.outputs[0], [dq, *nodes, q]

    def max_pool(self, node: ir.Node) -> Int8Op | None:
        """DequantizeLinear -> 2-D MaxPool -> QuantizeLinear: the pool runs on the bytes."""
        a = node.attributes
        ints = {k: list(a[k].as_ints()) for k in ("kernel_shape", "dilations", "pads", "strides")
                if k in a}
        if len(ints.get("kernel_shape", [])) != 2 \
                or any(d != 1 for d in ints.get("dilations", [])) \
                or ("ceil_mode" in a and a["ceil_mode"].as_int()) \
                or ("storage_order" in a and a["storage_order"].as_int()) \
                or ("auto_pad" in a and a["auto_pad"].as_string() not in ("NOTSET", "")):
            return None
        pads = ints.get("pads", [0, 0, 0, 0])
        if any(p >= k for p, k in zip(pads, ints["kernel_shape"] * 2)):
            return None
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            return None
        act = self.activation(node.inputs[0]) if node.inputs else None
        if act is None:
            return None
        q, scale, zero, dq = act
        if not (np.isfinite(scale) and scale > 0):  # the max commutes with increasing maps only
            return None
        out, _, relu, quant, absorbed = self.tail(node.outputs[0], 0, bias_add=False)
        if relu or quant is None:
            return None
        return Int8Op(node, "QMaxPool", [q, scale, zero, *quant], out, {}, absorbed, [dq])

    def dynamic(self, node: ir.Node) -> Int8Op | None:
        """MatMulInteger -> Cast(float) -> Mul(a_scale * w_scale) with a constant int8 B."""
        ins = list(node.inputs) + [None] * (4 - len(node.inputs))
        q, b, a_zero, b_zero = ins[:4]
        weights = self.const_of(b)
        u8 = q is not None and (q.dtype == ir.DataType.UINT8 or q.dtype is None and _is_onnx(
            q.producer(), "DynamicQuantizeLinear"))
        if not u8 or self.const_of(q) is not None or weights is None \
                or weights.dtype != np.int8 or weights.ndim != 2:
            return None
        if b_zero is not None:
            bz = self.const_of(b_zero)
            if bz is None or np.any(bz):
                return None
        if a_zero is not None and a_zero.dtype not in (ir.DataType.UINT8, None):
            return None
        cast = self.only_user(node.outputs[0], "Cast")
        if cast is None or cast.attributes["to"].as_int() != ir.DataType.FLOAT:
            return None
        mul = self.only_user(cast.outputs[0], "Mul")
        if mul is None:
            return None
        scale_value = mul.inputs[1] if mul.inputs[0] is cast.outputs[0] else mul.inputs[0]
        scale_mul = self.producer(scale_value, "Mul")
        if scale_mul is None or scale_value.is_graph_output():
            return None
        n = weights.shape[1]
        a_scale = w_scale = None
        for x, y in ((scale_mul.inputs[0], scale_mul.inputs[1]),
                     (scale_mul.inputs[1], scale_mul.inputs[0])):
            arr = self.const_of(y)
            if arr is not None and arr.dtype == np.float32 and arr.size in (1, n) \
                    and self.const_of(x) is None and _scalar_value(x):
                a_scale, w_scale = x, arr.reshape(-1)
                break
        if a_scale is None:
            return None
        out, bias, relu, quant, absorbed = self.tail(mul.outputs[0], n, bias_add=True)
        attrs = {"activation": "Relu"} if relu else {}
        inputs: list[FusedInput] = [q, weights, a_scale, a_zero, w_scale, bias,
                                    *(quant if quant else (None, None))]
        return Int8Op(node, "QGemm", inputs, out, attrs, [cast, mul] + absorbed, [scale_mul])


def _conv_groups_supported(node: ir.Node, weights: np.ndarray) -> bool:
    """One group, or depthwise: group == output channels and one input channel per filter."""
    group = node.attributes["group"].as_int() if "group" in node.attributes else 1
    return group == 1 or (weights.shape[1] == 1 and weights.shape[0] == group)


#: Elementwise ops a byte map may contain, by how many inputs are the mapped value.
_MAPPABLE = {"HardSigmoid", "HardSwish", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip",
             "Mul", "Add", "Sub", "Div"}


def _elementwise_chain(matcher: _Matcher, start: ir.Value
                       ) -> tuple[list[ir.Node], ir.Node] | None:
    """The elementwise nodes computing from ``start`` alone (other inputs scalar constants),
    in evaluation order, and the one u8 QuantizeLinear every path ends in; None when any value
    of the region escapes it or an op is not mappable."""
    order: list[ir.Node] = []
    quant: ir.Node | None = None
    inside = {start.name}
    pending = [start]
    while pending:
        value = pending.pop(0)
        if value.name in matcher.wanted or value.is_graph_output():
            return None
        for use in value.uses():
            node = use.node
            if node in order or node is quant:
                continue
            if node not in matcher.present:
                return None
            if _is_onnx(node, "QuantizeLinear"):
                if quant is not None or use.idx != 0:
                    return None
                quant = node
                continue
            if node.domain not in ("", "ai.onnx") or node.op_type not in _MAPPABLE \
                    or len(node.outputs) != 1:
                return None
            for other in node.inputs:
                if other is None or other.name in inside:
                    continue
                arr = matcher.const_of(other)
                if arr is None or arr.size != 1 or arr.ndim > 1 or arr.dtype != np.float32:
                    # an input from outside the chain is not yet known: wait for it
                    if other.producer() in matcher.present and not _is_onnx(
                            other.producer(), "Constant"):
                        break
                    return None
            else:
                order.append(node)
                inside.add(node.outputs[0].name)
                pending.append(node.outputs[0])
    if quant is None or not order:
        return None
    # nothing else reads a value of the chain (a node left waiting for an outside input does)
    for node in order:
        if any(u.node not in order and u.node is not quant for u in node.outputs[0].uses()):
            return None
    if any(u.node not in order and u.node is not quant for u in start.uses()):
        return None
    return order, quant


def _evaluate(node: ir.Node, known: dict[str, np.ndarray], const_of: ConstOf
              ) -> np.ndarray | None:
    """One mappable node on the 256 values of its chain, in float32 as the engine runs it."""
    args: list[np.ndarray | None] = []
    for v in node.inputs:
        if v is None:
            args.append(None)
            continue
        arr = known.get(v.name)
        if arr is None:
            arr = const_of(v)
            if arr is None:
                return None
            arr = arr.astype(np.float32).reshape(())
        args.append(arr)
    a = node.attributes
    x = args[0]
    one, zero = np.float32(1), np.float32(0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        op = node.op_type
        if op in ("HardSigmoid", "HardSwish"):
            alpha = np.float32(a["alpha"].as_float() if "alpha" in a else 0.2 if op ==
                               "HardSigmoid" else 1 / 6)
            beta = np.float32(a["beta"].as_float() if "beta" in a else 0.5)
            hs = np.clip(alpha * x + beta, zero, one)
            return hs if op == "HardSigmoid" else x * hs
        if op == "Relu":
            return np.maximum(x, zero)
        if op == "LeakyRelu":
            alpha = np.float32(a["alpha"].as_float() if "alpha" in a else 0.01)
            return np.where(x < 0, alpha * x, x)
        if op == "Sigmoid":
            return (one / (one + np.exp(-x))).astype(np.float32)
        if op == "Tanh":
            return np.tanh(x)
        if op == "Clip":
            lo = args[1] if len(args) > 1 and args[1] is not None else np.float32(-np.inf)
            hi = args[2] if len(args) > 2 and args[2] is not None else np.float32(np.inf)
            return np.minimum(np.maximum(x, lo), hi)
        b = args[1]
        if x is None or b is None:
            return None
        if op == "Mul":
            return x * b
        if op == "Add":
            return x + b
        if op == "Sub":
            return x - b
        return x / b


def _scalar_value(value: ir.Value | None) -> bool:
    """True when ``value`` is known to hold one element (DynamicQuantizeLinear's scale)."""
    if value is None:
        return False
    producer = value.producer()
    if _is_onnx(producer, "DynamicQuantizeLinear") and producer.outputs[1] is value:
        return True
    return value.shape is not None and all(d == 1 for d in value.shape)


def find_int8_ops(nodes: Sequence[ir.Node], wanted: set[str], const_of: ConstOf
                  ) -> tuple[dict[ir.Node, Int8Op], set[ir.Node]]:
    """The fused integer ops by anchor node, and every node they make redundant."""
    matcher = _Matcher(nodes, wanted, const_of)
    ops: dict[ir.Node, Int8Op] = {}
    taken: set[ir.Node] = set()
    for node in nodes:
        if node in taken:
            continue
        found = matcher.dynamic(node) if _is_onnx(node, "MatMulInteger") else \
            matcher.max_pool(node) if _is_onnx(node, "MaxPool") else \
            matcher.static(node) if node.op_type in ("MatMul", "Gemm", "Conv") else None
        if found is None or any(n in taken or n in ops for n in found.absorbed):
            continue
        ops[node] = found
        taken.update(found.absorbed)
    # A dequantization (or the scale product) is dead once every reader was fused away.
    gone = set(ops) | taken
    for op in ops.values():
        for node in op.shared:
            if node in gone:
                continue
            outs = [o for o in node.outputs if o is not None]
            if all(o.name not in wanted and not o.is_graph_output()
                   and all(u.node in gone for u in o.uses()) for o in outs):
                taken.add(node)
                gone.add(node)
    _hand_over_nhwc(ops, taken, wanted)
    return ops, taken


def _hand_over_nhwc(ops: dict[ir.Node, Int8Op], taken: set[ir.Node], wanted: set[str]) -> None:
    """A QConv / QMaxPool whose u8 result only feeds other such ops (through dequantizations
    fused away)
    writes it in NHWC, the layout its GEMM produces and the next one reads: no transposition
    in between. The value is internal to the plan, so nobody else sees the layout."""
    spatial = ("QConv", "QMaxPool")
    by_output = {op.output.name: op for op in ops.values() if op.op in spatial}
    readers: dict[str, list[Int8Op]] = {}
    for op in ops.values():
        if op.op in spatial and isinstance(op.inputs[0], ir.Value):
            readers.setdefault(op.inputs[0].name, []).append(op)
    # Producers in graph order, so a QMaxPool knows its own input's layout when it is asked
    # to write NHWC (it pools NHWC bytes only into NHWC).
    for name, producer in by_output.items():
        if producer.op == "QMaxPool" and producer.attrs.get("kiln_layout_in") != "NHWC":
            continue
        value = producer.output
        if value.name in wanted or value.is_graph_output() or name not in readers:
            continue
        dqs = [u.node for u in value.uses()]
        if not dqs or any(d not in taken or not _is_onnx(d, "DequantizeLinear") for d in dqs):
            continue
        consumers = {u.node for d in dqs for o in d.outputs if o is not None for u in o.uses()}
        if consumers != {op.anchor for op in readers[name]}:
            continue
        producer.attrs["kiln_layout_out"] = "NHWC"
        for op in readers[name]:
            op.attrs["kiln_layout_in"] = "NHWC"
