"""Raise the default-domain opset so fused standard ops exist (LayerNormalization needs 17,
Gelu 20, Attention 23). onnxscript's version converter does the work, falling back to onnx's
C++ converter for the adapters it lacks (e.g. ReduceMean's axes attribute becoming an input).

The pass only runs on graphs that hold what the transformer fusions look for, so a CNN's
opset is left as it was.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import onnx_ir as ir
from onnxscript import version_converter

from kiln.compiler.passes._util import opset
from kiln.compiler.passes.rule import CountingPass


def looks_like_transformer(model: ir.Model) -> bool:
    """A ReduceMean, an Erf, or a Softmax fed by a MatMul of two computed tensors."""
    for node in model.graph:
        if node.op_type in ("ReduceMean", "Erf"):
            return True
        if node.op_type == "Softmax":
            if _fed_by_activation_matmul(node):
                return True
    return False


def _fed_by_activation_matmul(node: ir.Node, depth: int = 3) -> bool:
    cur = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
    for _ in range(depth):
        if cur is None:
            return False
        if cur.op_type == "MatMul":
            return all(v is not None and v.const_value is None for v in cur.inputs)
        cur = cur.inputs[0].producer() if cur.inputs and cur.inputs[0] is not None else None
    return False


class UpgradeOpsetPass(CountingPass):
    """Convert the model to default-domain opset ``version`` when ``applies(model)``."""

    def __init__(self, version: int,
                 applies: Callable[[ir.Model], bool] = looks_like_transformer,
                 not_applying: str = "no transformer pattern to fuse") -> None:
        super().__init__()
        self.version = version
        self.applies = applies
        self.not_applying = not_applying  # the rejection counted when ``applies`` says no

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fired = Counter()
        self.rejected = Counter()
        current = opset(model.graph)
        if current >= self.version:
            return ir.passes.PassResult(model, modified=False)
        if not self.applies(model):
            self.rejected[self.not_applying] += 1
            return ir.passes.PassResult(model, modified=False)
        log = logging.getLogger("onnxscript")
        level = log.level
        log.setLevel(logging.ERROR)  # it logs a warning each time it falls back to onnx's C++
        # A converter failure must leave the model as it was (and unfused). onnx's C++
        # converter, which onnxscript falls back to below its own adapters' range, converts a
        # serialized copy and swaps the graph in only when it succeeded; onnxscript's adapters
        # rewrite in place, so they convert a copy (sharing the tensors).
        original = model.graph
        work = model if _converts_a_copy(model, self.version) else model.clone()
        try:
            version_converter.convert_version(work, self.version, fallback=True)
        except Exception as exc:  # the converters raise many types; the fusion is optional
            model.graph = original
            self.rejected[f"opset {current} -> {self.version} failed: {exc}"[:200]] += 1
            return ir.passes.PassResult(model, modified=False)
        finally:
            log.setLevel(level)
        converted = work.graph
        model.graph = original
        if opset(converted) != self.version:
            self.rejected[f"opset {current} -> {self.version}: converter left {opset(converted)}"
                          ] += 1
            return ir.passes.PassResult(model, modified=False)
        _release_weights(original)
        model.graph = converted
        if work is not model:
            model.ir_version = work.ir_version
            model.functions.clear()
            model.functions.update(work.functions)
        self.fired[f"opset {current} -> {self.version}"] += 1
        return ir.passes.PassResult(model, modified=True)


def _converts_a_copy(model: ir.Model, version: int) -> bool:
    """Whether onnxscript's converter takes ``model`` to ``version`` through onnx's C++
    converter, which works on a serialized copy and leaves the model untouched on failure."""
    from onnxscript.version_converter import _version_converter

    return not _version_converter.version_supported(model, version)


def _release_weights(graph: ir.Graph) -> None:
    """Drop the replaced graph's references to the weights: a rewrite rule that still holds
    one of its nodes would otherwise keep every weight (and the protobuf it was parsed from)
    alive after later steps replaced them in the new graph."""
    for value in graph.initializers.values():
        value.const_value = None
    graph.initializers.clear()
    for node in graph:
        for value in (*node.inputs, *node.outputs):
            if value is not None:
                value.const_value = None
