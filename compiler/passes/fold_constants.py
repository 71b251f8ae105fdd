"""Constant folding, including ConstantOfShape and Shape-derived subgraphs.

Every node whose inputs are all constants is evaluated once at compile time and replaced by
an initializer holding its result. onnxscript's folder does the evaluation (and turns
``Shape`` of a statically shaped value into a constant, so shape arithmetic collapses);
kiln changes its policy in one way: ``ConstantOfShape`` with a constant shape *is* folded
(onnxscript keeps it by default to keep files small), because exporters such as the one that
wrote the onnx "light" models build whole weight tensors with it, and a backend can only fuse
a Conv whose weights are a real initializer.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass
from onnxscript.optimizer import _constant_folding

from kiln.compiler.graph_index import (
    all_graphs,
    graph_index,
    has_bodies,
    op_histogram,
    walk_nodes,
)
from kiln.compiler.passes.rule import CountingPass

#: Largest tensor (in elements) a fold may materialize: 64 Mi elements, 256 MB of fp32.
MAX_FOLDED_ELEMENTS = 1 << 26
#: ConstantOfShape builds weights the backend has to hold anyway (VGG-19's fc6 alone is
#: 103 Mi elements), so it may go up to 256 Mi elements (1 GiB of fp32).
MAX_CONSTANT_OF_SHAPE_ELEMENTS = 1 << 28


def _is_constant_of_shape(node: ir.Node) -> bool:
    return node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx")


def _only_constant_of_shape(node: ir.Node) -> bool:
    return _is_constant_of_shape(node)


def _may_fold_large(model: ir.Model) -> bool:
    """Whether some ConstantOfShape may fold to more than ``MAX_FOLDED_ELEMENTS``, so the
    walk with the larger limit is worth its cost (a walk of the whole graph: 3-8 ms on
    YOLOv8n and MiniLM-L6). Import's shape inference propagates constant shapes (data_prop):
    an output of known static size is known small; symbolic dims are sizes it could not
    resolve, in practice a graph input's, which no fold knows; unknown rank may be anything."""
    for node in walk_nodes(model.graph):
        if not _is_constant_of_shape(node):
            continue
        shape = node.outputs[0].shape
        if shape is None:
            return True
        if all(isinstance(dim, int) for dim in shape) and \
                math.prod(shape) > MAX_FOLDED_ELEMENTS:
            return True
    return False


def _policy(node: ir.Node) -> bool | None:
    if _is_constant_of_shape(node):
        return True
    return None  # onnxscript's default rules


def _cast_like_to_cast(model: ir.Model) -> bool:
    """CastLike with a known target type -> Cast, keeping ``saturate`` and ``round_mode``;
    whether any was rewritten.

    onnxscript's folder makes the same rewrite but drops those two attributes, which changes
    float8 results (saturate=0 overflows to inf/NaN rather than to the largest value).
    """
    rewritten = False
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.op_type != "CastLike" or node.domain not in ("", "ai.onnx"):
            continue
        if not any(k in node.attributes for k in ("saturate", "round_mode")):
            continue
        target = node.inputs[1].dtype if node.inputs[1] is not None else None
        if target is None or target == ir.DataType.UNDEFINED:
            continue
        attrs = [ir.AttrInt64("to", int(target))]
        attrs += [node.attributes[k] for k in ("saturate", "round_mode") if k in node.attributes]
        cast = ir.Node("", "Cast", [node.inputs[0]], attrs, num_outputs=1, name=node.name,
                       version=node.version)
        node.graph.insert_before(node, cast)
        old, new = node.outputs[0], cast.outputs[0]
        new.type, new.shape = old.type, old.shape
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        name, old.name = old.name, None
        new.name = name
        node.graph.remove(node, safe=True)
        rewritten = True
    return rewritten


class _FolderInferringWhatChanged(_constant_folding.FoldConstantsPass):
    """onnxscript's folder, whose per-node shape inference (most of the pass's time) skips a
    node that reads only values as import inferred them and whose outputs all have a type and
    a size or name for every dim: onnx's inference gives it what it gave at import, and the
    merge keeps what is known, so the call could change nothing. A value this pass made (a
    folded constant, a rewritten input) or whose shape its inference refined takes the
    inference to the nodes reading it."""

    def __init__(self, as_imported: set[ir.Value], **options: Any) -> None:
        super().__init__(**options)
        self.as_imported = as_imported

    def visit_node(self, node: ir.Node, root: ir.Graph | ir.Function) -> None:
        if not self._inert(node):
            super().visit_node(node, root)

    def _inert(self, node: ir.Node) -> bool:
        """Whether onnxscript's ``process_node`` would return None for ``node`` having changed
        nothing, and ``visit_node`` would find no subgraph to visit: the folder's own checks,
        in an order that stops at the first one deciding (YOLOv8n: 323 nodes, one fold
        2.5x faster). None of its inputs carries a symbolic value a partial evaluator
        recorded; no partial evaluator is registered for its op (``lookup_evaluators``, the
        folder's own registry); the inference would be skipped (``_do_inference``); and some
        input is not a constant, or is a graph input, so no full evaluation happens."""
        if has_bodies(node):
            return False
        inputs = node.inputs
        if not any(v is not None and (v.const_value is None or v.is_graph_input())
                   for v in inputs):
            return False  # a fold candidate
        symbolic = self._state.symbolic_value_map
        if symbolic and any(v in symbolic for v in inputs):
            return False
        domain = node.domain
        version = self._opset_imports.get(domain)
        registry = _constant_folding.registry
        if version is None or (domain, node.op_type) in registry.op_evaluators and \
                registry.lookup_evaluators(domain, node.op_type, version):
            return False
        return self._inference_skipped(node)

    def _inference_skipped(self, node: ir.Node) -> bool:
        return all(v is None or v in self.as_imported for v in node.inputs) and \
            all(_described(v) for v in node.outputs)

    def _do_inference(self, node: ir.Node) -> None:
        if self._inference_skipped(node):
            return
        before = [(v.type, v.shape) for v in node.outputs]
        super()._do_inference(node)
        for value, (type_, shape) in zip(node.outputs, before):
            if value.type != type_ or value.shape != shape:
                self.as_imported.discard(value)


