"""Raise the default-domain opset so fused standard ops exist (LayerNormalization needs 17,
Gelu 20, Attention 23).

Most ops of an exported transformer mean the same at the newer opset: their schemas changed in
between only by taking new types (read from onnx's schemas: same inputs, outputs and
attribute defaults, each type constraint a superset) or as ``_COMPATIBLE_CHANGES`` lists
(an attribute or input whose default keeps the old meaning). A graph holding only such ops,
and ReduceMeans (whose ``axes`` attribute becomes an input at 18), is raised in place
(``raise_in_place``). Anything else goes to onnxscript's version converter, which falls back to
onnx's C++ converter below its own adapters' range: a serialized round trip of the whole graph,
60-80 ms of MiniLM-L6's compile where the in-place raise takes a few.

The pass only runs on graphs that hold what the transformer fusions look for, so a CNN's
opset is left as it was.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable

import numpy as np
import onnx
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
        if raise_in_place(model, self.version):
            self.fired[f"opset {current} -> {self.version}"] += 1
            return ir.passes.PassResult(model, modified=True)
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


#: Versions at which an op's schema changed only compatibly for a model written at an older
#: opset: new input types, or a new attribute or optional input whose default keeps the old
#: meaning. A node needs nothing to mean the same after such a change.
#   Shape 15 (start/end, default: the whole shape); Cast 19 (saturate: float8 only, which older
#   opsets lack); the rest new types (bfloat16, float8, int4, float4, optional)
_COMPATIBLE_CHANGES: dict[str, frozenset[int]] = {
    "Cast": frozenset({19, 21, 23}),
    "Constant": frozenset({19, 21, 23}),
    "ConstantOfShape": frozenset({20, 21, 23}),
    "Equal": frozenset({19}),
    "Flatten": frozenset({21, 23}),
    "Identity": frozenset({16, 19, 21, 23}),
    "Pow": frozenset({15}),
    "Reshape": frozenset({19, 21, 23}),
    "Shape": frozenset({15, 19, 21, 23}),
    "Size": frozenset({19, 21, 23}),
    "Squeeze": frozenset({21, 23}),
    "Transpose": frozenset({21, 23}),
    "Unsqueeze": frozenset({21, 23}),
    "Where": frozenset({16}),
}
#: ReduceMean 18 takes ``axes`` as an input instead of an attribute (same meaning).
_AXES_TO_INPUT = ("ReduceMean", 18)


def raise_in_place(model: ir.Model, version: int) -> bool:
    """Raise the default-domain opset of a graph without subgraphs or functions to
    ``version`` when every node means the same there: its schema changed in between only as
    ``_COMPATIBLE_CHANGES`` lists, or it is a ReduceMean whose ``axes`` become an input.
    Returns False, the model untouched, for anything else (the converter's work)."""
    graph = model.graph
    current = opset(graph)
    if model.functions or next(graph.subgraphs(), None) is not None or \
            version > onnx.defs.onnx_opset_version():
        return False
    reduce_means = []
    for node in graph:
        if node.domain not in ("", "ai.onnx"):
            continue
        changes = _schema_changes(node.op_type, current, version)
        if changes is None:
            return False
        if node.op_type == _AXES_TO_INPUT[0] and _AXES_TO_INPUT[1] in changes:
            changes -= {_AXES_TO_INPUT[1]}
            reduce_means.append(node)
        listed = _COMPATIBLE_CHANGES.get(node.op_type, frozenset())
        if not all(v in listed or _types_widened_only(node.op_type, v) for v in changes):
            return False
    taken = _value_names(graph) if reduce_means else set()
    for node in reduce_means:
        axes = node.attributes.pop("axes", None)
        if axes is not None:
            name = _unused_name(f"{node.name or 'ReduceMean'}_axes", taken)
            value = ir.Value(name=name, type=ir.TensorType(ir.DataType.INT64),
                             shape=ir.Shape([len(axes.as_ints())]),
                             const_value=ir.tensor(np.array(axes.as_ints(), np.int64),
                                                   name=name))
            graph.register_initializer(value)
            node.resize_inputs(2)
            node.replace_input_with(1, value)
    graph.opset_imports[""] = version
    for node in graph:
        if node.domain in ("", "ai.onnx") and node.version is not None:
            node.version = version
    return True


@functools.cache
def _schema_changes(op_type: str, current: int, version: int) -> frozenset[int] | None:
    """The opsets in (current, version] at which ``op_type``'s schema changed; None when
    onnx knows no schema for it."""
    try:
        at = {onnx.defs.get_schema(op_type, v, "").since_version
              for v in range(current, version + 1)}
    except onnx.defs.SchemaError:
        return None
    return frozenset(at - {onnx.defs.get_schema(op_type, current, "").since_version})


@functools.cache
def _types_widened_only(op_type: str, since: int) -> bool:
    """Whether ``op_type``'s schema at ``since`` differs from the one before it only by
    allowing more types: the same inputs, outputs and attributes (with the same defaults),
    and each type constraint allowing at least what it allowed before. A change of meaning
    under the same signature (Softmax 13's axis) shows as a changed default."""
    new = onnx.defs.get_schema(op_type, since, "")
    try:
        old = onnx.defs.get_schema(op_type, since - 1, "")
    except onnx.defs.SchemaError:
        return False

    def formals(params):
        return [(f.name, f.option, f.type_str) for f in params]

    def attributes(schema):
        return {name: (a.type, a.required, a.default_value.SerializeToString())
                for name, a in schema.attributes.items()}

    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in new.type_constraints}
    return (formals(old.inputs) == formals(new.inputs)
            and formals(old.outputs) == formals(new.outputs)
            and attributes(old) == attributes(new)
            and all(set(c.allowed_type_strs) <= allowed.get(c.type_param_str, set())
                    for c in old.type_constraints))


def _value_names(graph: ir.Graph) -> set[str]:
    names = {v.name for v in (*graph.inputs, *graph.initializers.values()) if v.name}
    names.update(v.name for node in graph for v in node.outputs if v.name)
    return names


def _unused_name(base: str, taken: set[str]) -> str:
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


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
