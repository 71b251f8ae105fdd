"""Sizes for the symbolic dims of a model's inputs, for the random feeds of ``kiln run``,
``kiln bench`` and ``kiln compare``.

A symbolic dim is never filled blindly. Its size comes, in this order, from:

1. the user: ``--dim NAME=SIZE`` (an unnamed dim is addressed as ``INPUT:AXIS``);
2. the model's metadata: a ``metadata_props`` key equal to the dim's name, or ``imgsz``
   (``640`` or ``[640, 640]``, written by YOLO exporters) for the last two dims of a 4-d input;
3. what the graph forces on it where the input is first used (through shape-preserving
   elementwise ops): a fixed dim it meets in an elementwise broadcast, a MatMul/Gemm
   contraction, a Conv's input channels or a Concat's non-axis dims, and the element count of a
   Reshape to a constant shape;
4. 1, for a batch-like dim only: the leading dim, unnamed or named like ``N``/``batch``/``unk``.
   ``ResolvedDims.notes`` says so.

Anything left is an ``InputError`` that names every such dim and the flag that sizes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.backends.base import TensorSpec
from kiln.errors import InputError

#: Leading-dim names exporters give a batch: torch (``batch_size``, ``N``), tf2onnx
#: (``unk__12``), Paddle2ONNX (``p2o.DynamicDimension.0``), hand-written (``-1``, ``?``).
_BATCH_NAME = re.compile(r"(n|b|bs|batch|batch_?size|batches|unk(__\d+)?|-1|\?|none|"
                         r"(p2o\.)?DynamicDimension\.0)", re.IGNORECASE)
#: Ops whose first output has the shape of their first input.
_SAME_SHAPE = frozenset({"Identity", "Cast", "Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp",
                         "Log", "Sqrt", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu",
                         "Selu", "Softmax", "LogSoftmax", "Erf", "Gelu", "QuantizeLinear",
                         "DequantizeLinear", "Dropout", "Not", "Floor", "Ceil", "Round"})
_BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Where", "Equal", "Greater", "Less",
                        "And", "Or", "Max", "Min", "PRelu"})


@dataclasses.dataclass
class ResolvedDims:
    """Concrete input shapes, and one note per dim that was not given but decided here."""

    shapes: dict[str, tuple[int, ...]]
    notes: list[str]
    sizes: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """``height=100 (given), N=1 (batch)``: every symbolic dim's size and where it came
        from ("" when the inputs have none)."""
        return ", ".join(f"{k}={size} ({why})" for k, (size, why) in self.sizes.items())

    def explain(self, error: str) -> str:
        """``error`` of a run on inputs sized here, with the sizes that were used."""
        if not self.sizes:
            return error
        return (f"{error} [the random inputs had symbolic dims {self.summary()}; if the model "
                "cannot take these sizes, set others with --dim NAME=SIZE]")

    def specs(self, specs: Sequence[TensorSpec]) -> list[TensorSpec]:
        """``specs`` with every dim concrete."""
        return [TensorSpec(s.name, s.dtype, self.shapes.get(s.name, s.shape)) for s in specs]


def dim_key(spec: TensorSpec, axis: int) -> str:
    """How ``--dim`` addresses dim ``axis`` of ``spec``: its name, or ``INPUT:AXIS``."""
    dim = spec.shape[axis] if spec.shape else None
    return str(dim) if isinstance(dim, str) and dim else f"{spec.name}:{axis}"


def is_batch_like(spec: TensorSpec, axis: int) -> bool:
    """The leading dim, unnamed or named like a batch (``N``, ``batch``, ``unk__3``, ``-1``)."""
    if axis != 0 or not spec.shape:
        return False
    dim = spec.shape[0]
    return dim is None or (isinstance(dim, str) and bool(_BATCH_NAME.fullmatch(dim.strip())))


def resolve_input_dims(specs: Sequence[TensorSpec], model: Any = None,
                       given: Mapping[str, int] | None = None) -> ResolvedDims:
    """Concrete shapes for ``specs`` (see the module docstring for where sizes come from).
    ``model`` is the onnx_ir.Model the specs belong to (None: only ``given`` and batch dims).
    Raises ``InputError`` naming every dim it cannot size, and ``--dim`` names that match no
    symbolic dim."""
    given = dict(given or {})
    known: dict[str, tuple[int, str]] = {k: (v, "given") for k, v in given.items()}
    if model is not None:
        for key, value in _from_metadata(specs, model).items():
            known.setdefault(key, value)
        _from_uses(specs, model, known)
    shapes: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    sizes: dict[str, tuple[int, str]] = {}
    missing: dict[str, list[str]] = {}
    used: set[str] = set()
    for spec in specs:
        if spec.shape is None:
            raise InputError(f"input '{spec.name}' has no known rank; pass it with --input / "
                             "--inputs")
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                shape.append(dim)
                continue
            key = dim_key(spec, axis)
            alias = f"{spec.name}:{axis}"
            hit = next((k for k in (key, alias) if k in known), None)
            if hit is not None:
                size, why = known[hit]
                used.add(hit)
                if why != "given":
                    notes.append(f"dim '{key}' of input '{spec.name}' = {size} ({why})")
                    known.setdefault(key, (size, why))
            elif is_batch_like(spec, axis):
                size, why = 1, "batch"
                known[key] = (size, why)
                notes.append(f"batch dim '{key}' of input '{spec.name}' set to 1 "
                             f"(--dim {key}=SIZE for another)")
            else:
                missing.setdefault(spec.name, [])
                if key not in missing[spec.name]:
                    missing[spec.name].append(key)
                continue
            shape.append(size)
            sizes.setdefault(key, (size, why))
        shapes[spec.name] = tuple(shape)
    unknown = sorted(set(given) - used - _all_keys(specs))
    if unknown:
        keys = sorted(_all_keys(specs))
        raise InputError(f"--dim {', '.join(unknown)}: the model has no such symbolic dim"
                         + (f"; its symbolic dims are {', '.join(keys)}" if keys else
                            "; all its input dims are fixed"))
    if missing:
        parts = [f"input '{name}' has symbolic dim{'s' if len(keys) > 1 else ''} "
                 + ", ".join(f"'{k}'" for k in keys) for name, keys in missing.items()]
        # a dim two inputs share (a token sequence and its mask) is one flag
        flags = " ".join(dict.fromkeys(f"--dim {k}=SIZE" for keys in missing.values()
                                       for k in keys))
        raise InputError("; ".join(parts) + f" (no size in the model); give each a size "
                         f"with {flags}")
    return ResolvedDims(shapes, list(dict.fromkeys(notes)), sizes)


def _all_keys(specs: Sequence[TensorSpec]) -> set[str]:
    keys = set()
    for spec in specs:
        for axis, dim in enumerate(spec.shape or ()):
            if not isinstance(dim, int):
                keys.update({dim_key(spec, axis), f"{spec.name}:{axis}"})
    return keys


# -- from the model's metadata ---------------------------------------------------------------

def _int_or_list(text: str) -> list[int] | None:
    try:
        value = json.loads(text.replace("(", "[").replace(")", "]"))
    except ValueError:
        return None
    if isinstance(value, int) and value > 0:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and v > 0 for v in value):
        return value
    return None


def _from_metadata(specs: Sequence[TensorSpec], model: Any) -> dict[str, tuple[int, str]]:
    props = dict(getattr(model, "metadata_props", {}) or {})
    found: dict[str, tuple[int, str]] = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape or ()):
            if isinstance(dim, str) and dim in props:
                value = _int_or_list(props[dim])
                if value is not None and len(value) == 1:
                    found[dim_key(spec, axis)] = (value[0], f"metadata '{dim}'")
        imgsz = _int_or_list(props.get("imgsz", ""))
        if imgsz and spec.shape and len(spec.shape) == 4:
            hw = imgsz * 2 if len(imgsz) == 1 else imgsz[:2]
            for axis, size in zip((2, 3), hw):
                if not isinstance(spec.shape[axis], int):
                    found[dim_key(spec, axis)] = (size, "metadata 'imgsz'")
    return found


# -- from what the graph forces --------------------------------------------------------------

def _static(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    if value is None or shape is None:
        return None
    dims = tuple(shape)
    return dims if all(isinstance(d, int) for d in dims) else None


def _constant(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is not None and node.op_type == "Constant" and "value" in node.attributes:
        return node.attributes["value"].as_tensor().numpy()
    return None


def _attr(node: Any, name: str, default: Any) -> Any:
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.value


def _forced(node: Any, index: int, rank: int) -> tuple[dict[int, int], Any]:
    """Dims (axis -> size) that ``node`` forces on its input ``index`` of rank ``rank``, and
    the output that keeps that input's shape (None when there is none to follow)."""
    op = node.op_type
    inputs = list(node.inputs)
    out = node.outputs[0] if node.outputs else None
    forced: dict[int, int] = {}
    if op in _SAME_SHAPE and index == 0:
        return forced, out
    if op in _BROADCAST:
        follows = True
        for j, other in enumerate(inputs):
            shape = _static(other) if j != index and other is not None else None
            if shape is None:
                continue
            if len(shape) > rank:
                follows = False
            for k in range(1, min(rank, len(shape)) + 1):
                if shape[-k] != 1:
                    forced[rank - k] = shape[-k]
        return forced, out if follows else None
    if op == "MatMul" and rank >= 1:
        other = _static(inputs[1 - index]) if len(inputs) == 2 else None
        if other:
            if index == 0:
                forced[rank - 1] = other[-2] if len(other) >= 2 else other[0]
            elif rank >= 2:
                forced[rank - 2] = other[-1]
        return forced, None
    if op in ("Gemm", "FusedGemm") and index == 0 and rank == 2 and len(inputs) > 1:
        weight = _static(inputs[1])
        if weight and len(weight) == 2:
            k = weight[1] if _attr(node, "transB", 0) else weight[0]
            forced[0 if _attr(node, "transA", 0) else 1] = k
        return forced, None
    if op in ("Conv", "FusedConv", "ConvInteger") and index == 0 and rank >= 3:
        weight = _static(inputs[1]) if len(inputs) > 1 else None
        if weight:
            forced[1] = weight[1] * int(_attr(node, "group", 1))
        return forced, None
    if op == "Concat":
        axis = int(_attr(node, "axis", 0)) % rank if rank else 0
        for j, other in enumerate(inputs):
            shape = _static(other) if j != index else None
            if shape and len(shape) == rank:
                forced.update({k: shape[k] for k in range(rank) if k != axis})
        return forced, None
    return forced, None


