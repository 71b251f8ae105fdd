"""Serialize an IR model to ONNX bytes for backends that consume ONNX (onnxruntime, OpenVINO,
TensorRT), and read its signature."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from kiln.backends.base import TensorSpec


def restamp_opset(proto: onnx.ModelProto, max_opset: int) -> bool:
    """Lower the default-domain opset stamp to ``max_opset`` when that changes no node.

    Exporters stamp the newest opset their onnx package knows; engines lag behind and refuse
    it. A node means the same at ``max_opset`` when its op's schema there is the very schema
    the stamped opset selects. If every node (subgraphs included) passes, the stamp is lowered
    and True returned; otherwise the model is left as it is and the engine decides.
    """
    stamped = next((o for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if stamped is None or stamped.version <= max_opset:
        return False
    for node in _all_nodes(proto.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            now = onnx.defs.get_schema(node.op_type, stamped.version, "")
            lowered = onnx.defs.get_schema(node.op_type, max_opset, "")
        except onnx.defs.SchemaError:
            return False
        if now.since_version != lowered.since_version:
            return False
    stamped.version = max_opset
    for function in proto.functions:
        for opset in function.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version > max_opset:
                return True
    return True


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def to_onnx_bytes(model: ir.Model, max_ir_version: int | None = None,
                  max_opset: int | None = None) -> bytes:
    """The model as serialized ONNX, weights inline.

    ``max_opset`` restamps the default-domain opset when no node changes meaning
    (``restamp_opset``); ``max_ir_version`` lowers the declared IR version for an engine
    that refuses newer ones (exporters stamp the newest IR their onnx package knows, engines
    lag behind); the graph itself is unchanged.
    """
    proto = ir.serde.serialize_model(model)
    if max_opset is not None:
        restamp_opset(proto, max_opset)
    if max_ir_version is not None and proto.ir_version > max_ir_version:
        proto.ir_version = max_ir_version
    return proto.SerializeToString()


def _dims(value: ir.Value) -> tuple[int | str | None, ...] | None:
    if value.shape is None:
        return None
    dims: list[int | str | None] = []
    for dim in value.shape:
        if isinstance(dim, int):
            dims.append(dim)
        else:
            dims.append(dim.value if isinstance(dim.value, str) and dim.value else None)
    return tuple(dims)


def value_spec(value: ir.Value) -> TensorSpec:
    dtype = value.dtype.numpy() if value.dtype is not None else np.dtype("float32")
    return TensorSpec(value.name or "", np.dtype(dtype), _dims(value))


def signature(model: ir.Model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the graph; initializers are not inputs."""
    inputs = [value_spec(v) for v in model.graph.inputs
              if v.name not in model.graph.initializers]
    outputs = [value_spec(v) for v in model.graph.outputs]
    return inputs, outputs
