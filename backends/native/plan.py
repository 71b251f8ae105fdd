"""Lowering an IR graph (or a run of its nodes) to a flat native plan.

A plan is what the C++ executor needs and nothing more: every value gets an integer id;
constants (initializers, ``Constant`` nodes and nodes whose inputs are all constant, which
are evaluated once here) become plan constants; every other node becomes one kernel call
with its attributes resolved to Python scalars, lists and arrays.

The memory plan puts every intermediate whose size is static into one arena. Each value
lives from the node that defines it to its last use; two values may share bytes only when
their lifetimes do not overlap. Placement is greedy by decreasing size at the lowest offset
that fits (offsets aligned to 64 bytes). The report compares the arena with the sum of all
intermediates, i.e. what a plan without reuse would allocate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from kiln.errors import ModelError, ResourceError

ALIGN = 64


def contiguous(arr: object) -> np.ndarray:
    """A C-contiguous array that keeps 0-d arrays 0-d (np.ascontiguousarray would not)."""
    return np.asarray(arr, order="C")


@dataclasses.dataclass
class PlanNode:
    """One kernel call: what the C++ executor's ``Plan.add_node`` receives."""

    name: str
    domain: str
    op: str
    opset: int
    inputs: list[int]
    outputs: list[int]
    attrs: dict[str, Any]


@dataclasses.dataclass
class MemoryPlan:
    offsets: list[int]          # arena offset per value id, -1 when not in the arena
    planned_bytes: list[int]    # bytes reserved per value id
    arena_bytes: int            # size of the one arena
    intermediate_bytes: int     # sum of every planned intermediate (no reuse)
    frees: list[list[int]]      # per node: values whose last use it is
    dynamic_values: int         # intermediates without a static size (heap at run time)
    view_of: dict[int, int] = dataclasses.field(default_factory=dict)  # view -> its host block


@dataclasses.dataclass
class LoweredPlan:
    value_names: list[str]
    constants: dict[int, np.ndarray]
    nodes: list[PlanNode]
    inputs: list[int]
    outputs: list[int]
    memory: MemoryPlan
    folded: int = 0             # nodes evaluated at compile time
    #: constant id -> the IR value it was read from (an initializer), so the plan's builder
    #: can unmap an external tensor once the engine has packed it
    sources: dict[int, ir.Value] = dataclasses.field(default_factory=dict)


def node_opset(node: ir.Node, opsets: dict[str, int]) -> int:
    if node.version is not None:
        return int(node.version)
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return int(opsets.get(domain, 0))


#: kiln ops the executor runs with another of its kernels: (domain, op) -> the kernel's
#: (domain, op) and how attribute names change
EXECUTOR_OPS: dict[tuple[str, str], tuple[str, str, dict[str, str]]] = {
    ("kiln", "FusedBatchNorm"): ("", "BatchNormalization", {"activation": "kiln_activation"}),
}