def _reshape_count(node: Any, index: int, dims: list[Any]) -> tuple[int, int] | None:
    """(axis, size) when ``node`` reshapes this input to a constant shape whose element count
    leaves exactly one of ``dims`` unknown."""
    if node.op_type != "Reshape" or index != 0 or len(node.inputs) < 2:
        return None
    constant = _constant(node.inputs[1])
    if constant is None or (constant < 0).any():
        return None
    target = [int(t) for t in constant.ravel()]
    allow_zero = bool(_attr(node, "allowzero", 0))
    count = 1
    rest = list(dims)
    for k, t in enumerate(target):
        if t == 0 and not allow_zero:  # copies the input's dim k: cancels on both sides
            if k >= len(rest):
                return None
            rest[k] = 1
            continue
        count *= t
    unknown = [k for k, d in enumerate(rest) if not isinstance(d, int)]
    if len(unknown) != 1:
        return None
    fixed = math.prod(d for d in rest if isinstance(d, int))
    if fixed == 0 or count % fixed:
        return None
    return unknown[0], count // fixed


def _current(spec: TensorSpec, known: Mapping[str, tuple[int, str]]) -> list[Any]:
    """``spec``'s dims with the sizes known so far (None where there is none yet)."""
    return [d if isinstance(d, int) else known.get(dim_key(spec, axis), (None,))[0]
            for axis, d in enumerate(spec.shape or ())]


