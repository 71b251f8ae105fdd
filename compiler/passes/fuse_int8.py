"""Quantized regions as a backend's integer kernels: kiln::QGemm, kiln::QConv,
kiln::QConvTranspose, kiln::QMaxPool.

kiln's quantizer writes int8 the way every engine reads it: static graphs as QuantizeLinear ->
DequantizeLinear pairs around float MatMul / Gemm / Conv nodes whose weights come through
DequantizeLinear, dynamic graphs as DynamicQuantizeLinear -> MatMulInteger -> Cast ->
Mul(scale). Run as written, an engine dequantizes and multiplies in float. With u8
activations x_q (scale s_x and zero point z_x per tensor) and symmetric int8 weights W_q
(scale s_w per output channel or per tensor, zero point 0) the product is one u8 x s8 GEMM
summed in int32 and one affine epilogue per output channel j:

    y[i, j] = s_x * s_w[j] * sum_k (x_q[i, k] - z_x) * W_q[k, j] + b[j]
    y       = act(y)                                   act: one of the backend's epilogues
    y_q     = saturate_u8(round(y / s_y) + z_y)        when a QuantizeLinear reads y

Rules (lhs -> rhs):

    MatMul(DQ(x_q), DQ(W_q)) [-> Add(b)] [-> act] [-> Q]                  -> kiln::QGemm
    Gemm(DQ(x_q), DQ(W_q), [b | DQ(b_q)]) [-> act] [-> Q]                 -> kiln::QGemm
    MatMulInteger(x_q, W_q, z_x) -> Cast(float) -> Mul(s_x * s_w) [-> Add(b)] [-> act] [-> Q]
                                                                          -> kiln::QGemm
    Conv(DQ(x_q), DQ(W_q), [b | DQ(b_q)]) [-> act] [-> Q]                 -> kiln::QConv
    ConvTranspose(DQ(x_q), DQ(W_q), [b]) [-> act] [-> Q]  (kernel == stride)
                                                                          -> kiln::QConvTranspose
    Q(MaxPool(DQ(x_q)))                                                   -> kiln::QMaxPool
    Q(f(DQ(kiln::QConv | QGemm -> y_q)))                -> the op with table T as input 8

where f is a chain of elementwise ops whose other inputs are scalar float32 constants
(HardSigmoid, HardSwish, Relu, LeakyRelu, Sigmoid, Tanh, Clip, Mul, Add, Sub, Div: hard-swish
written as x * HardSigmoid(x), a learned scale and shift, ...). Between two quantizations it
is a function of one byte, so it is evaluated once, in float32 as an engine runs it, on the
256 values DQ can give:

    T[b] = saturate_u8(round(f((b - z_y) * s_y) / s_q) + z_q)       b = 0 .. 255

(NaN -> 255) and the kernel writes T[y_q]: no float value exists between the integer layers.

An int32 bias is folded to float: b = (b_q - z_b) * s_b, in float64, then float32. MaxPool
commutes with DequantizeLinear when s_x > 0 (an increasing map), so the pool runs on the bytes.
What the kernels cannot take (asymmetric or blocked weights, per-channel or int8 activations,
groups beyond ``BackendCaps.qconv_groups``, activations outside
``BackendCaps.int8_activations``, a table unless ``BackendCaps.int8_byte_table``) stays as
written; each refusal is counted with its reason.

The ops' contracts (inputs in order, [optional]; trailing absent inputs may be left out):

``kiln::QGemm(A, W, a_scale, [a_zero], w_scale, [bias], [y_scale], [y_zero], [table]) -> Y``
    A u8 [..., K]; W int8 [K, N], a constant; a_scale one float32 and a_zero one u8 (computed
    ones allowed: DynamicQuantizeLinear's); w_scale float32 [1] or [N]; bias float32 [N].
    Y = act((A - a_zero) W * a_scale * w_scale + bias): float32 [..., N], or u8 when y_scale
    (one positive float32) and y_zero (one u8) are given; then table (256 u8), when given,
    maps each result byte b to table[b]. Attribute ``activation``: "" or an epilogue the
    backend lists in ``int8_activations``.
``kiln::QConv(X, W, a_scale, [a_zero], w_scale, [bias], [y_scale], [y_zero], [table]) -> Y``
    The same over a 2-D convolution: X u8 [N, C, H, W], W int8 [K, C / group, KH, KW] (group
    1, or as ``BackendCaps.qconv_groups`` allows: depthwise is group == C == K), Conv's
    attributes (auto_pad, dilations, group, kernel_shape, pads, strides), w_scale [1] or [K],
    ``activation`` as QGemm's. ``kiln_layout_in`` / ``kiln_layout_out`` ("NCHW" by default, or
    "NHWC", which holds [N, H, W, C]) are the layouts of X and of a u8 Y.
``kiln::QConvTranspose(X, W, a_scale, [a_zero], w_scale, [bias], [y_scale], [y_zero], [table])``
    The same over a 2-D ConvTranspose whose kernel equals its strides (no pads, dilations,
    output padding or groups: each output pixel has one tap, so the product is one GEMM of
    the input pixels by W [C, M, KH, KW] and no two taps add up); w_scale [1] or [M] (axis 1
    of W), bias [M]; layouts as QConv's.
``kiln::QMaxPool(X, x_scale, [x_zero], y_scale, [y_zero]) -> Y``
    Q(MaxPool(DQ(X))) on u8 X [N, C, H, W] with MaxPool's attributes (2-D, no dilation, no
    ceil mode, pads smaller than the kernel); layouts as QConv's.

``HandOverInt8Nhwc`` then keeps u8 values in NHWC between these ops: a QConv /
QConvTranspose / QMaxPool whose u8 result only such nodes read (as their input 0) writes NHWC,
the layout its GEMM produces and the next one reads, and its readers read NHWC. A QMaxPool
writes NHWC only from NHWC. ``ExpandKilnOpsPass`` writes each op back as the Q/DQ ONNX above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import numpy as np
import onnx_ir as ir

from kiln.compiler.capabilities import KILN_DOMAIN, BackendCaps
from kiln.compiler.passes._util import (
    attr,
    const,
    depthwise_weights,
    is_onnx,
    new_initializer,
    sole_consumer,
)
from kiln.compiler.passes.fuse_epilogue import activation_of
from kiln.compiler.passes.nhwc_layout import LAYOUT_IN, LAYOUT_OUT, NCHW, NHWC, HandOverNhwc
from kiln.compiler.passes.rule import Match, Rule

#: the int8 ops that read and write images, and so have layouts
SPATIAL = ("QConv", "QConvTranspose", "QMaxPool")
#: epilogues the contract can name: the ones without parameters
EPILOGUES = ("Relu", "Sigmoid", "HardSwish", "Tanh")
#: input names, for the initializers a fusion makes
GEMM_INPUTS = ("A", "W", "a_scale", "a_zero", "w_scale", "bias", "y_scale", "y_zero", "table")
#: where the byte table goes among QGemm / QConv inputs
TABLE_INPUT = 8
POOL_INPUTS = ("X", "x_scale", "x_zero", "y_scale", "y_zero")

# An input of the fused node: a graph value, an array to register as an initializer, or absent.
Input = ir.Value | np.ndarray | None


class _Refused(Exception):
    """Why a quantized region cannot become the kernel op (the rule's ``check`` reason)."""


@dataclasses.dataclass
class Fused:
    """The kiln op replacing ``nodes`` (the anchor and the tail it absorbs, in graph order)."""

    op: str
    inputs: list[Input]
    attrs: dict[str, Any]
    nodes: list[ir.Node]
    output: ir.Value                 # the last value the op computes
    shared: list[ir.Node]            # dequantizations dropped once nothing else reads them


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and is_onnx(node, op_type) else None


def _only_reader(value: ir.Value, op_type: str | None = None) -> ir.Node | None:
    """The one node reading ``value``, once, when it is ``op_type`` (any op for None)."""
    node = sole_consumer(value)
    if node is None or len(value.uses()) != 1:
        return None
    return node if op_type is None or is_onnx(node, op_type) else None


def _scalar(value: ir.Value | None, dtype: type) -> np.ndarray | None:
    """The one-element constant ``value`` holds, as a 0-d array, when it has ``dtype``."""
    arr = const(value)
    if arr is None or arr.size != 1 or arr.dtype != dtype:
        return None
    return arr.reshape(())


def _activation(value: ir.Value | None) -> tuple[ir.Value, np.ndarray, np.ndarray | None, ir.Node]:
    """x_q, scale, zero point and the DequantizeLinear of a per-tensor u8 activation."""
    dq = _producer(value, "DequantizeLinear")
    if dq is None or len(dq.inputs) < 2 or dq.inputs[0] is None:
        raise _Refused("the input is not dequantized")
    q = dq.inputs[0]
    scale = _scalar(dq.inputs[1], np.float32)
    zero_in = dq.inputs[2] if len(dq.inputs) > 2 else None
    zero = _scalar(zero_in, np.uint8) if zero_in is not None else None
    if scale is None or zero_in is not None and zero is None:
        raise _Refused("the activation is not quantized per tensor to uint8 (one float32 "
                       "scale, one uint8 zero point)")
    if const(q) is not None:
        raise _Refused("the quantized activation is a constant")
    # x has its zero point's type (ONNX), so a u8 zero point makes x u8 when the graph does
    # not say
    if q.dtype != ir.DataType.UINT8 and not (q.dtype is None and zero is not None):
        raise _Refused("the activation is not uint8")
    return q, scale, zero, dq


def _constant_dq(value: ir.Value | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ir.Node] | None:
    """(x, scale, zero point or None, node) of a DequantizeLinear of constants producing
    ``value``, with a float32 scale and no blocked quantization."""
    dq = _producer(value, "DequantizeLinear")
    if dq is None or len(dq.inputs) < 2 or int(attr(dq, "block_size", 0)) != 0:
        return None
    x = const(dq.inputs[0])
    scale = const(dq.inputs[1])
    zero_in = dq.inputs[2] if len(dq.inputs) > 2 else None
    zero = const(zero_in) if zero_in is not None else None
    if x is None or scale is None or scale.dtype != np.float32 \
            or zero_in is not None and zero is None:
        return None
    return x, scale, zero, dq


def _weights(value: ir.Value | None, rank: int, channel_axis: int
             ) -> tuple[np.ndarray, np.ndarray, ir.Node]:
    """Symmetric int8 weights behind a DequantizeLinear: (w, scale per channel or one, dq)."""
    found = _constant_dq(value)
    if found is None:
        raise _Refused("the weights are not a DequantizeLinear of constants")
    w, scale, zero, dq = found
    if w.dtype != np.int8 or w.ndim != rank:
        raise _Refused(f"the weights are not int8 of rank {rank}")
    if zero is not None and np.any(zero):
        raise _Refused("the weights are asymmetric (a zero point is not 0)")
    if scale.size != 1:
        axis = int(attr(dq, "axis", 1))
        if scale.ndim != 1 or axis % rank != channel_axis \
                or scale.size != w.shape[channel_axis]:
            raise _Refused("the weight scale is neither per tensor nor per output channel")
    return w, scale.reshape(-1), dq


def _bias(value: ir.Value | None, channels: int) -> tuple[np.ndarray | None, ir.Node | None]:
    """A float bias of ``channels`` values, given directly or as dequantized int32."""
    if value is None:
        return None, None
    arr = const(value)
    if arr is not None:
        if arr.dtype != np.float32 or arr.size != channels:
            raise _Refused(f"the bias is not float32 with {channels} values")
        return arr.astype(np.float32).reshape(-1), None
    found = _constant_dq(value)
    if found is None:
        raise _Refused("the bias is neither a constant nor a DequantizeLinear of constants")
    q, scale, zero, dq = found
    if q.dtype != np.int32 or q.size != channels or scale.size not in (1, channels) \
            or zero is not None and zero.size not in (1, channels):
        raise _Refused(f"the bias is not int32 with {channels} values")
    z = zero.astype(np.float64).reshape(-1) if zero is not None else 0.0
    b = (q.astype(np.float64).reshape(-1) - z) * scale.astype(np.float64).reshape(-1)
    return b.astype(np.float32), dq


@dataclasses.dataclass
class _Tail:
    out: ir.Value
    bias: np.ndarray | None
    activation: str
    quant: tuple[np.ndarray, np.ndarray] | None
    nodes: list[ir.Node]


def _tail(out: ir.Value, channels: int, bias_add: bool, activations: Collection[str]) -> _Tail:
    """What follows the product and runs in its epilogue: a constant bias Add (when
    ``bias_add``), an activation among ``activations``, a per-tensor u8 QuantizeLinear."""
    nodes: list[ir.Node] = []
    bias = None
    if bias_add and (add := _only_reader(out, "Add")) is not None:
        other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
        arr = const(other)
        # a 1-D bias never changes the product's rank; a longer one must be known not to
        if arr is not None and arr.dtype == np.float32 and arr.size == channels and (
                arr.ndim == 1 or out.shape is not None and arr.ndim <= len(out.shape)):
            bias, out = arr.reshape(-1), add.outputs[0]
            nodes.append(add)
    activation = ""
    reader = _only_reader(out)
    found = activation_of(reader, out) if reader is not None else None
    if found is not None and found[0] in activations and found[0] in EPILOGUES:
        activation, out = found[0], reader.outputs[0]  # type: ignore[union-attr]
        nodes.extend(found[3])
    quant = None
    if (q := _only_reader(out, "QuantizeLinear")) is not None and len(q.inputs) == 3:
        scale = _scalar(q.inputs[1], np.float32)
        zero = _scalar(q.inputs[2], np.uint8)
        if scale is not None and zero is not None and np.isfinite(scale) and scale > 0:
            quant, out = (scale, zero), q.outputs[0]
            nodes.append(q)
    return _Tail(out, bias, activation, quant, nodes)


def _product(anchor: ir.Node, op: str, inputs: list[Input], bias: np.ndarray | None,
             channels: int, attrs: dict[str, Any], head: list[ir.Node], shared: list[ir.Node],
             activations: Collection[str]) -> Fused:
    """The QGemm / QConv computing ``anchor``'s product (``head``: the nodes up to it) and
    the tail it absorbs; ``inputs`` are A, W, a_scale, a_zero, w_scale."""
    tail = _tail(head[-1].outputs[0], channels, bias is None and op == "QGemm", activations)
    if tail.bias is not None:
        bias = tail.bias
    attrs = {**attrs, "activation": ir.AttrString("activation", tail.activation)}
    quant = tail.quant or (None, None)
    return Fused(op, [*inputs, bias, *quant], attrs, [*head, *tail.nodes], tail.out, shared)


def _check_groups(node: ir.Node, weights: np.ndarray, groups: str) -> None:
    """Refuse a grouped convolution the backend's QConv does not run (``groups`` is its
    ``BackendCaps.qconv_groups``)."""
    group = int(attr(node, "group", 1))
    if group == 1 or groups == "any":
        return
    depthwise = depthwise_weights(group, weights.shape)
    if groups == "depthwise" and not depthwise:
        raise _Refused(f"grouped (group {group}, {weights.shape[1]} channels per group, "
                       f"{weights.shape[0] // group} filters per group): the backend's QConv "
                       "runs one group or depthwise only")
    if groups == "one":
        raise _Refused("grouped (group > 1): the backend's QConv runs one group only")


def one_tap_refusal(node: ir.Node, kernel: tuple[int, ...]) -> str | None:
    """Why a ConvTranspose with kernel ``kernel`` may give an output pixel more than one tap
    (or have other geometry than kernel == strides, no pads, dilations, output padding,
    output shape or groups); None when each output pixel has exactly one."""
    strides = tuple(attr(node, "strides", [1] * len(kernel)))  # type: ignore[call-overload]
    if len(kernel) != 2 or strides != kernel:
        return f"kernel {list(kernel)} is not its strides {list(strides)} in 2-D"
    for name, neutral in (("pads", 0), ("dilations", 1), ("output_padding", 0)):
        if any(v != neutral for v in attr(node, name, [])):  # type: ignore[call-overload]
            return f"it has {name}"
    # auto_pad of any kind pads kernel - stride = 0 here
    if int(attr(node, "group", 1)) != 1 or attr(node, "output_shape", None) is not None:
        return "it has groups or an output shape"
    return None


def _check_one_tap(node: ir.Node, weights: np.ndarray) -> None:
    kernel = tuple(int(d) for d in weights.shape[2:])
    shape = tuple(attr(node, "kernel_shape", kernel))  # type: ignore[call-overload]
    why = one_tap_refusal(node, kernel) if shape == kernel else "kernel_shape is not W's"
    if why is not None:
        raise _Refused(f"the ConvTranspose's taps may overlap ({why}): the backend's "
                       "QConvTranspose runs kernel == stride only")


def analyse_static(node: ir.Node, activations: Collection[str], groups: str) -> Fused:
    """MatMul / Gemm / Conv reading dequantized u8 activations and int8 weights."""
    q, a_scale, a_zero, a_dq = _activation(node.inputs[0])
    bias_in = node.inputs[2] if len(node.inputs) > 2 else None
    attrs: dict[str, Any] = {}
    transposed = False
    if is_onnx(node, "MatMul"):
        weights, w_scale, w_dq = _weights(node.inputs[1], 2, 1)
        op, (bias, bias_dq) = "QGemm", (None, None)
    elif is_onnx(node, "Gemm"):
        if any(float(attr(node, k, 1.0)) != 1.0 for k in ("alpha", "beta")):
            raise _Refused("Gemm scales by alpha or beta")
        if int(attr(node, "transA", 0)):
            raise _Refused("Gemm transposes A")
        transposed = int(attr(node, "transB", 0)) == 1
        weights, w_scale, w_dq = _weights(node.inputs[1], 2, 0 if transposed else 1)
        if transposed:
            weights = np.ascontiguousarray(weights.T)
        op, (bias, bias_dq) = "QGemm", _bias(bias_in, weights.shape[1])
    elif is_onnx(node, "ConvTranspose"):
        weights, w_scale, w_dq = _weights(node.inputs[1], 4, 1)  # [C, M, KH, KW]
        _check_one_tap(node, weights)
        op, (bias, bias_dq) = "QConvTranspose", _bias(bias_in, weights.shape[1])
        attrs = dict(node.attributes)
    else:
        weights, w_scale, w_dq = _weights(node.inputs[1], 4, 0)
        _check_groups(node, weights, groups)
        op, (bias, bias_dq) = "QConv", _bias(bias_in, weights.shape[0])
        attrs = dict(node.attributes)
    # untransposed weights stay the graph's own initializer
    w_in: Input = weights if transposed else w_dq.inputs[0]
    channels = weights.shape[0] if op == "QConv" else weights.shape[1]
    shared = [a_dq, w_dq] + ([bias_dq] if bias_dq is not None else [])
    return _product(node, op, [q, w_in, a_scale, a_zero, w_scale], bias, channels, attrs,
                    [node], shared, activations)


def _scalar_value(value: ir.Value | None) -> bool:
    """Whether ``value`` is known to hold one element (DynamicQuantizeLinear's scale)."""
    if value is None:
        return False
    producer = value.producer()
    if producer is not None and is_onnx(producer, "DynamicQuantizeLinear") \
            and producer.outputs[1] is value:
        return True
    return value.shape is not None and all(d == 1 for d in value.shape)


def analyse_dynamic(node: ir.Node, activations: Collection[str]) -> Fused:
    """MatMulInteger -> Cast(float) -> Mul(a_scale * w_scale) with a constant int8 B."""
    q, b, a_zero, b_zero = (list(node.inputs) + [None] * 4)[:4]
    weights = const(b)
    u8 = q is not None and (q.dtype == ir.DataType.UINT8 or q.dtype is None and _producer(
        q, "DynamicQuantizeLinear") is not None)
    if not u8 or const(q) is not None:
        raise _Refused("A is not a computed uint8 tensor")
    if weights is None or weights.dtype != np.int8 or weights.ndim != 2:
        raise _Refused("B is not a constant int8 matrix")
    if b_zero is not None and (const(b_zero) is None or np.any(const(b_zero))):
        raise _Refused("B is asymmetric (a zero point is not 0)")
    if a_zero is not None and a_zero.dtype not in (ir.DataType.UINT8, None):
        raise _Refused("the A zero point is not uint8")
    cast = _only_reader(node.outputs[0], "Cast")
    if cast is None or int(attr(cast, "to", 0)) != ir.DataType.FLOAT:
        raise _Refused("the int32 product is not cast to float by its only reader")
    mul = _only_reader(cast.outputs[0], "Mul")
    if mul is None:
        raise _Refused("the float product is not scaled by its only reader")
    scale_value = mul.inputs[1] if mul.inputs[0] is cast.outputs[0] else mul.inputs[0]
    scale_mul = _producer(scale_value, "Mul")
    n = weights.shape[1]
    a_scale = w_scale = None
    if scale_mul is not None and not scale_value.is_graph_output():  # type: ignore[union-attr]
        for x, y in ((scale_mul.inputs[0], scale_mul.inputs[1]),
                     (scale_mul.inputs[1], scale_mul.inputs[0])):
            arr = const(y)
            if arr is not None and arr.dtype == np.float32 and arr.size in (1, n) \
                    and const(x) is None and _scalar_value(x):
                a_scale, w_scale = x, arr.reshape(-1)
                break
    if a_scale is None:
        raise _Refused("the scale is not a computed a_scale times a constant w_scale")
    return _product(node, "QGemm", [q, b, a_scale, a_zero, w_scale], None, n, {},
                    [node, cast, mul], [scale_mul], activations)  # type: ignore[list-item]


def analyse_max_pool(node: ir.Node) -> Fused:
    """DequantizeLinear -> 2-D MaxPool -> QuantizeLinear: the pool runs on the bytes."""
    kernel = list(attr(node, "kernel_shape", None) or [])  # type: ignore[call-overload]
    if len(kernel) != 2:
        raise _Refused("the pool is not 2-D")
    if any(d != 1 for d in attr(node, "dilations", None) or []):  # type: ignore[attr-defined]
        raise _Refused("the pool is dilated")
    if int(attr(node, "ceil_mode", 0)) or int(attr(node, "storage_order", 0)) \
            or str(attr(node, "auto_pad", "NOTSET")) not in ("NOTSET", ""):
        raise _Refused("ceil_mode, storage_order or auto_pad is set")
    pads = list(attr(node, "pads", None) or [0, 0, 0, 0])  # type: ignore[call-overload]
    if any(p >= k for p, k in zip(pads, kernel * 2)):
        raise _Refused("a pad is as large as the kernel")
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise _Refused("the indices are read")
    q, scale, zero, dq = _activation(node.inputs[0])
    if not (np.isfinite(scale) and scale > 0):  # the max commutes with increasing maps only
        raise _Refused("the activation scale is not positive")
    tail = _tail(node.outputs[0], 0, False, ())
    if tail.quant is None:
        raise _Refused("the pooled value is not quantized again to uint8 by its only reader")
    return Fused("QMaxPool", [q, scale, zero, *tail.quant], dict(node.attributes),
                 [node, *tail.nodes], tail.out, [dq])


def replace_with_fused(graph: ir.Graph, anchor: ir.Node, fused: Fused) -> ir.Node:
    """Put the kiln op in place of ``fused.nodes``; dequantizations nothing reads go too."""
    names = POOL_INPUTS if fused.op == "QMaxPool" else GEMM_INPUTS
    hint = anchor.name or fused.op
    inputs = [new_initializer(graph, item, f"{hint}_{names[k]}")
              if isinstance(item, np.ndarray) else item for k, item in enumerate(fused.inputs)]
    while inputs and inputs[-1] is None:
        inputs.pop()
    node = ir.node(fused.op, inputs, attributes=fused.attrs, domain=KILN_DOMAIN,
                   name=anchor.name)
    ir.convenience.replace_nodes_and_values(graph, fused.nodes[-1], fused.nodes, [node],
                                            [fused.output], [node.outputs[0]])
    for shared in fused.shared:
        if shared.graph is graph and not any(
                o is not None and (o.uses() or o.is_graph_output()) for o in shared.outputs):
            graph.remove(shared, safe=True)
    graph.opset_imports.setdefault(KILN_DOMAIN, 1)
    return node


class _FuseInt8(Rule):
    """Matching shared by the int8 rules: ``match`` walks the region from its anchor and keeps
    either the op it becomes or the reason it cannot (``check`` returns that reason)."""

    def match(self, node: ir.Node) -> Match | None:
        if not self.anchors(node):
            return None
        try:
            fused = self.analyse(node)
        except _Refused as why:
            return Match(node, [node], {"refused": str(why)})
        return Match(node, fused.nodes, {"fused": fused})

    def anchors(self, node: ir.Node) -> bool:
        """Whether ``node`` starts a region this rule is about."""
        raise NotImplementedError

    def analyse(self, node: ir.Node) -> Fused:
        raise NotImplementedError

    def check(self, match: Match) -> str | None:
        return match.values.get("refused")

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        replace_with_fused(graph, match.root, match["fused"])


def _reads_dequantized(node: ir.Node) -> bool:
    """The node's first input comes out of a DequantizeLinear (a Q/DQ region starts here)."""
    return bool(node.inputs) and _producer(node.inputs[0], "DequantizeLinear") is not None \
        and len(node.inputs) >= 2 and node.inputs[1] is not None


class FuseQdqIntoQGemm(_FuseInt8):
    """DQ -> MatMul / Gemm [-> Add] [-> act] [-> Q] -> kiln::QGemm."""

    name = "FuseQdqIntoQGemm"
    ops = frozenset({"MatMul", "Gemm"})
    needs = frozenset({"DequantizeLinear"})

    def __init__(self, activations: Collection[str] = ()) -> None:
        self.activations = frozenset(activations)

    def anchors(self, node: ir.Node) -> bool:
        return is_onnx(node, "MatMul", "Gemm") and _reads_dequantized(node)

    def analyse(self, node: ir.Node) -> Fused:
        return analyse_static(node, self.activations, groups="one")


class FuseQdqIntoQConv(_FuseInt8):
    """DQ -> Conv [-> act] [-> Q] -> kiln::QConv (grouped only as far as ``groups``, one of
    ``capabilities.QCONV_GROUPS``, allows)."""

    name = "FuseQdqIntoQConv"
    ops = frozenset({"Conv"})
    needs = frozenset({"DequantizeLinear"})

    def __init__(self, activations: Collection[str] = (), groups: str = "one") -> None:
        self.activations = frozenset(activations)
        self.groups = groups

    def anchors(self, node: ir.Node) -> bool:
        return is_onnx(node, "Conv") and _reads_dequantized(node)

    def analyse(self, node: ir.Node) -> Fused:
        return analyse_static(node, self.activations, self.groups)


class FuseQdqIntoQConvTranspose(_FuseInt8):
    """DQ -> ConvTranspose (kernel == stride) [-> act] [-> Q] -> kiln::QConvTranspose."""

    name = "FuseQdqIntoQConvTranspose"
    ops = frozenset({"ConvTranspose"})
    needs = frozenset({"DequantizeLinear"})

    def __init__(self, activations: Collection[str] = ()) -> None:
        self.activations = frozenset(activations)

    def anchors(self, node: ir.Node) -> bool:
        return is_onnx(node, "ConvTranspose") and _reads_dequantized(node)

    def analyse(self, node: ir.Node) -> Fused:
        return analyse_static(node, self.activations, groups="one")


class FuseMatMulIntegerIntoQGemm(_FuseInt8):
    """MatMulInteger -> Cast -> Mul(scale) [-> Add] [-> act] [-> Q] -> kiln::QGemm."""

    name = "FuseMatMulIntegerIntoQGemm"
    ops = frozenset({"MatMulInteger"})

    def __init__(self, activations: Collection[str] = ()) -> None:
        self.activations = frozenset(activations)

    def anchors(self, node: ir.Node) -> bool:
        return is_onnx(node, "MatMulInteger")

    def analyse(self, node: ir.Node) -> Fused:
        return analyse_dynamic(node, self.activations)


class FuseQdqIntoQMaxPool(_FuseInt8):
    """DQ -> MaxPool -> Q -> kiln::QMaxPool."""

    name = "FuseQdqIntoQMaxPool"
    ops = frozenset({"MaxPool"})
    needs = frozenset({"DequantizeLinear"})

    def anchors(self, node: ir.Node) -> bool:
        return is_onnx(node, "MaxPool") and bool(node.inputs) \
            and _producer(node.inputs[0], "DequantizeLinear") is not None

    def analyse(self, node: ir.Node) -> Fused:
        return analyse_max_pool(node)


def _is_spatial(node: ir.Node) -> bool:
    return node.domain == KILN_DOMAIN and node.op_type in SPATIAL


def _writes_u8(node: ir.Node) -> bool:
    """A QMaxPool always does; a QConv when it has y_scale (input 6)."""
    return node.op_type == "QMaxPool" or len(node.inputs) > 6 and node.inputs[6] is not None


#: Elementwise ops a byte table may contain (every input but the chain's own is a scalar)
TABLE_OPS = frozenset({"HardSigmoid", "HardSwish", "Relu", "Sigmoid", "Tanh", "LeakyRelu",
                       "Clip", "Mul", "Add", "Sub", "Div"})


def _elementwise_chain(graph: ir.Graph, start: ir.Value) -> tuple[list[ir.Node], ir.Node]:
    """The TABLE_OPS nodes computing from ``start`` alone (their other inputs scalar float32
    constants) in evaluation order, and the one QuantizeLinear every path ends in."""
    order: list[ir.Node] = []
    quant: ir.Node | None = None
    inside = {start}
    pending = [start]
    while pending:
        value = pending.pop(0)
        if value.is_graph_output():
            raise _Refused("a value of the chain is a graph output")
        for use in value.uses():
            node = use.node
            if node in order or node is quant:
                continue
            if node.graph is not graph:
                raise _Refused("a value of the chain is read inside a subgraph")
            if is_onnx(node, "QuantizeLinear"):
                if quant is not None or use.idx != 0:
                    raise _Refused("the chain ends in more than one QuantizeLinear")
                quant = node
                continue
            if not is_onnx(node, *TABLE_OPS) or len(node.outputs) != 1:
                raise _Refused(f"the dequantized value reaches {node.op_type}, which is not "
                               "an elementwise op of one value")
            for other in node.inputs:
                if other is None or other in inside:
                    continue
                arr = const(other)
                if arr is None or arr.size != 1 or arr.ndim > 1 or arr.dtype != np.float32:
                    producer = other.producer()
                    # an input computed in the chain but not reached yet: wait for it
                    if producer is not None and producer.graph is graph \
                            and not is_onnx(producer, "Constant"):
                        break
                    raise _Refused(f"{node.op_type} has an input that is neither the chain's "
                                   "value nor a scalar float32 constant")
            else:
                order.append(node)
                inside.add(node.outputs[0])
                pending.append(node.outputs[0])
    if quant is None or not order:
        raise _Refused("no elementwise chain ending in one QuantizeLinear")
    # nothing else reads a value of the chain (a node left waiting for an outside input does)
    for value in [start, *(n.outputs[0] for n in order)]:
        if any(u.node not in order and u.node is not quant for u in value.uses()):
            raise _Refused("a value of the chain is also read by a node outside it")
    return order, quant


def _evaluate(node: ir.Node, known: dict[ir.Value, np.ndarray]) -> np.ndarray | None:
    """One TABLE_OPS node on the 256 values of its chain, in float32 as an engine runs it."""
    args: list[np.ndarray | None] = []
    for v in node.inputs:
        if v is None:
            args.append(None)
            continue
        arr = known.get(v)
        if arr is None:
            arr = const(v)
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


def byte_table(graph: ir.Graph, dq: ir.Node) -> tuple[np.ndarray, list[ir.Node], ir.Node]:
    """DequantizeLinear ``dq`` of a u8 value -> elementwise chain -> QuantizeLinear: the
    256-entry table of the whole map (the module docstring's T), the chain and the Q."""
    if len(dq.inputs) < 2:
        raise _Refused("the DequantizeLinear has no scale")
    scale = _scalar(dq.inputs[1], np.float32)
    zero_in = dq.inputs[2] if len(dq.inputs) > 2 else None
    zero = _scalar(zero_in, np.uint8) if zero_in is not None else np.uint8(0)
    if scale is None or zero is None:
        raise _Refused("the dequantization is not per tensor from uint8")
    nodes, q = _elementwise_chain(graph, dq.outputs[0])
    known = {dq.outputs[0]: (np.arange(256, dtype=np.float32) - np.float32(zero)) * scale}
    for node in nodes:
        result = _evaluate(node, known)
        if result is None:
            raise _Refused(f"{node.op_type} lacks an input")
        known[node.outputs[0]] = result
    y_scale = _scalar(q.inputs[1], np.float32) if len(q.inputs) > 1 else None
    y_zero = _scalar(q.inputs[2], np.uint8) if len(q.inputs) > 2 else None
    x = known.get(q.inputs[0])  # type: ignore[arg-type]
    if x is None or y_scale is None or y_zero is None \
            or not (np.isfinite(y_scale) and y_scale > 0):
        raise _Refused("the chain's QuantizeLinear is not per tensor to uint8 with a positive "
                       "scale")
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.rint(x.astype(np.float32) / y_scale) + np.float32(y_zero)
    table = np.clip(np.nan_to_num(y, nan=255.0), 0, 255).astype(np.uint8)
    return table, nodes, q


class FuseByteTableIntoQOp(Rule):
    """kiln::QConv / QConvTranspose / QGemm (u8 result) -> DQ -> scalar elementwise chain -> Q:
    the chain becomes the op's byte table (input 8) and the op writes the Q's bytes."""

    name = "FuseByteTableIntoQOp"
    ops = frozenset({"QConv", "QConvTranspose", "QGemm"})
    needs = frozenset({"DequantizeLinear"})

    def match(self, node: ir.Node) -> Match | None:
        if node.domain != KILN_DOMAIN \
                or node.op_type not in ("QConv", "QConvTranspose", "QGemm") \
                or not _writes_u8(node) or len(node.inputs) > TABLE_INPUT:
            return None
        dq = _only_reader(node.outputs[0], "DequantizeLinear")
        if dq is None or dq.inputs[0] is not node.outputs[0] or node.graph is None:
            return None
        try:
            table, chain, q = byte_table(node.graph, dq)
        except _Refused as why:
            return Match(node, [node], {"refused": str(why)})
        return Match(node, [node, dq, *chain, q], {"table": table})

    def check(self, match: Match) -> str | None:
        return match.values.get("refused")

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        op = match.root
        table = new_initializer(graph, match["table"], f"{op.name or op.op_type}_table")
        inputs = list(op.inputs) + [None] * (TABLE_INPUT - len(op.inputs)) + [table]
        node = ir.node(op.op_type, inputs, attributes=dict(op.attributes), domain=KILN_DOMAIN,
                       name=op.name)
        last = match.nodes[-1]
        ir.convenience.replace_nodes_and_values(graph, last, match.nodes, [node],
                                                [last.outputs[0]], [node.outputs[0]])


class HandOverInt8Nhwc(HandOverNhwc):
    """A QConv / QConvTranspose / QMaxPool whose u8 result only such ops read (as input 0)
    writes it in NHWC and they read it so: ``kiln_layout_out`` / ``kiln_layout_in`` = "NHWC"."""

    name = "HandOverInt8Nhwc"
    ops = frozenset(SPATIAL)

    def takes_part(self, node: ir.Node) -> bool:
        return _is_spatial(node) and _writes_u8(node)

    def check(self, match: Match) -> str | None:
        node = match.root
        out = node.outputs[0]
        if out.is_graph_output():
            return "the u8 result is a graph output"
        for use in out.uses():
            if not _is_spatial(use.node) or use.idx != 0:
                return f"the u8 result is read by {use.node.op_type}"
        if node.op_type == "QMaxPool" and attr(node, LAYOUT_IN, NCHW) != NHWC:
            return "a QMaxPool reading NCHW writes NCHW"
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node = match.root
        node.attributes[LAYOUT_OUT] = ir.AttrString(LAYOUT_OUT, NHWC)
        for use in node.outputs[0].uses():
            use.node.attributes[LAYOUT_IN] = ir.AttrString(LAYOUT_IN, NHWC)


def int8_rules(caps: BackendCaps) -> list[Rule]:
    """The fusions into the int8 ops ``caps`` says the backend runs."""
    rules: list[Rule] = []
    if caps.runs("QGemm"):
        rules += [FuseQdqIntoQGemm(caps.int8_activations),
                  FuseMatMulIntegerIntoQGemm(caps.int8_activations)]
    if caps.runs("QConv"):
        rules.append(FuseQdqIntoQConv(caps.int8_activations, caps.qconv_groups))
    if caps.runs("QConvTranspose"):
        rules.append(FuseQdqIntoQConvTranspose(caps.int8_activations))
    if caps.runs("QMaxPool"):
        rules.append(FuseQdqIntoQMaxPool())
    if caps.int8_byte_table and (caps.runs("QConv") or caps.runs("QGemm")):
        rules.append(FuseByteTableIntoQOp())
    return rules
