"""Serialize an IR model to ONNX bytes for backends that consume ONNX (onnxruntime, OpenVINO,
TensorRT), and read its signature."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.backends.base import TensorSpec
from kiln.compiler.opset_stamp import restamp_opset


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
