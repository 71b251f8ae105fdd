"""Prove two tensors have the same shape when their dims are symbolic.

ONNX shape inference names each unknown output dim afresh (``unk__3``), so a Conv's output
and the residual it is added to carry different names even when both widths are the same
function of the input width. This module re-derives dims from the producers instead: each dim
becomes an exact expression over the graph's input axes, and two values have the same shape
when their expressions are equal term for term. Anything it cannot model becomes an opaque
term equal only to itself, so a "same" answer is a proof and a "not proven" answer is safe.

Expressions (all hashable, compared structurally):

    int                      a known size
    (atom, offset)           atom + offset, offset an int
    atom = ("axis", id(value), axis)    a graph input's dim, or one nothing is known about
         | ("floordiv", (atom, r), s)   floor((atom + r) / s) with 0 <= r < s, s >= 2

A Conv/pool output size is floor((x + pads - dilation * (k - 1) - 1) / s) + 1; writing
x = atom + c and c + pads - eff = q * s + r (0 <= r < s) gives floordiv((atom, r), s) + q + 1,
a unique form, so equal sizes built the same way compare equal.
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.compiler.capabilities import KILN_DOMAIN
from kiln.compiler.passes._util import attr, is_onnx

Dim = int | tuple  # int, or (atom, offset)

_SAME_SHAPE = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu",
    "Softplus", "Gelu", "Erf", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Identity",
    "Cast", "Dropout", "BatchNormalization", "InstanceNormalization", "LRN", "Softmax",
    "LogSoftmax", "Mish", "Celu", "ThresholdedRelu", "Round", "Floor", "Ceil", "Sign", "Not",
}
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
              "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}
_KILN_CONV = {"FusedConv"}
_KILN_SAME_SHAPE = {"FusedBatchNorm"}


def same_shape(a: ir.Value, b: ir.Value) -> bool:
    """Whether ``a`` and ``b`` provably have the same shape in every run of the graph."""
    memo: dict[int, tuple[Dim, ...] | None] = {}
    da, db = symbolic_dims(a, memo), symbolic_dims(b, memo)
    return da is not None and db is not None and da == db


def symbolic_dims(value: ir.Value, memo: dict[int, tuple[Dim, ...] | None] | None = None
                  ) -> tuple[Dim, ...] | None:
    """Each dim of ``value`` as an expression over input dims; None when the rank is unknown."""
    memo = {} if memo is None else memo
    # producers first, with an explicit stack: a deep network must not exhaust Python's
    # recursion limit
    stack, opened = [value], set()
    while stack:
        cur = stack[-1]
        if id(cur) in memo:
            stack.pop()
            continue
        waiting = [v for v in _sources(cur) if id(v) not in memo]
        if waiting and id(cur) not in opened:
            opened.add(id(cur))
            stack.extend(waiting)
            continue
        memo[id(cur)] = _derive(cur, memo)  # an input still waiting (a cycle) reads as unknown
        stack.pop()
    return memo[id(value)]


def _modelled(node: ir.Node) -> bool:
    if node.domain == KILN_DOMAIN:
        return node.op_type in _KILN_CONV or node.op_type in _KILN_SAME_SHAPE
    return is_onnx(node, *_SAME_SHAPE, *_BROADCAST, "Conv", "MaxPool", "AveragePool", "LpPool",
                   "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")


def _sources(value: ir.Value) -> list[ir.Value]:
    """The values ``value``'s dims are derived from (none for an op this module does not
    model)."""
    node = value.producer()
    if node is None or value is not node.outputs[0] or not _modelled(node):
        return []
    return [v for v in node.inputs if v is not None]


def _declared(value: ir.Value) -> tuple[Dim, ...] | None:
    """Dims as the value declares them: ints kept, every other dim an atom of its own.

    A symbolic name is no proof: exporters write "?" for every unknown axis, kiln does not
    make inputs that share a name agree, and an inferred name on an intermediate value is
    shape inference's guess. So only dims derived from the same axis of the same value
    compare equal."""
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else (("axis", id(value), axis), 0)
                 for axis, d in enumerate(value.shape))


def _derive(value: ir.Value, memo: dict) -> tuple[Dim, ...] | None:
    node = value.producer()
    declared = _declared(value)
    if node is None or value is not node.outputs[0]:
        return declared
    derived = None
    kiln = node.domain == KILN_DOMAIN
    if is_onnx(node, *_SAME_SHAPE) or (kiln and node.op_type in _KILN_SAME_SHAPE):
        derived = _input_dims(node, 0, memo)
    elif is_onnx(node, *_BROADCAST):
        derived = _broadcast([_input_dims(node, i, memo) for i in range(len(node.inputs))],
                             value)
    elif is_onnx(node, "Conv") or (kiln and node.op_type in _KILN_CONV):
        derived = _window(node, memo, channels_from_weight=True)
    elif is_onnx(node, "MaxPool", "AveragePool", "LpPool"):
        derived = _window(node, memo, channels_from_weight=False)
    elif is_onnx(node, "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        x = _input_dims(node, 0, memo)
        derived = None if x is None else x[:2] + (1,) * (len(x) - 2)
    return _merge(derived, declared)


def _merge(derived: tuple[Dim, ...] | None, declared: tuple[Dim, ...] | None
           ) -> tuple[Dim, ...] | None:
    """The derived dims, with any size the graph states as an int taking precedence."""
    if derived is None:
        return declared
    if declared is None:
        return derived
    if len(declared) != len(derived):
        return None  # the graph's own shape disagrees on the rank: prove nothing
    return tuple(dc if isinstance(dc, int) else dv for dv, dc in zip(derived, declared))


def _input_dims(node: ir.Node, index: int, memo: dict) -> tuple[Dim, ...] | None:
    value = node.inputs[index] if index < len(node.inputs) else None
    return None if value is None else memo.get(id(value))


def _broadcast(shapes: list[tuple[Dim, ...] | None], out: ir.Value) -> tuple[Dim, ...] | None:
    """Numpy-style broadcast of the input dims; a pair it cannot decide becomes opaque."""
    present = [s for s in shapes if s is not None]
    if len(present) != len(shapes) or not present:
        return None
    rank = max(len(s) for s in present)
    dims: list[Dim] = []
    for axis in range(rank):
        column = [s[axis - rank + len(s)] for s in present if axis - rank + len(s) >= 0]
        sizes = {d for d in column if d != 1}
        if not sizes:
            dims.append(1)
        elif len(sizes) == 1:
            dims.append(sizes.pop())  # a symbolic dim beside n or itself: a valid run has it
        else:
            ints = {d for d in sizes if isinstance(d, int)}
            # one int n beside symbolic dims: each symbolic one is 1 or n, so the result is n
            dims.append(ints.pop() if len(ints) == 1 else (("axis", id(out), axis), 0))
    return tuple(dims)


def _window(node: ir.Node, memo: dict, channels_from_weight: bool) -> tuple[Dim, ...] | None:
    """Conv/pool output dims: N from X, C from W (Conv) or X (pool), spatial from the window."""
    x = _input_dims(node, 0, memo)
    if x is None or len(x) < 3:
        return None
    spatial = len(x) - 2
    if channels_from_weight:
        w = node.inputs[1] if len(node.inputs) > 1 else None
        if w is None or w.shape is None or len(w.shape) != len(x):
            return None
        wdims = [d for d in w.shape if isinstance(d, int)]
        if len(wdims) != len(x):
            return None
        channels: Dim = wdims[0]
        kernel = [int(k) for k in (attr(node, "kernel_shape") or wdims[2:])]
    else:
        channels = x[1]
        kernel = [int(k) for k in (attr(node, "kernel_shape") or [])]
        if int(attr(node, "ceil_mode", 0)):
            return None  # ceil mode drops a window starting in the padding: not modelled
    if len(kernel) != spatial:
        return None
    strides = [int(s) for s in (attr(node, "strides") or [1] * spatial)]
    dilations = [int(d) for d in (attr(node, "dilations") or [1] * spatial)]
    pads = [int(p) for p in (attr(node, "pads") or [0] * (2 * spatial))]
    auto_pad = attr(node, "auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if len(strides) != spatial or len(dilations) != spatial or len(pads) != 2 * spatial:
        return None
    out: list[Dim] = [x[0], channels]
    for i in range(spatial):
        s = strides[i]
        if s < 1:
            return None
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(_floordiv_plus(x[2 + i], s - 1, s, 0))  # ceil(x / s)
            continue
        if auto_pad == "VALID":
            total = 0
        elif auto_pad in ("NOTSET", ""):
            total = pads[i] + pads[i + spatial]
        else:
            return None
        eff = dilations[i] * (kernel[i] - 1) + 1
        out.append(_floordiv_plus(x[2 + i], total - eff, s, 1))
    return tuple(out)


def _floordiv_plus(x: Dim, c: int, s: int, plus: int) -> Dim:
    """floor((x + c) / s) + plus in the canonical form."""
    if isinstance(x, int):
        return (x + c) // s + plus
    atom, offset = x
    total = offset + c
    if s == 1:
        return (atom, total + plus)
    q, r = divmod(total, s)
    return (("floordiv", (atom, r), s), q + plus)
