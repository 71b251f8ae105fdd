"""Types through onnxruntime's contrib ops (``com.microsoft`` ...), which onnx does not know.

onnx's shape inference stops at a node of a domain it has no schema for: that node's outputs,
and everything computed from them, stay untyped, and the partitioner cannot cut a graph at an
untyped tensor. ``complete_types`` walks the top-level graph once, in order, and fills what is
missing:

- a contrib node's outputs from onnxruntime's own schema of the op: a fixed type
  (``tensor(uint8)``), a type parameter that allows one type, or a type parameter bound to
  one of the node's inputs whose type is known (``T`` of QLinearAdd's output is ``T`` of its
  input A);
- a standard node's outputs from onnx's per-node inference, given the types now known.

Only what follows from a schema is written (element types, and shapes where onnx infers
them); a type that cannot be derived stays unknown. Without onnxruntime nothing changes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import onnx

_STANDARD = ("", "ai.onnx")


@functools.cache
def _contrib_schemas() -> Mapping[tuple[str, str], Any]:
    """(domain, op) -> onnxruntime's newest schema for every op outside the ONNX domain."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
    except Exception:  # onnxruntime absent or broken: no contrib knowledge
        return {}
    schemas: dict[tuple[str, str], Any] = {}
    for schema in ort_state.get_all_operator_schema():
        if schema.domain in _STANDARD:
            continue
        key = (schema.domain, schema.name)
        if key not in schemas or schema.since_version > schemas[key].since_version:
            schemas[key] = schema
    return schemas


def has_contrib_nodes(proto: onnx.ModelProto) -> bool:
    return any(node.domain not in _STANDARD for node in proto.graph.node)


def _elem_type(type_str: str) -> int | None:
    """ONNX element type of ``tensor(float)`` and the like; None for anything else."""
    if not (type_str.startswith("tensor(") and type_str.endswith(")")):
        return None
    name = type_str[len("tensor("):-1].upper()
    name = {"FLOAT32": "FLOAT", "FLOAT64": "DOUBLE"}.get(name, name)
    return onnx.TensorProto.DataType.Value(name) if name in onnx.TensorProto.DataType.keys() \
        else None


def _contrib_outputs(node: onnx.NodeProto, schema: Any,
                     known: Mapping[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
    allowed = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
    bound: dict[str, int] = {}  # type parameter -> element type, from the node's inputs
    formals = list(schema.inputs)
    for index, name in enumerate(node.input):
        if not name or name not in known or not formals:
            continue
        formal = formals[min(index, len(formals) - 1)]
        if known[name].HasField("tensor_type") and known[name].tensor_type.elem_type:
            bound.setdefault(formal.typeStr, known[name].tensor_type.elem_type)
    outputs = list(schema.outputs)
    found: dict[str, onnx.TypeProto] = {}
    for index, name in enumerate(node.output):
        if not name or name in known or not outputs:
            continue
        param = outputs[min(index, len(outputs) - 1)].typeStr
        elem = _elem_type(param)
        if elem is None and len(allowed.get(param, ())) == 1:
            elem = _elem_type(allowed[param][0])
        if elem is None:
            elem = bound.get(param)
        if elem:
            found[name] = onnx.helper.make_tensor_type_proto(elem, None)
    return found


def _standard_outputs(node: onnx.NodeProto, opset: int, proto: onnx.ModelProto,
                      known: Mapping[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
    if any(a.HasField("g") or a.graphs for a in node.attribute):
        return {}  # bodies need whole-graph inference, which already ran
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        inputs = {n: known[n] for n in node.input if n and n in known}
        return dict(onnx.shape_inference.infer_node_outputs(
            schema, node, inputs, opset_imports=list(proto.opset_import),
            ir_version=proto.ir_version))
    except Exception:  # no schema, or inference needs what is still unknown
        return {}


def complete_types(proto: onnx.ModelProto) -> int:
    """Add value_info for top-level values onnx's inference left untyped (see the module
    docstring). In place; returns how many values got a type."""
    if not has_contrib_nodes(proto):  # before the schemas: importing onnxruntime for them
        return 0                      # costs ~23 MB of RSS that a plain ONNX model never needs
    schemas = _contrib_schemas()
    if not schemas:
        return 0
    graph = proto.graph
    opset = max((o.version for o in proto.opset_import if o.domain in _STANDARD), default=0)
    known: dict[str, onnx.TypeProto] = {
        v.name: v.type for v in (*graph.input, *graph.value_info, *graph.output)
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
    for tensor in graph.initializer:
        known.setdefault(tensor.name, onnx.helper.make_tensor_type_proto(
            tensor.data_type, list(tensor.dims)))
    outputs = {v.name: v for v in graph.output}
    added = 0
    for node in graph.node:
        if all(not name or name in known for name in node.output):
            continue
        schema = schemas.get((node.domain, node.op_type))
        if schema is not None:
            found = _contrib_outputs(node, schema, known)
        elif node.domain in _STANDARD:
            found = _standard_outputs(node, opset, proto, known)
        else:
            found = {}
        for name, value_type in found.items():
            if name in known or not value_type.HasField("tensor_type") \
                    or not value_type.tensor_type.elem_type:
                continue
            known[name] = value_type
            if name in outputs:
                outputs[name].type.tensor_type.elem_type = value_type.tensor_type.elem_type
            else:
                graph.value_info.append(onnx.helper.make_value_info(name, value_type))
            added += 1
    return added
