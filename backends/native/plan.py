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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from kiln.backends.native.int8_fusion import Int8Op, find_int8_ops
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


@dataclasses.dataclass
class LoweredPlan:
    value_names: list[str]
    constants: dict[int, np.ndarray]
    nodes: list[PlanNode]
    inputs: list[int]
    outputs: list[int]
    memory: MemoryPlan
    folded: int = 0             # nodes evaluated at compile time


def node_opset(node: ir.Node, opsets: dict[str, int]) -> int:
    if node.version is not None:
        return int(node.version)
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return int(opsets.get(domain, 0))


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
                sizes: dict[int, int | None], pinned: set[int]) -> MemoryPlan:
    """Greedy liveness-based placement of intermediates in one arena.

    defs: value -> index of its defining node; last_use: value -> index of its last consumer
    (values never consumed end where they are defined); pinned: values kept out of the arena
    (graph outputs, inputs, constants).
    """
    offsets = [-1] * n_values
    planned = [0] * n_values
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    candidates = []
    dynamic = 0
    for v, start in defs.items():
        if v in pinned:
            continue
        size = sizes.get(v)
        if size is None:
            dynamic += 1
            continue
        if size == 0:
            continue
        candidates.append((_align(size), start, last_use.get(v, start), v))
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
        arena = max(arena, offset + size)
    frees: list[list[int]] = [[] for _ in range(n_nodes)]
    for v, end in last_use.items():
        if v not in pinned and 0 <= end < n_nodes:
            frees[end].append(v)
    return MemoryPlan(offsets, planned, arena, total, frees, dynamic)


