"""Serialize an IR model to ONNX bytes for backends that consume ONNX (onnxruntime, OpenVINO,
TensorRT), and read its signature; a loaded artifact's graph as those engines read it
(``StoredGraph``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

from kiln.backends.base import TensorSpec
from kiln.compiler.frontend import ready_weights_dir
from kiln.compiler.onnx_stream import WEIGHTS_DIR
from kiln.compiler.opset_stamp import restamp_opset
from kiln.compiler.passes._util import value_dims
from kiln.compiler.source_digest import SOURCE_FILE

#: The graph-only model written beside the weights in ``WEIGHTS_DIR``, for engines that read files.
GRAPH_FILE = "graph.onnx"


@dataclasses.dataclass
class StoredGraph:
    """A loaded artifact's graph as an engine fed ONNX reads it: the validated ModelProto,
    whose external tensors point into the .kiln file in ``weights_dir`` (``Artifact.
    attach_weights``). kiln's IR of it is built on the first ``model()`` call only: an
    engine that reads the proto never asks, and a session that nobody asks for its graph
    never pays for one (YOLOv8n: 15-20 ms of a ~130 ms load).

    Nothing changes ``proto`` once it is here: the IR is built from it as it was stored.
    """

    proto: Any  # onnx.ModelProto
    weights_dir: str
    #: checks a blob graph's references into the artifact's weights member and points them
    #: into the .kiln file, as model.onnx's were (``Artifact.attach_weights``)
    attach: Callable[..., None] | None = dataclasses.field(default=None, repr=False)
    _model: ir.Model | None = dataclasses.field(default=None, repr=False)

    def model(self) -> ir.Model:
        """kiln's IR of the graph, built once; its external tensors map the .kiln file."""
        if self._model is None:
            model = ir.from_proto(self.proto)
            ir.external_data.set_base_dir(model.graph, self.weights_dir)
            self._model = model
        return self._model

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """(inputs, outputs) as ``signature`` reads them from the IR; initializers are not
        inputs."""
        graph = self.proto.graph
        weights = {t.name for t in graph.initializer}
        inputs = [value_spec(ir.serde.deserialize_value_info_proto(v, None))
                  for v in graph.input if v.name not in weights]
        outputs = [value_spec(ir.serde.deserialize_value_info_proto(v, None))
                   for v in graph.output]
        return inputs, outputs


def ir_model(model: ir.Model | StoredGraph) -> ir.Model:
    """The IR of ``model``: itself, or a stored graph's (built on this first request)."""
    return model.model() if isinstance(model, StoredGraph) else model


def to_onnx_bytes(model: ir.Model, max_ir_version: int | None = None,
                  max_opset: int | None = None) -> bytes:
    """The model as serialized ONNX, weights inline.

    ``max_opset`` restamps the default-domain opset when no node changes meaning
    (``restamp_opset``); ``max_ir_version`` lowers the declared IR version for an engine
    that refuses newer ones (exporters stamp the newest IR their onnx package knows, engines
    lag behind); the graph itself is unchanged.
    """
    proto = _proto(model, max_ir_version, max_opset)
    folder = ready_weights_dir(model) or mapped_weights_folder(model)
    if folder is not None:  # weights on disk (kiln's file or a .kiln): read them back in
        import onnx

        onnx.load_external_data_for_model(proto, folder)
    return proto.SerializeToString()


def to_onnx_file(model: ir.Model, max_ir_version: int | None = None,
                 max_opset: int | None = None) -> str | None:
    """The model as an ONNX file whose weights stay in their external-data file, for engines
    that read (or map) that file themselves; None when the weights are in memory."""
    folder = ready_weights_dir(model)
    if folder is None:
        return None
    path = f"{folder}/{GRAPH_FILE}"
    with open(path, "wb") as f:
        f.write(to_onnx_graph_bytes(model, max_ir_version, max_opset))
    return path


def source_file(model: ir.Model, max_ir_version: int | None = None,
                max_opset: int | None = None) -> str | None:
    """The model file an engine fed ONNX may open itself instead of kiln's serialization of
    ``model``: set when no pass changed the graph kiln read from it (``SOURCE_FILE``), while
    the file is still the one read (an engine that then reads it checks again after) and its
    IR version and default-domain opset are within the limits given (nothing to lower)."""
    digest = model.meta.get(SOURCE_FILE)
    path = digest.file_as_read() if digest is not None else None
    if path is None:
        return None
    if max_ir_version is not None and model.ir_version > max_ir_version:
        return None
    if max_opset is not None and any(version > max_opset for domain, version
                                     in model.opset_imports.items() if domain in ("", "ai.onnx")):
        return None
    return str(path)


def mapped_weights_folder(model: ir.Model) -> str | None:
    """The folder of the one file ``model``'s external tensors map in place (a loaded .kiln
    artifact's tensors map the artifact itself), when the weights were not moved to a file of
    kiln's own; None when they are in memory, or spread over several folders."""
    if WEIGHTS_DIR in model.meta:
        return None
    folders = {str(v.const_value.base_dir) for g in model.graphs()
               for v in g.initializers.values() if isinstance(v.const_value, ir.ExternalTensor)}
    return folders.pop() if len(folders) == 1 else None


def to_onnx_graph_bytes(model: ir.Model, max_ir_version: int | None = None,
                        max_opset: int | None = None) -> bytes:
    """The model as serialized ONNX whose external tensors keep their references (location
    relative to ``mapped_weights_folder``, offset, length): the engine reads the bytes there."""
    return _proto(model, max_ir_version, max_opset).SerializeToString()


def _proto(model: ir.Model, max_ir_version: int | None, max_opset: int | None):
    return _stamped(ir.serde.serialize_model(model), max_ir_version, max_opset)


def _stamped(proto: Any, max_ir_version: int | None, max_opset: int | None) -> Any:
    """``proto`` (changed in place) with its opset and IR version lowered to the limits."""
    if max_opset is not None:
        restamp_opset(proto, max_opset)
    if max_ir_version is not None and proto.ir_version > max_ir_version:
        proto.ir_version = max_ir_version
    return proto


def value_spec(value: ir.Value) -> TensorSpec:
    dtype = value.dtype.numpy() if value.dtype is not None else np.dtype("float32")
    return TensorSpec(value.name or "", np.dtype(dtype), value_dims(value))


def signature(model: ir.Model | StoredGraph) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the graph; initializers are not inputs."""
    if isinstance(model, StoredGraph):
        return model.signature()
    inputs = [value_spec(v) for v in model.graph.inputs
              if v.name not in model.graph.initializers]
    outputs = [value_spec(v) for v in model.graph.outputs]
    return inputs, outputs