def _from_uses(specs: Sequence[TensorSpec], model: Any,
               known: dict[str, tuple[int, str]]) -> None:
    """Add to ``known`` the sizes the graph forces on each input's symbolic dims."""
    values = {v.name: v for v in model.graph.inputs}
    for spec in specs:
        value = values.get(spec.name)
        if value is None or not spec.shape:
            continue
        rank = len(spec.shape)
        frontier = [value]
        seen = set()
        while frontier:
            value = frontier.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            for use in value.uses():
                node, index = use[0], use[1]
                forced, follow = _forced(node, index, rank)
                hit = _reshape_count(node, index, _current(spec, known))
                if hit is not None:
                    forced.setdefault(*hit)
                where = node.name or node.op_type
                for axis, size in forced.items():
                    if isinstance(spec.shape[axis], int) or size < 1:
                        continue
                    known.setdefault(dim_key(spec, axis),
                                     (size, f"forced by {node.op_type} '{where}'"))
                if follow is not None:
                    frontier.append(follow)


def fix_input_dims(model: Any, dims: Mapping[str, int]) -> dict[str, int]:
    """Bind symbolic input dims of an ``onnx_ir`` model for good, before it is optimized
    (onnxruntime's free-dimension overrides, OpenVINO's ``reshape``): ``dims`` maps a dim
    name, or ``INPUT:AXIS`` for an unnamed one, to its size. Every value that carries a named
    dim gets the size, so shape inference, the passes and the engines see static shapes (the
    native plan is then laid out once, at compile time); inputs of other sizes are refused
    at run time like any wrong shape. Returns what was bound."""
    import onnx_ir as ir

    from kiln.backends.onnx_export import value_spec

    graph = model.graph
    specs = [value_spec(v) for v in graph.inputs]
    keys = {dim_key(s, a): (s, a) for s in specs for a in range(len(s.shape or ()))
            if not isinstance(s.shape[a], int)}
    for key, size in dims.items():
        if type(size) is not int or size < 1:
            raise InputError(f"dims: the size of '{key}' must be an integer >= 1, got {size!r}")
        if key not in keys:
            have = ", ".join(sorted(keys)) or "none (every input dim is fixed)"
            raise InputError(f"dims: no input has a symbolic dim '{key}'; symbolic dims: {have}")
    # a named dim is bound wherever the name appears; an unnamed one on its input only
    named = {k: v for k, v in dims.items() if isinstance(keys[k][0].shape[keys[k][1]], str)}
    positional = {(keys[k][0].name, keys[k][1]): v for k, v in dims.items() if k not in named}

    def bind(value: ir.Value, is_input: bool) -> None:
        if value.shape is None:
            return
        new = []
        for axis, d in enumerate(value.shape):
            name = d.value if isinstance(d, ir.SymbolicDim) else None
            size = named.get(name) if name else None
            if size is None and is_input and not name and not isinstance(d, int):
                size = positional.get((value.name, axis))
            new.append(size if size is not None else d)
        value.shape = ir.Shape(new)

    for value in graph.inputs:
        bind(value, True)
    for node in graph.all_nodes():
        for value in node.outputs:
            bind(value, False)
    for value in graph.outputs:
        bind(value, False)
    return dict(dims)
