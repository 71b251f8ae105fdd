"""Memory a compiled model no longer needs, handed back once its weights moved to a file
(``kiln.runtime.weights.offload_weights``) or to the engine.

The IR's tensors view the protobuf they were parsed from; while any one of them does, the
whole protobuf, weights included, stays allocated. After the large weights were moved to a
file, ``release_parsed`` gives the small tensors their own bytes, drops values onnx_ir still
counts after they left the graph, collects the cycles and returns the freed pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections import Counter

import onnx_ir as ir

from kiln.compiler.onnx_stream import WEIGHTS_DIR
from kiln.runtime.weights import INLINE_TENSOR_BYTES


def release_parsed(model: ir.Model) -> None:
    """Let the protobuf ``model`` was parsed from go, once its large weights live elsewhere
    (an external-data file): see the module docstring. Nothing to do while they do not."""
    if WEIGHTS_DIR not in model.meta:
        return
    forget_removed_values(model)
    own_small_tensors(model)
    return_freed_memory()


def return_freed_memory() -> None:
    """Free what only reference cycles still hold (onnx_ir graphs are cyclic) and hand the
    C heap's free pages back to the system, so the engine builds on a smaller peak."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def forget_removed_values(model: ir.Model) -> None:
    """Drop the values a graph's input/output lists still count after they left them.

    onnx_ir counts each value's places in those lists and keeps a key at zero when one is
    removed (onnx's shape inference puts the initializers among the inputs for its call,
    then takes them out), so a weight a later pass replaced stays reachable from the graph,
    with the protobuf it views."""
    for graph in (model.graph, *model.graph.subgraphs()):
        for values in (graph.inputs, graph.outputs):
            counts = getattr(values, "_ref_counter", None)
            if isinstance(counts, Counter):
                for value in [v for v, n in counts.items() if n <= 0]:
                    del counts[value]


def own_small_tensors(model: ir.Model, limit: int = INLINE_TENSOR_BYTES) -> None:
    """Give tensors of at most ``limit`` bytes that view the protobuf the model was parsed
    from (initializers, Constant values, in every graph) their own copies. One such tensor,
    even a 4-byte epsilon, keeps the whole parsed protobuf, weights included, alive; with
    the large tensors moved to a file (``offload_weights``) the protobuf can then be freed."""
    for graph in (model.graph, *model.graph.subgraphs()):
        for value in graph.initializers.values():
            if _views_proto(value.const_value, limit):
                value.const_value = _owned(value.const_value)
        for node in graph:
            for name, attr in list(node.attributes.items()):
                if attr.type == ir.AttributeType.TENSOR and _views_proto(attr.value, limit):
                    node.attributes[name] = ir.AttrTensor(name, _owned(attr.value))
            for value in node.outputs:
                if _views_proto(value.const_value, limit):
                    value.const_value = _owned(value.const_value)


def _views_proto(tensor: object, limit: int) -> bool:
    return (isinstance(tensor, ir.TensorProtoTensor) and tensor.nbytes <= limit
            and tensor.dtype != ir.DataType.STRING)  # strings stay as parsed (rare, small)


def _owned(tensor: ir.TensorProtoTensor) -> ir.Tensor:
    return ir.Tensor(tensor.numpy().copy(), dtype=tensor.dtype, name=tensor.name,
                     doc_string=tensor.doc_string)