def executor_op(node: ir.Node, attrs: dict[str, Any], opsets: dict[str, int]
                ) -> tuple[str, str, int]:
    """(domain, op, opset) of the executor kernel running ``node``; renames ``attrs`` in
    place for a kiln op the executor runs with another kernel."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    mapped = EXECUTOR_OPS.get((domain, node.op_type))
    if mapped is None:
        return domain, node.op_type, node_opset(node, opsets)
    domain, op, renames = mapped
    for old, new in renames.items():
        if old in attrs:
            attrs[new] = attrs.pop(old)
    return domain, op, int(opsets.get(domain, 0))


def attribute_value(node: ir.Node, attr: ir.Attr) -> Any:
    """The attribute as the C++ side reads it; raises ModelError for unsupported kinds."""
    kind = attr.type
    value = attr.value
    if kind == ir.AttributeType.INT:
        return int(value)
    if kind == ir.AttributeType.FLOAT:
        return float(value)
    if kind == ir.AttributeType.STRING:
        return value.decode() if isinstance(value, bytes) else str(value)
    if kind == ir.AttributeType.INTS:
        return [int(v) for v in value]
    if kind == ir.AttributeType.FLOATS:
        return [float(v) for v in value]
    if kind == ir.AttributeType.STRINGS:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
    if kind == ir.AttributeType.TENSOR:
        return contiguous(value.numpy())
    raise ModelError(f"node '{node.name}' ({node.op_type}): attribute '{attr.name}' of kind "
                     f"{kind.name} is not supported by the native backend")


def constant_node_value(node: ir.Node) -> np.ndarray | None:
    """The value of an ONNX ``Constant`` node, or None when it holds something else."""
    for key, attr in node.attributes.items():
        if key == "value":
            return contiguous(attr.value.numpy())
        if key == "value_float":
            return np.array(attr.value, dtype=np.float32)
        if key == "value_floats":
            return np.array(list(attr.value), dtype=np.float32)
        if key == "value_int":
            return np.array(attr.value, dtype=np.int64)
        if key == "value_ints":
            return np.array(list(attr.value), dtype=np.int64)
    return None


def static_bytes(value: ir.Value) -> int | None:
    """Bytes of ``value`` when its dtype and every dim are known."""
    if value.dtype is None or value.shape is None:
        return None
    try:
        itemsize = np.dtype(value.dtype.numpy()).itemsize
    except Exception:
        return None
    count = 1
    for dim in value.shape:
        if not isinstance(dim, int):
            return None
        count *= dim
    return count * itemsize


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(n_values: int, n_nodes: int, defs: dict[int, int], last_use: dict[int, int],
                sizes: dict[int, int | None], pinned: set[int],
                views: Sequence[tuple[int, int, int]] = ()) -> MemoryPlan:
    """Greedy liveness-based placement of intermediates in one arena.

    defs: value -> index of its defining node; last_use: value -> index of its last consumer
    (values never consumed end where they are defined); pinned: values kept out of the arena
    (graph outputs, inputs, constants). views: (value, host, byte offset) in node order: the
    value lives inside the host's bytes (a Reshape's output on its input, a Concat's inputs
    in its output), so the op that makes one from the other finds it already in place. A
    host and its views are placed as one block, live from the first of them defined to the
    last of them read.
    """
    # every value -> (its group's root, byte offset inside the root)
    home: dict[int, tuple[int, int]] = {}
    members: dict[int, list[int]] = {}
    for value, host, at in views:
        if value in home or value in pinned or host in pinned:
            continue
        root, base = home.get(host, (host, 0))
        group = members.pop(value, [])  # a Concat input that was itself a host
        members.setdefault(root, []).extend([value, *group])
        for v in group:
            home[v] = (root, home[v][1] + base + at)
        home[value] = (root, base + at)
    offsets = [-1] * n_values
    planned = [0] * n_values
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    candidates = []
    dynamic = 0
    for v, start in defs.items():
        if v in pinned or v in home:
            continue
        size = sizes.get(v)
        if size is None:
            dynamic += 1
            continue
        if size == 0:
            continue
        group = [v, *members.get(v, [])]
        begin = min(defs.get(m, start) for m in group)
        end = max(last_use.get(m, defs.get(m, start)) for m in group)
        extent = max([size, *(home[m][1] + (sizes.get(m) or 0) for m in group[1:])])
        candidates.append((_align(extent), begin, end, v))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    arena = 0
    total = 0
    for size, start, end, v in candidates:
        total += size
        clashes = sorted((o, s) for o, s, b, e in placed if not (e < start or b > end))
        offset = 0
        for o, s in clashes:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, start, end))
        offsets[v] = offset
        planned[v] = size
        for m in members.get(v, []):
            offsets[m] = offset + home[m][1]
            planned[m] = sizes.get(m) or 0
        arena = max(arena, offset + size)
    frees: list[list[int]] = [[] for _ in range(n_nodes)]
    for v, end in last_use.items():
        if v not in pinned and 0 <= end < n_nodes:
            frees[end].append(v)
    view_of = {v: root for v, (root, _) in home.items() if offsets[root] >= 0}
    return MemoryPlan(offsets, planned, arena, total, frees, dynamic, view_of)


#: ops whose output is their first input's bytes under another shape
_SAME_BYTES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def in_place_views(sources: Sequence[Any], nodes: Sequence[PlanNode],
                   sizes: dict[int, int | None],
                   dims_of: Callable[[ir.Value], tuple[int, ...] | None],
                   last_read: dict[int, int]) -> list[tuple[int, int, int]]:
    """(value, host, byte offset) for the copies the memory plan can make free: a reshape's
    output on its input; each input of a Concat whose chunks are contiguous in the output
    (nothing but size-1 dims before the axis) at its chunk's offset, when that offset is
    64-byte aligned (producers then never share a cache line), the input appears once and
    the Concat is its last reader; each output of such a Split on its chunk of the input.
    Ops that read the input before the Concat find it in place (no op writes into its
    inputs), so a chain of Concats (DenseNet's blocks: each one's result read by the next
    layer, then by the next Concat) grows in one buffer without copies. A reader after the
    Concat would not be safe: a Concat that meets shapes other than the planned ones moves
    its inputs to their real slots, over the bytes such a reader still expects. last_read:
    value -> index of the last node reading it (the liveness plan_memory takes)."""
    views: list[tuple[int, int, int]] = []
    for k, (source, node) in enumerate(zip(sources, nodes)):
        if node.domain != "" or not node.inputs or node.outputs[0] < 0:
            continue
        out = node.outputs[0]
        if node.op in _SAME_BYTES and node.inputs[0] >= 0:
            if sizes.get(out) is not None and sizes.get(out) == sizes.get(node.inputs[0]):
                views.append((out, node.inputs[0], 0))
        elif node.op == "Concat" and len(set(node.inputs)) == len(node.inputs) >= 2:
            dims = dims_of(source.outputs[0])
            if not dims:
                continue
            axis = int(node.attrs.get("axis", 0)) % len(dims)
            if math.prod(dims[:axis]) != 1:
                continue
            at = 0
            for value, i in zip(source.inputs, node.inputs):
                size = sizes.get(i)
                if size is None or i < 0:
                    break
                if at % ALIGN == 0 and value is not None and last_read.get(i) == k:
                    views.append((i, out, at))
                at += size
        elif node.op == "Split" and node.inputs[0] >= 0:
            dims = dims_of(source.inputs[0])
            axis = int(node.attrs.get("axis", 0)) % len(dims) if dims else 0
            if not dims or math.prod(dims[:axis]) != 1:
                continue
            at = 0
            for i in node.outputs:
                size = sizes.get(i) if i >= 0 else None
                if size is None:
                    break  # an unused output's chunk size is not known here
                if at % ALIGN == 0:
                    views.append((i, node.inputs[0], at))
                at += size
    return views


class Lowering:
    """Builds a LoweredPlan from an ordered list of IR nodes.

    ``boundary_inputs`` are values computed elsewhere (graph inputs or an earlier segment);
    ``wanted_outputs`` are values the caller reads afterwards. ``evaluate`` (optional) runs a
    single node on constant inputs and returns its outputs, for compile-time folding.
    """

    def __init__(self, opsets: dict[str, int], limit_bytes: int,
                 shape_hints: dict[str, tuple[tuple[int, ...], int]] | None = None) -> None:
        self.opsets = opsets
        self.limit_bytes = limit_bytes
        self.shape_hints = shape_hints or {}

    def static_dims(self, value: ir.Value) -> tuple[int, ...] | None:
        """The value's dims when all are known: declared, or from shape inference."""
        dims = tuple(value.shape) if value.shape is not None else None
        if dims is not None and all(isinstance(d, int) for d in dims):
            return dims  # type: ignore[return-value]
        hint = self.shape_hints.get(value.name or "")
        return hint[0] if hint is not None else None

    def lower(self, nodes: Sequence[ir.Node], boundary_inputs: Sequence[ir.Value],
              wanted_outputs: Sequence[ir.Value], known_constants: dict[str, np.ndarray],
              evaluate: Any = None) -> LoweredPlan:
        ids: dict[str, int] = {}
        names: list[str] = []

        def vid(value: ir.Value) -> int:
            key = value.name or f"<anon {id(value)}>"
            if key not in ids:
                ids[key] = len(names)
                names.append(key)
            return ids[key]

        constants: dict[int, np.ndarray] = {}
        const_by_name = dict(known_constants)
        boundary = {v.name for v in boundary_inputs}
        input_ids = [vid(v) for v in boundary_inputs]
        plan_nodes: list[PlanNode] = []
        plan_sources: list[ir.Node] = []
        folded = 0

        def const_of(value: ir.Value | None) -> np.ndarray | None:
            if value is None:
                return None
            if value.name in boundary:
                return None
            if value.name in const_by_name:
                return const_by_name[value.name]
            if value.const_value is not None:
                arr = contiguous(value.const_value.numpy())
                const_by_name[value.name] = arr
                return arr
            return None

        for node in nodes:  # Constant nodes first: later nodes read them
            if node.domain in ("", "ai.onnx") and node.op_type == "Constant":
                val = constant_node_value(node)
                if val is None:
                    raise ModelError(f"node '{node.name}' (Constant): this kind of constant is "
                                     "not supported by the native backend")
                const_by_name[node.outputs[0].name] = val
        wanted = {v.name for v in wanted_outputs}
        for node in nodes:
            if node.domain in ("", "ai.onnx") and node.op_type == "Constant":
                continue  # read above
            # string lists are checked by support.py (LSTM's activations), and read in C++
            # only by the ai.onnx.ml kernels (tree node modes)
            attrs = {k: attribute_value(node, a) for k, a in node.attributes.items()
                     if a.type != ir.AttributeType.STRINGS or node.domain == "ai.onnx.ml"}
            domain, op, opset = executor_op(node, attrs, self.opsets)
            present = [v for v in node.inputs if v is not None]
            const_inputs = [const_of(v) for v in present]
            if (evaluate is not None and present and all(c is not None for c in const_inputs)
                    and op == node.op_type  # the evaluator knows nodes by their own op
                    and not any(o.name in wanted for o in node.outputs)):
                results = evaluate(node, attrs, [const_of(v) for v in node.inputs],
                                   node_opset(node, self.opsets))
                if results is not None:
                    for out, arr in zip(node.outputs, results):
                        if out is not None and out.name:
                            const_by_name[out.name] = arr
                    folded += 1
                    continue
            outputs = [-1 if v is None or (not v.uses() and v.name not in wanted)
                       and k > 0 else vid(v) for k, v in enumerate(node.outputs)]
            inputs = [-1 if v is None else vid(v) for v in node.inputs]
            plan_sources.append(node)
            plan_nodes.append(PlanNode(name=node.name or "", domain=domain, op=op, opset=opset,
                                       inputs=inputs, outputs=outputs, attrs=attrs))

        # Constants: everything a kept node reads that is not computed inside the plan.
        produced = {o for n in plan_nodes for o in n.outputs if o >= 0}
        sources: dict[int, ir.Value] = {}
        for node, pn in zip(plan_sources, plan_nodes):
            for value, i in zip(node.inputs, pn.inputs):
                if value is None or i in produced or i in input_ids or i in constants:
                    continue
                arr = const_of(value)
                if arr is None:
                    raise ModelError(f"node '{node.name}' ({node.op_type}): input "
                                     f"'{value.name}' is neither computed nor a constant")
                constants[i] = arr
                if value.const_value is not None:
                    sources[i] = value
        output_ids = []
        for v in wanted_outputs:
            i = vid(v)
            if i not in produced and i not in input_ids and i not in constants:
                arr = const_of(v)
                if arr is None:
                    raise ModelError(f"output '{v.name}' is never computed")
                constants[i] = arr
            output_ids.append(i)

        n_values = len(names)
        defs: dict[int, int] = {}
        last: dict[int, int] = {}
        sizes: dict[int, int | None] = {}
        for k, (node, pn) in enumerate(zip(plan_sources, plan_nodes)):
            for i in pn.inputs:
                if i >= 0:
                    last[i] = k
            for value, o in zip(node.outputs, pn.outputs):
                if o >= 0:
                    defs[o] = k
                    last.setdefault(o, k)
                    size = static_bytes(value)
                    hint = self.shape_hints.get(value.name or "")
                    sizes[o] = size if size is not None or hint is None else (
                        math.prod(hint[0]) * hint[1])
        pinned = set(output_ids) | set(input_ids) | set(constants)
        views = in_place_views(plan_sources, plan_nodes, sizes, self.static_dims, last)
        memory = plan_memory(n_values, len(plan_nodes), defs, last, sizes, pinned, views)
        return LoweredPlan(names, constants, plan_nodes, input_ids, output_ids, memory, folded,
                           sources)



