"""Weights out of the Python heap while an engine compiles: the optimized graph's initializers
are written once to a temporary external-data file and the IR's tensors point into it (read
through a memory map on demand).

Engines that read ONNX files (onnxruntime, OpenVINO) then open that file themselves, so the
process never holds the IR's copy, a protobuf copy and a serialized copy of the weights next to
the engine's own; the native engine reads them through the map. ``Compiled.save`` and
``to_onnx_bytes`` read them back when asked. The folder is removed when the model is collected.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref

import onnx_ir as ir

from kiln.compiler.graph_index import all_graphs
from kiln.compiler.onnx_stream import ASIDE_TENSOR_BYTES, WEIGHTS_DIR

#: Models with fewer bytes of weights than this keep them in memory (a file costs more).
MIN_OFFLOAD_BYTES = 1 << 20
#: Tensors up to this size stay inline: shapes, scales and other small constants.
INLINE_TENSOR_BYTES = 1024
WEIGHTS_FILE = "weights.bin"
#: Beside the weights the parse set aside (``kiln.compiler.onnx_stream``): what passes made.
REST_FILE = "computed.bin"


def weight_bytes(model: ir.Model) -> int:
    """Bytes held by the initializers of the main graph."""
    return sum(tensor_nbytes(v.const_value) for v in model.graph.initializers.values()
               if v.const_value is not None)


def tensor_nbytes(tensor: ir.TensorProtocol) -> int:
    """``tensor.nbytes``; for a tensor viewing its protobuf, from the proto's dims (onnx_ir
    builds a Shape at each ask: a walk of YOLOv8n's 199 initializers took ~0.8 ms)."""
    if isinstance(tensor, ir.TensorProtoTensor):
        return math.ceil(tensor.dtype.itemsize * math.prod(tensor.raw.dims))
    return tensor.nbytes


def offload_weights(model: ir.Model) -> bool:
    """Move ``model``'s large initializers to a temporary external-data file, in place.
    Returns whether it did (small models are left as they are; a model whose weights the
    parse set aside gets only those computed since in a second file of that folder);
    when it did, call ``kiln.runtime.release.release_parsed`` next to free what it replaced."""
    if WEIGHTS_DIR in model.meta:
        return _offload_rest(model, model.meta[WEIGHTS_DIR])
    if weight_bytes(model) < MIN_OFFLOAD_BYTES:
        # a small model whose tensors map a .kiln artifact: into memory, which is cheaper
        # than a file, and an engine reading ONNX bytes needs them there
        if any(isinstance(v.const_value, ir.ExternalTensor)
               for g in all_graphs(model) for v in g.initializers.values()):
            ir.external_data.load_to_model(model)
        return False
    folder = tempfile.mkdtemp(prefix="kiln-weights-")
    weakref.finalize(model, shutil.rmtree, folder, True)
    # aligned, so the native engine reads them in place; few bytes in flight while writing
    ir.external_data.unload_from_model(model, folder, WEIGHTS_FILE,
                                       size_threshold_bytes=INLINE_TENSOR_BYTES,
                                       alignment=64, align_threshold=INLINE_TENSOR_BYTES,
                                       max_in_flight_bytes=64 << 20)
    model.meta[WEIGHTS_DIR] = folder
    # The tensors replaced here (and graphs the passes left behind) sit in reference cycles
    # of IR nodes and values: the caller collects them with ``release_parsed`` (one full
    # collection, which costs as much as the live heap is large), before the engine
    # allocates its own copy.
    return True


def _offload_rest(model: ir.Model, folder: str) -> bool:
    """The large initializers still in memory (what passes computed from weights the parse
    set aside, e.g. folded BatchNorms), to a file of their own in ``folder``; whether any.
    Large as the parse counts it (``ASIDE_TENSOR_BYTES``): the few KB it kept in memory are
    not worth a second file and a collection (8 ms of YOLOv8n's 110 ms open, for 6 KB)."""
    values = [v for g in all_graphs(model) for v in g.initializers.values()
              if v.const_value is not None and not isinstance(v.const_value, ir.ExternalTensor)
              and tensor_nbytes(v.const_value) > ASIDE_TENSOR_BYTES]
    if not values:
        return False
    moved = ir.external_data.convert_tensors_to_external(
        [v.const_value for v in values], folder, REST_FILE, alignment=64,
        align_threshold=INLINE_TENSOR_BYTES, max_in_flight_bytes=64 << 20)
    for value, tensor in zip(values, moved, strict=True):
        value.const_value = tensor
    return True


def release_maps(model: ir.Model) -> None:
    """Unmap the external tensors an engine read through the IR: the engine holds its own copy
    now, and a mapped page counts in the process's RSS until it is unmapped."""
    for value in model.graph.initializers.values():
        if isinstance(value.const_value, ir.ExternalTensor):
            try:
                value.const_value.release()
            except BufferError:  # the engine kept views into the map: they are its weights
                pass