class Lowering:
    """Builds a LoweredPlan from an ordered list of IR nodes.

    ``boundary_inputs`` are values computed elsewhere (graph inputs or an earlier segment);
    ``wanted_outputs`` are values the caller reads afterwards. ``evaluate`` (optional) runs a
    single node on constant inputs and returns its outputs, for compile-time folding.
    """

    def __init__(self, opsets: dict[str, int], limit_bytes: int,
                 size_hints: dict[str, int] | None = None) -> None:
        self.opsets = opsets
        self.limit_bytes = limit_bytes
        self.size_hints = size_hints or {}

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
        plan_sources: list[ir.Node | _FusedSource] = []
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

        for node in nodes:  # Constant nodes first: the fusions below read them
            if node.domain in ("", "ai.onnx") and node.op_type == "Constant":
                val = constant_node_value(node)
                if val is None:
                    raise ModelError(f"node '{node.name}' (Constant): this kind of constant is "
                                     "not supported by the native backend")
                const_by_name[node.outputs[0].name] = val
        wanted = {v.name for v in wanted_outputs}
        prologues = _batch_norm_prologues(nodes, wanted, const_of)
        prologues.update(_scalar_affine_prologues(nodes, wanted, const_of, prologues))
        absorbed = {n for pro in prologues.values() for n in pro.absorbed}
        int8_ops, int8_absorbed = find_int8_ops(nodes, wanted, const_of)
        absorbed |= int8_absorbed
        fused_relu = _relu_after_batch_norm([n for n in nodes if n not in absorbed], wanted)
        synthetic: dict[int, np.ndarray] = {}  # constants the lowering made (prologue params)
        for node in nodes:
            if node in fused_relu.values() or node in absorbed:
                continue  # computed by the node it was folded into
            if node.domain in ("", "ai.onnx") and node.op_type == "Constant":
                continue  # read above
            attrs = {k: attribute_value(node, a) for k, a in node.attributes.items()}
            if node in int8_ops:
                plan_sources.append(self._lower_int8(int8_ops[node], attrs, vid, synthetic,
                                                     plan_nodes))
                continue
            present = [v for v in node.inputs if v is not None]
            const_inputs = [const_of(v) for v in present]
            if (evaluate is not None and present and all(c is not None for c in const_inputs)
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
            relu = fused_relu.get(node)
            if relu is not None:
                attrs["kiln_activation"] = "Relu"
                outputs[0] = vid(relu.outputs[0])
            inputs = [-1 if v is None else vid(v) for v in node.inputs]
            pro = prologues.get(node)
            if pro is not None:
                # The conv reads the affine's input; scale/shift go in as inputs 4 and 5.
                attrs["kiln_prologue"] = "affine_relu" if pro.relu else "affine"
                inputs = (inputs + [-1] * 4)[:4]
                inputs[0] = vid(pro.first.inputs[0])
                for suffix, arr in (("scale", pro.scale), ("shift", pro.shift)):
                    key = vid(ir.Value(name=_synthetic_name(pro.first, f"prologue_{suffix}")))
                    synthetic[key] = arr
                    inputs.append(key)
            plan_sources.append(node)
            plan_nodes.append(PlanNode(
                name=node.name or "", domain="" if node.domain == "ai.onnx" else node.domain,
                op=node.op_type, opset=node_opset(node, self.opsets), inputs=inputs,
                outputs=outputs, attrs=attrs))

        # Constants: everything a kept node reads that is not computed inside the plan.
        constants.update(synthetic)
        produced = {o for n in plan_nodes for o in n.outputs if o >= 0}
        for node, pn in zip(plan_sources, plan_nodes):
            for value, i in zip(node.inputs, pn.inputs):
                if value is None or i in produced or i in input_ids or i in constants:
                    continue
                arr = const_of(value)
                if arr is None:
                    raise ModelError(f"node '{node.name}' ({node.op_type}): input "
                                     f"'{value.name}' is neither computed nor a constant")
                constants[i] = arr
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
                    sizes[o] = size if size is not None else self.size_hints.get(value.name)
        pinned = set(output_ids) | set(input_ids) | set(constants)
        memory = plan_memory(n_values, len(plan_nodes), defs, last, sizes, pinned)
        return LoweredPlan(names, constants, plan_nodes, input_ids, output_ids, memory, folded)


    def _lower_int8(self, op: Int8Op, attrs: dict[str, Any], vid: Any,
                    synthetic: dict[int, np.ndarray], plan_nodes: list[PlanNode]
                    ) -> _FusedSource:
        """Appends the kiln::QGemm / QConv / QMaxPool node for ``op`` and returns what stands
        for its source node: its graph-value inputs and its output."""
        node = op.anchor
        inputs: list[int] = []
        sources: list[ir.Value | None] = []
        for k, item in enumerate(op.inputs):
            if item is None:
                inputs.append(-1)
                sources.append(None)
            elif isinstance(item, np.ndarray):
                key = vid(ir.Value(name=_synthetic_name(node, f"int8_{k}")))
                synthetic[key] = contiguous(item)
                inputs.append(key)
                sources.append(None)
            else:
                inputs.append(vid(item))
                sources.append(item)
        while inputs and inputs[-1] == -1:
            inputs.pop()
            sources.pop()
        fused_attrs = (attrs if op.op in ("QConv", "QMaxPool") else {}) | op.attrs
        plan_nodes.append(PlanNode(name=node.name or "", domain="kiln", op=op.op, opset=1,
                                   inputs=inputs, outputs=[vid(op.output)], attrs=fused_attrs))
        return _FusedSource(sources, [op.output], node.name or "", f"kiln::{op.op}")


def _synthetic_name(node: ir.Node, what: str) -> str:
    """A value name for a constant the lowering makes for ``node``: unique even when the
    graph leaves its nodes unnamed (values are keyed by name)."""
    return f"{node.name or '<unnamed>'}#{id(node)}::{what}"


@dataclasses.dataclass
class _FusedSource:
    """Stands for a fused node where the lowering reads a node's inputs and outputs."""

    inputs: list[ir.Value | None]
    outputs: list[ir.Value]
    name: str
    op_type: str


@dataclasses.dataclass
class _Prologue:
    """A per-channel affine (+ Relu) folded into the conv that reads it: an inference
    BatchNormalization, or a Mul / Add by scalars (learnable affine blocks)."""

    first: ir.Node              # the conv reads this node's first input instead
    absorbed: list[ir.Node]     # nodes no longer lowered on their own
    relu: bool
    scale: np.ndarray
    shift: np.ndarray


def _sole_reader(value: ir.Value | None, wanted: set[str], present: set[ir.Node]
                 ) -> ir.Node | None:
    """The one node that reads ``value`` as its first input, when nothing else reads it."""
    if value is None or value.name in wanted or value.is_graph_output():
        return None
    uses = list(value.uses())
    if len(uses) != 1 or uses[0].idx != 0 or uses[0].node not in present:
        return None
    return uses[0].node


def _is_conv(node: ir.Node) -> bool:
    return (node.domain, node.op_type) in (("", "Conv"), ("ai.onnx", "Conv"), ("kiln", "FusedConv"))


def _conv_channels(node: ir.Node, const_of: Any) -> int | None:
    """Input channels of a 2-D Conv / FusedConv with a constant float32 weight."""
    w = const_of(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 4 or w.dtype != np.float32:
        return None
    group = node.attributes.get("group")
    return int(w.shape[1]) * (group.as_int() if group is not None else 1)


def _depthwise_conv(node: ir.Node, const_of: Any, channels: int) -> bool:
    """A 2-D conv with one group per channel and one output per group (constant weight):
    the native depthwise path, which applies a channel prologue while padding."""
    if not _is_conv(node) or _conv_channels(node, const_of) != channels:
        return False
    group = node.attributes.get("group")
    w = const_of(node.inputs[1])
    return group is not None and group.as_int() == channels and w.shape[:2] == (channels, 1)


def _pointwise_conv(node: ir.Node, const_of: Any, channels: int) -> bool:
    """A Conv / kiln FusedConv with a constant [K, channels, 1, 1] weight, stride 1, no padding
    and one group: the native 1x1 GEMM path, which applies a channel prologue while packing."""
    if (node.domain, node.op_type) not in (("", "Conv"), ("ai.onnx", "Conv"),
                                           ("kiln", "FusedConv")):
        return False
    w = const_of(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 4 or w.shape[1:] != (channels, 1, 1) or w.dtype != np.float32:
        return False
    attrs = node.attributes

    def ints(name: str) -> list[int]:
        a = attrs.get(name)
        return list(a.as_ints()) if a is not None else []

    pad = attrs.get("auto_pad")
    return (all(v == 1 for v in ints("strides")) and all(v == 0 for v in ints("pads"))
            and (attrs.get("group") is None or attrs["group"].as_int() == 1)
            and (pad is None or pad.as_string() in ("NOTSET", "VALID")))


def _batch_norm_prologues(nodes: Sequence[ir.Node], wanted: set[str], const_of: Any
                          ) -> dict[ir.Node, _Prologue]:
    """Conv -> _Prologue for each BatchNormalization [-> Relu] -> 1x1 conv chain whose
    normalized value nobody else reads (DenseNet's BN-ReLU-Conv layers): the conv then
    reads the BatchNormalization's input once, normalizing while it packs it."""
    present = set(nodes)
    found: dict[ir.Node, _Prologue] = {}
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type != "BatchNormalization":
            continue
        mode = node.attributes.get("training_mode")
        if mode is not None and mode.as_int() != 0 or len(node.inputs) != 5:
            continue
        if node.inputs[0] is None or const_of(node.inputs[0]) is not None:
            continue
        params = [const_of(v) for v in node.inputs[1:]]
        if any(p is None or p.ndim != 1 or p.dtype != np.float32 for p in params):
            continue
        if any(o is not None and o.uses() for o in node.outputs[1:]):
            continue
        reader = _sole_reader(node.outputs[0], wanted, present)
        relu = None
        if reader is not None and reader.op_type == "Relu" and reader.domain in ("", "ai.onnx"):
            relu, reader = reader, _sole_reader(reader.outputs[0], wanted, present)
        channels = params[0].shape[0]
        if reader is None or reader in found or not (
                _pointwise_conv(reader, const_of, channels)
                or _depthwise_conv(reader, const_of, channels)):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        eps = node.attributes["epsilon"].as_float() if "epsilon" in node.attributes else 1e-5
        scale = gamma / np.sqrt(var + eps)
        found[reader] = _Prologue(node, [n for n in (node, relu) if n], relu is not None,
                                  scale.astype(np.float32),
                                  (beta - mean * scale).astype(np.float32))
    return found


def _scalar_operand(node: ir.Node, const_of: Any) -> float | None:
    """The constant one-element second input of a binary node whose first is computed."""
    if len(node.inputs) != 2 or node.inputs[0] is None or const_of(node.inputs[0]) is not None:
        return None
    k = const_of(node.inputs[1])
    if k is None or k.size != 1 or k.dtype != np.float32:
        return None
    return float(k.reshape(-1)[0])


def _scalar_affine_prologues(nodes: Sequence[ir.Node], wanted: set[str], const_of: Any,
                             taken: dict[ir.Node, _Prologue]) -> dict[ir.Node, _Prologue]:
    """Conv -> _Prologue for each ``Mul(x, s) [-> Add(., t)]`` or ``Add(x, t)`` chain read
    only by a 1x1 or depthwise conv with constant weights: y = s * x + t on every channel,
    applied while the conv packs (1x1) or pads (depthwise) its input."""
    present = set(nodes)
    found: dict[ir.Node, _Prologue] = {}
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Mul", "Add"):
            continue
        k = _scalar_operand(node, const_of)
        if k is None or node.outputs[0].dtype not in (None, ir.DataType.FLOAT):
            continue
        scale, shift, chain = (k, 0.0, [node]) if node.op_type == "Mul" else (1.0, k, [node])
        reader = _sole_reader(node.outputs[0], wanted, present)
        if reader is not None and node.op_type == "Mul" and reader.op_type == "Add" \
                and reader.domain in ("", "ai.onnx"):
            t = _scalar_operand(reader, const_of)
            if t is not None:
                shift, chain = t, [node, reader]
                reader = _sole_reader(reader.outputs[0], wanted, present)
        if reader is None or reader in found or reader in taken or not _is_conv(reader):
            continue
        channels = _conv_channels(reader, const_of)
        if channels is None or not (_pointwise_conv(reader, const_of, channels)
                                    or _depthwise_conv(reader, const_of, channels)):
            continue
        found[reader] = _Prologue(node, chain, False, np.full(channels, scale, np.float32),
                                  np.full(channels, shift, np.float32))
    return found


def _relu_after_batch_norm(nodes: Sequence[ir.Node], wanted: set[str]) -> dict[ir.Node, ir.Node]:
    """BatchNormalization -> Relu pairs the executor runs as one pass: the Relu is the only
    reader of the normalized value, nobody else wants that value, and its input is computed
    (not a constant that compile-time folding would evaluate)."""
    present = set(nodes)
    pairs: dict[ir.Node, ir.Node] = {}
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type != "BatchNormalization":
            continue
        out = node.outputs[0]
        x = node.inputs[0] if node.inputs else None
        if (out is None or out.name in wanted or out.is_graph_output() or x is None
                or x.const_value is not None or len(node.outputs) > 1 and any(
                    o is not None and o.uses() for o in node.outputs[1:])):
            continue
        users = [u.node for u in out.uses()]
        if len(users) == 1 and users[0] in present and users[0].op_type == "Relu" \
                and users[0].domain in ("", "ai.onnx"):
            pairs[node] = users[0]
    return pairs


def inferred_sizes(model: ir.Model) -> dict[str, int]:
    """Static byte sizes of values, from ONNX shape inference on a serialized copy.

    The IR is not touched; values whose shape stays symbolic are left out.
    """
    import onnx

    try:
        proto = ir.serde.serialize_model(model)
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:
        return {}
    sizes: dict[str, int] = {}
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
        count = 1
        for d in dims:
            count *= d.dim_value
        sizes[info.name] = count * itemsize
    return sizes


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