def inferred_shapes(model: ir.Model) -> dict[str, tuple[tuple[int, ...], int]]:
    """Static dims and item size of values, from ONNX shape inference on a serialized copy.

    The IR is not touched; values whose shape stays symbolic are left out.
    """
    import onnx

    try:
        proto = ir.serde.serialize_model(model)
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:
        return {}
    shapes: dict[str, tuple[tuple[int, ...], int]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape") or not tensor_type.elem_type:
            continue
        dims = tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
        except Exception:
            continue
        shapes[info.name] = (tuple(d.dim_value for d in dims), itemsize)
    return shapes


def check_declared_dims(values: Iterable[ir.Value], limit_bytes: int) -> None:
    """Refuses graph inputs whose declared dims are negative or whose size is absurd."""
    for value in values:
        if value.shape is None:
            continue
        dims = list(value.shape)
        count = 1
        for dim in dims:
            if isinstance(dim, int):
                if dim < 0:
                    raise ModelError(f"input '{value.name}' declares a negative dim {dim} "
                                     f"in shape {dims}")
                count *= dim
        itemsize = 4
        if value.dtype is not None:
            try:
                itemsize = np.dtype(value.dtype.numpy()).itemsize
            except Exception:
                itemsize = 4
        if count * itemsize > limit_bytes:
            raise ResourceError(f"input '{value.name}' declares shape {dims} "
                                f"({count * itemsize} bytes), beyond the {limit_bytes}-byte "
                                "limit of the native backend")
