"""What is in a model, and what the compiler did to it: the data behind ``kiln inspect``.

``inspect_model`` returns a plain dict (JSON-ready): inputs and outputs, op histogram,
parameter count and bytes, multiply-accumulates per Conv/ConvTranspose/Gemm/MatMul/Attention
(and their kiln fused forms) with the total, and — when an optimization level is given — the
compile report: per pass its time, node counts and which rules fired.

MACs need static shapes; pass ``input_shapes`` to pin symbolic dims (e.g. batch and sequence
length). A node whose shapes stay unknown is listed with ``macs: None`` and left out of the
total, which then says how many nodes it could not count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from kiln.compiler.capabilities import STANDARD_ONNX, BackendCaps
from kiln.compiler.graph_index import count_nodes, op_histogram
from kiln.compiler.passes._util import attr

if TYPE_CHECKING:
    from kiln.compiler.target import Target

_COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "Attention")


def _dims(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    dims = list(value.shape)
    return dims if all(isinstance(d, int) for d in dims) else None  # type: ignore[return-value]


def _shape_json(value: ir.Value) -> list[int | str | None] | None:
    if value.shape is None:
        return None
    return [d if isinstance(d, int) else (d.value if d.value is not None else None)
            for d in value.shape]


def node_macs(node: ir.Node) -> int | None:
    """Multiply-accumulates of one Conv/Gemm/MatMul-like node, None when shapes are unknown."""
    op = node.op_type
    out = _dims(node.outputs[0]) if node.outputs else None
    if op in ("Conv", "FusedConv"):
        w = _dims(node.inputs[1])
        if w is None or out is None:
            return None
        return math.prod(out) * math.prod(w[1:])
    if op == "ConvTranspose":
        x, w = _dims(node.inputs[0]), _dims(node.inputs[1])
        if x is None or w is None:
            return None
        return math.prod(x) * math.prod(w[1:])
    if op in ("Gemm", "FusedGemm"):
        a = _dims(node.inputs[0])
        if a is None or out is None:
            return None
        inner = a[0] if attr(node, "transA", 0) else a[1]
        return math.prod(out) * inner
    if op == "MatMul":
        a = _dims(node.inputs[0])
        if a is None or out is None:
            return None
        return math.prod(out) * a[-1]
    if op == "Attention":
        q, key = _dims(node.inputs[0]), _dims(node.inputs[1])
        if q is None or key is None or len(q) != 4 or len(key) != 4:
            return None
        batch, heads, sq, d = q
        return 2 * batch * heads * sq * key[2] * d  # Q K^T and P V
    return None


def _parameters(model: ir.Model) -> tuple[int, int]:
    count = size = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None:
            continue
        n = math.prod(tensor.shape.numpy())
        count += n
        size += tensor.nbytes
    return count, size


def _pin_inputs(model: ir.Model, input_shapes: Mapping[str, Sequence[int]]) -> None:
    by_name = {str(v.name): v for v in model.graph.inputs}
    for name, dims in input_shapes.items():
        if name not in by_name:
            raise KeyError(f"model has no input '{name}'; inputs: {sorted(by_name)}")
        by_name[name].shape = ir.Shape(list(dims))


def summarize(model: ir.Model) -> dict[str, Any]:
    """Signature, ops, parameters and MACs of ``model`` as it is (shapes as annotated)."""
    params, param_bytes = _parameters(model)
    per_node = []
    total = 0
    unknown = 0
    for node in model.graph.all_nodes():
        if node.op_type not in _COUNTED:
            continue
        macs = node_macs(node)
        if macs is None:
            unknown += 1
        else:
            total += macs
        per_node.append({"name": node.name, "op": node.op_type, "macs": macs,
                         "output_shape": _shape_json(node.outputs[0])})
    return {
        "inputs": [{"name": v.name, "dtype": str(v.dtype), "shape": _shape_json(v)}
                   for v in model.graph.inputs],
        "outputs": [{"name": v.name, "dtype": str(v.dtype), "shape": _shape_json(v)}
                    for v in model.graph.outputs],
        "opsets": dict(model.opset_imports),
        "nodes": count_nodes(model),
        "ops": dict(sorted(op_histogram(model).items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": params,
        "parameter_bytes": param_bytes,
        "macs": {"total": total, "uncounted_nodes": unknown, "per_node": per_node},
    }


def inspect_model(model: ir.Model, level: int | None = None, target: Target | None = None,
                  caps: BackendCaps = STANDARD_ONNX,
                  input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Describe ``model``; with ``level``, also compile a copy and describe the result.

    Returns ``{"model": summary}`` or, with a level, ``{"model": before, "optimized": after,
    "report": compile report}``. ``model`` itself is never changed.
    """
    from kiln.compiler.pipeline import optimize

    work = ir.from_proto(ir.to_proto(model))
    if input_shapes:
        _pin_inputs(work, input_shapes)
    ShapeInferencePass(strict_mode=False)(work)
    result: dict[str, Any] = {"model": summarize(work)}
    if level is not None:
        optimized, report = optimize(work, level, target, caps)
        result["optimized"] = summarize(optimized)
        result["report"] = report.to_json()
    return result