class _LiftConstants(LiftConstantsToInitializersPass):
    """onnx_ir's lift of every Constant node to an initializer, taking a ``value`` attribute's
    tensor as it is: ``Attr.as_tensor`` checks it against a runtime-checkable Protocol, which
    costs ~0.15 ms a call on Python 3.11 (27 ms of MiniLM-L6's fold)."""

    def __init__(self) -> None:
        super().__init__(lift_all_constants=True, size_limit=0)

    def _constant_node_attribute_to_tensor(self, node: ir.Node, attr_name: str,
                                           attr_value: ir.Attr, initializer_name: str
                                           ) -> ir.TensorProtocol | None:
        if attr_name == "value" and attr_value.type == ir.AttributeType.TENSOR:
            return attr_value.value  # size_limit 0: lifted whatever its size
        return super()._constant_node_attribute_to_tensor(node, attr_name, attr_value,
                                                          initializer_name)


def _described(value: ir.Value) -> bool:
    """A type, and a size or a name for every dim."""
    shape = value.shape
    return value.type is not None and shape is not None and all(
        isinstance(dim, int) or dim.value is not None for dim in shape.dims)


def _all_values(model: ir.Model) -> set[ir.Value]:
    """Every value of the model's graphs and functions."""
    values: set[ir.Value] = set()
    # (the pipeline's index says whether there are subgraphs to walk for)
    graphs = all_graphs(model) if graph_index(model).subgraphs else [model.graph]
    graphs += model.functions.values()
    for graph in graphs:
        values.update(graph.inputs)
        if isinstance(graph, ir.Graph):
            values.update(graph.initializers.values())
        for node in graph:
            values.update(node.outputs)
    return values


class FoldConstantsPass(CountingPass):
    """Evaluate constant subgraphs; ``fired`` counts folded nodes per op type.

    It keeps shapes (``CountingPass``): a folded value carries its tensor's type and shape,
    and onnx's inference runs again on every node reading a value the pass changed."""

    keeps_shapes = True

    def __init__(self, input_size_limit: int = MAX_FOLDED_ELEMENTS,
                 output_size_limit: int = MAX_FOLDED_ELEMENTS) -> None:
        super().__init__()
        self.input_size_limit = input_size_limit
        self.output_size_limit = output_size_limit

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        # a node the reference evaluator cannot evaluate is simply left unfolded; onnxscript
        # logs each such attempt as a warning, which would reach the user's terminal
        log = logging.getLogger(_constant_folding.__name__)
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            return self._fold(model)
        finally:
            log.setLevel(level)

    def _fold(self, model: ir.Model) -> ir.passes.PassResult:
        before = graph_index(model).histogram
        casts = bool(before.get("CastLike")) and _cast_like_to_cast(model)  # else no walk
        as_imported = _all_values(model)
        weights_modified = False
        if model.functions or before.get("ConstantOfShape") and _may_fold_large(model):
            weights_modified = _constant_folding.FoldConstantsPass(
                shape_inference=False, input_size_limit=self.input_size_limit,
                output_size_limit=MAX_CONSTANT_OF_SHAPE_ELEMENTS,
                should_fold=_only_constant_of_shape)(model).modified
        folder = _FolderInferringWhatChanged(
            as_imported, shape_inference=True, input_size_limit=self.input_size_limit,
            output_size_limit=self.output_size_limit, should_fold=_policy)
        result = folder(model)
        # folded results come back as Constant nodes; make them initializers like the rest
        after = op_histogram(model) if casts or weights_modified or result.modified else before
        lifted = after.get("Constant", 0) and _LiftConstants()(model).modified
        if lifted:
            after = op_histogram(model)
        self.fired = Counter({f"fold {op}": n - after.get(op, 0)
                              for op, n in before.items()
                              if n > after.get(op, 0) and op != "Constant"})
        modified = bool(casts or weights_modified or result.modified or lifted)
        return ir.passes.PassResult(model, modified=modified)
