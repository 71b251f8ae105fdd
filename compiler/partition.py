"""Split a graph into backend-supported subgraphs, in the user's priority order.

The partitioner never imports a backend. It is handed a list of ``Capability`` values (a name
and a ``refusal(node) -> reason | None`` query, built on the runtime side from each backend's
``supports``/``refusal`` or its per-model ``capability``) and decides:

1. **Verdicts.** Every backend is asked about every node once. A node goes to the first
   backend in priority order that accepts it; a node nobody accepts is *unplaced* and
   ``PartitionPlan.require_complete`` names it with every backend's reason.
2. **Constants.** Nodes that read only initializers and other constant nodes (the model zoo
   builds its weights with ConstantOfShape) are *constant nodes*: they are grouped into
   constant partitions that the executor runs once when it builds the model, and their
   values become initializers of the partitions that read them. They never cross a boundary
   at run time.
3. **Grouping.** The other nodes are grown into partitions in topological order: a partition
   keeps absorbing ready nodes (all inputs already computed) of its backend until none is
   left, then the next partition starts with the backend of the earliest ready node. Each
   partition therefore reads only graph inputs and earlier partitions: the partitions form a
   chain with no cycle, and each one is as large as the data dependencies allow.
4. **Few boundaries.** A partition of fewer than ``min_partition_nodes`` nodes is handed to a
   neighbouring partition's backend when that backend accepts all of its nodes (the cost of a
   boundary, a copy and a call, outweighs a tiny subgraph); the plan records each such move.

A boundary tensor is a value one partition produces and a later one reads; its bytes per
inference count once per reading partition (the copies a device backend would make).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import onnx
import onnx_ir as ir

from kiln.compiler.graph_index import has_bodies, node_bodies
from kiln.compiler.passes._util import value_dims
from kiln.errors import ModelError, UnsupportedError

#: Ops whose result is not a function of their inputs; never folded into load-time constants.
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform",
                               "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})


class CapabilityLike(Protocol):
    """Anything with a ``name`` and a ``refusal(node)`` query (every kiln Backend is one)."""

    name: str

    def refusal(self, node: ir.Node) -> str | None: ...


@dataclasses.dataclass(frozen=True)
class Capability:
    """What the partitioner needs to know about one backend.

    name:    the backend's registry name.
    refusal: ``refusal(node)`` is None when the backend runs ``node``, else why it does not
             (op, dtype, attribute or dynamic shape). Must be a pure query.
    """

    name: str
    refusal: Callable[[ir.Node], str | None]


@dataclasses.dataclass
class Partition:
    """A subgraph one backend runs.

    inputs:   value names it reads from graph inputs or earlier partitions (never constants).
    outputs:  value names it produces for later partitions or the graph outputs.
    constant: True for a constant partition, run once when the executor is built.
    """

    index: int
    backend: str
    nodes: list[ir.Node]
    inputs: list[str]
    outputs: list[str]
    constant: bool = False


@dataclasses.dataclass(frozen=True)
class BoundaryTensor:
    """A value crossing from one partition to later ones."""

    name: str
    producer: int
    consumers: tuple[int, ...]
    dtype: str | None
    shape: tuple[int | str | None, ...] | None

    def nbytes(self, dims: Mapping[str, int] | None = None) -> int | None:
        """Bytes per crossing, symbolic dims bound by ``dims``; None when a dim is unknown."""
        if self.dtype is None or self.shape is None:
            return None
        count = 1
        for dim in self.shape:
            if isinstance(dim, int):
                count *= dim
            elif isinstance(dim, str) and dims and dim in dims:
                count *= int(dims[dim])
            else:
                return None
        return int(count * np.dtype(self.dtype).itemsize)


@dataclasses.dataclass(frozen=True)
class Merge:
    """Nodes moved from their first-choice backend to cut a boundary."""

    nodes: tuple[str, ...]
    moved_from: str
    moved_to: str
    reason: str


@dataclasses.dataclass
class PartitionPlan:
    """The partitioner's decision for one model and one backend priority list.

    labels:     every top-level node's unique display label (its name, or op_type + index).
    verdicts:   label -> {backend: None (runs it) or the refusal reason}.
    assignment: label -> backend chosen (absent for unplaced nodes).
    unplaced:   labels of nodes no backend runs.
    """

    backends: list[str]
    partitions: list[Partition]
    boundaries: list[BoundaryTensor]
    labels: dict[ir.Node, str]
    verdicts: dict[str, dict[str, str | None]]
    assignment: dict[str, str]
    unplaced: list[str]
    constant_nodes: list[str]
    merges: list[Merge]
    min_partition_nodes: int

    def label(self, node: ir.Node) -> str:
        return self.labels[node]

    def node_by_label(self) -> dict[str, ir.Node]:
        return {label: node for node, label in self.labels.items()}

    @property
    def runtime_partitions(self) -> list[Partition]:
        return [p for p in self.partitions if not p.constant]

    def boundary_bytes(self, dims: Mapping[str, int] | None = None) -> int | None:
        """Bytes crossing boundaries per inference; None if any boundary has an unknown size."""
        total = 0
        for tensor in self.boundaries:
            size = tensor.nbytes(dims)
            if size is None:
                return None
            total += size * len(tensor.consumers)
        return total

    def unplaced_message(self, strict: bool) -> str:
        nodes = self.node_by_label()
        lines = []
        for label in self.unplaced:
            node = nodes[label]
            reasons = "; ".join(f"{b}: {r}" for b, r in self.verdicts[label].items())
            lines.append(f"  node '{label}' ({node.domain or 'ai.onnx'}::{node.op_type}): "
                         f"{reasons}")
        mode = ("strict mode (fallback=None): " if strict else "")
        return (f"{mode}{len(self.unplaced)} node(s) cannot run on "
                f"{' or '.join(self.backends) or 'any backend'}:\n" + "\n".join(lines)
                + ("\nAdd a fallback backend (e.g. fallback='onnxruntime') or a backend that "
                   "runs these ops." if strict else ""))

    def require_complete(self, strict: bool = False) -> None:
        """Raise UnsupportedError listing every unplaced node with each backend's reason."""
        if self.unplaced:
            raise UnsupportedError(self.unplaced_message(strict))


def as_capability(item: CapabilityLike | Capability) -> Capability:
    """A Capability from anything with ``name`` and ``refusal``."""
    if isinstance(item, Capability):
        return item
    return Capability(item.name, item.refusal)


def node_labels(graph: ir.Graph) -> dict[ir.Node, str]:
    """Unique display labels: a node's own name when unique, else ``<op_type>_<index>``."""
    counts: dict[str, int] = {}
    for node in graph:
        if node.name:
            counts[node.name] = counts.get(node.name, 0) + 1
    labels: dict[ir.Node, str] = {}
    taken = {name for name, count in counts.items() if count == 1}
    for index, node in enumerate(graph):
        if node.name and counts[node.name] == 1:
            labels[node] = node.name
            continue
        label = f"{node.op_type}_{index}"
        while label in taken:
            label += "_"
        taken.add(label)
        labels[node] = label
    return labels


def reads(node: ir.Node, graph: ir.Graph) -> list[ir.Value]:
    """Values of ``graph`` that ``node`` reads, directly or from inside its subgraphs."""
    seen: dict[int, ir.Value] = {}
    for value in node.inputs:
        if value is not None:
            seen.setdefault(id(value), value)
    stack = list(node_bodies(node))
    while stack:
        sub = stack.pop()
        for inner in sub:
            for value in inner.inputs:
                if value is not None and value.graph is graph:
                    seen.setdefault(id(value), value)
            stack.extend(node_bodies(inner))
    return list(seen.values())


def _is_static(value: ir.Value) -> bool:
    return value.is_initializer() or value.const_value is not None and not value.is_graph_input()


def constant_nodes(graph: ir.Graph) -> set[ir.Node]:
    """Nodes computed from initializers and other constant nodes alone (no graph input)."""
    constant: set[ir.Node] = set()
    for node in graph:
        if node.op_type in _NONDETERMINISTIC or node.domain not in ("", "ai.onnx"):
            continue
        if has_bodies(node):
            continue
        ok = True
        for value in reads(node, graph):
            producer = value.producer()
            if value.is_graph_input() or (producer is None and not _is_static(value)):
                ok = False
            elif producer is not None and producer not in constant:
                ok = False
            if not ok:
                break
        if ok:
            constant.add(node)
    return constant


def _dtype_name(value: ir.Value) -> str | None:
    if value.dtype is None:
        return None
    try:
        return np.dtype(value.dtype.numpy()).name
    except Exception:  # dtypes numpy has no name for (e.g. float8) count as unknown size
        return None


def plan_partitions(model: ir.Model, capabilities: Sequence[CapabilityLike | Capability],
                    *, min_partition_nodes: int = 3) -> PartitionPlan:
    """Decide which backend runs which node; never raises for unsupported nodes.

    ``capabilities`` is the priority list. Call ``require_complete`` on the result to refuse
    a plan with unplaced nodes.
    """
    caps = [as_capability(c) for c in capabilities]
    names = [c.name for c in caps]
    if len(set(names)) != len(names):
        raise UnsupportedError(f"backend list {names} names a backend twice")
    graph = model.graph
    labels = node_labels(graph)
    verdicts: dict[str, dict[str, str | None]] = {}
    first_choice: dict[ir.Node, str] = {}
    unplaced: list[str] = []
    for node in graph:
        label = labels[node]
        verdicts[label] = {}
        for cap in caps:
            try:
                reason = cap.refusal(node)
            except Exception as exc:  # a capability query must not take the plan down
                reason = f"capability query failed: {type(exc).__name__}: {exc}"
            verdicts[label][cap.name] = reason
            if reason is None and node not in first_choice:
                first_choice[node] = cap.name
        if node not in first_choice:
            unplaced.append(label)
    constants = constant_nodes(graph)
    assignment = dict(first_choice)
    merges: list[Merge] = []
    moved: set[ir.Node] = set()
    for _ in range(64):
        partitions = _group(graph, assignment, constants)
        merge = _merge_small(partitions, graph, assignment, labels, verdicts,
                             min_partition_nodes, moved)
        if merge is None:
            break
        merges.append(merge)
    boundaries = _finish(partitions, graph)
    return PartitionPlan(
        backends=names, partitions=partitions, boundaries=boundaries, labels=labels,
        verdicts=verdicts, assignment={labels[n]: b for n, b in assignment.items()},
        unplaced=unplaced, constant_nodes=[labels[n] for n in graph if n in constants],
        merges=merges, min_partition_nodes=min_partition_nodes)


def _group(graph: ir.Graph, assignment: Mapping[ir.Node, str],
           constants: set[ir.Node]) -> list[Partition]:
    """Grow partitions in topological order (constant ones first, then the others)."""
    order = {node: i for i, node in enumerate(graph)}
    partitions: list[Partition] = []
    for constant in (True, False):
        members = [n for n in graph if n in assignment and (n in constants) == constant]
        member_set = set(members)
        deps: dict[ir.Node, set[ir.Node]] = {}
        users: dict[ir.Node, list[ir.Node]] = {n: [] for n in members}
        for node in members:
            deps[node] = set()
            for value in reads(node, graph):
                producer = value.producer()
                if producer in member_set and producer is not node:
                    deps[node].add(producer)
            for producer in deps[node]:
                users[producer].append(node)
        waiting = {n: len(deps[n]) for n in members}
        ready = {n for n in members if waiting[n] == 0}
        while ready:
            earliest = min(ready, key=order.__getitem__)
            backend = assignment[earliest]
            nodes: list[ir.Node] = []
            while True:
                batch = sorted((n for n in ready if assignment[n] == backend),
                               key=order.__getitem__)
                if not batch:
                    break
                for node in batch:
                    ready.discard(node)
                    nodes.append(node)
                    for user in users[node]:
                        waiting[user] -= 1
                        if waiting[user] == 0:
                            ready.add(user)
            nodes.sort(key=order.__getitem__)
            partitions.append(Partition(len(partitions), backend, nodes, [], [], constant))
    return partitions


def _neighbours(partitions: Sequence[Partition], graph: ir.Graph) -> dict[int, dict[int, int]]:
    """partition index -> {adjacent partition index: number of data edges}."""
    owner: dict[ir.Node | None, int] = {
        node: p.index for p in partitions for node in p.nodes}
    adjacent: dict[int, dict[int, int]] = {p.index: {} for p in partitions}
    for part in partitions:
        for node in part.nodes:
            for value in reads(node, graph):
                other = owner.get(value.producer())
                if other is not None and other != part.index:
                    adjacent[part.index][other] = adjacent[part.index].get(other, 0) + 1
                    adjacent[other][part.index] = adjacent[other].get(part.index, 0) + 1
    return adjacent


def _merge_small(partitions: Sequence[Partition], graph: ir.Graph,
                 assignment: dict[ir.Node, str], labels: Mapping[ir.Node, str],
                 verdicts: Mapping[str, Mapping[str, str | None]], min_nodes: int,
                 moved: set[ir.Node]) -> Merge | None:
    """Move the first small partition that a neighbour's backend can take; None if none."""
    if min_nodes <= 1:
        return None
    adjacent = _neighbours(partitions, graph)
    for part in partitions:
        if part.constant or len(part.nodes) >= min_nodes or any(n in moved for n in part.nodes):
            continue
        candidates = sorted(adjacent[part.index].items(), key=lambda kv: -kv[1])
        for other_index, _ in candidates:
            other = partitions[other_index]
            if other.constant or other.backend == part.backend:
                continue
            if all(verdicts[labels[n]].get(other.backend, "") is None for n in part.nodes):
                for node in part.nodes:
                    assignment[node] = other.backend
                    moved.add(node)
                return Merge(tuple(labels[n] for n in part.nodes), part.backend, other.backend,
                             f"a partition of {len(part.nodes)} node(s) (< "
                             f"min_partition_nodes={min_nodes}) joins its {other.backend} "
                             "neighbour to save a boundary")
    return None


def _finish(partitions: list[Partition], graph: ir.Graph) -> list[BoundaryTensor]:
    """Fill each partition's inputs/outputs and list the boundary tensors."""
    owner: dict[ir.Node | None, int] = {
        node: p.index for p in partitions for node in p.nodes}
    graph_outputs = {v.name for v in graph.outputs}
    consumers: dict[str, set[int]] = {}
    values: dict[str, ir.Value] = {}
    for part in partitions:
        inputs: list[str] = []
        for node in part.nodes:
            for value in reads(node, graph):
                producer = value.producer()
                name = value.name or ""
                if owner.get(producer) == part.index or name in inputs:
                    continue
                if producer is None and _is_static(value):
                    continue  # an initializer: copied into the partition
                if producer is not None and producer not in owner:
                    continue  # produced by an unplaced node: nothing to wire
                if producer is not None and partitions[owner[producer]].constant \
                        and not part.constant:
                    continue  # a load-time constant: becomes an initializer
                inputs.append(name)
                values[name] = value
                if producer is not None:
                    consumers.setdefault(name, set()).add(part.index)
        part.inputs = inputs
    # Which partitions read each value, from inside their nodes' bodies too (a constant that
    # only an If branch reads must still leave its constant partition).
    read_by: dict[str, set[int]] = {}
    for part in partitions:
        for node in part.nodes:
            for value in reads(node, graph):
                read_by.setdefault(value.name or "", set()).add(part.index)
    for part in partitions:
        outputs = []
        for node in part.nodes:
            for value in node.outputs:
                name = value.name or ""
                read_later = any(part.index != c for c in consumers.get(name, ()))
                const_read = part.constant and any(
                    reader != part.index for reader in read_by.get(name, ()))
                if read_later or name in graph_outputs or const_read:
                    outputs.append(name)
        part.outputs = outputs
    boundaries = []
    for name in sorted(consumers, key=lambda n: (owner[values[n].producer()], n)):
        value = values[name]
        producer_index = owner[value.producer()]
        readers = tuple(sorted(c for c in consumers[name]
                               if c != producer_index and not partitions[c].constant))
        if readers:
            boundaries.append(BoundaryTensor(name, producer_index, readers, _dtype_name(value),
                                             value_dims(value)))
    return boundaries


# ---------------------------------------------------------------------------------------------
# Extraction: one partition as a standalone model.

def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from an enclosing scope."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n and n not in defined)
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subs:
                used.update(n for n in _used_names(sub) if n not in defined)
        defined.update(node.output)
    return used


class Extractor:
    """Builds standalone models for the partitions of one plan (serializes the model once)."""

    def __init__(self, model: ir.Model, plan: PartitionPlan):
        self.model = model
        self.plan = plan
        self.proto = ir.serde.serialize_model(model)
        self.index = {node: i for i, node in enumerate(model.graph)}
        graph = self.proto.graph
        self.types = {v.name: v for v in list(graph.value_info) + list(graph.input)
                      + list(graph.output)}
        self.initializers = {t.name: t for t in graph.initializer}

    def extract(self, part: Partition,
                constants: Mapping[str, np.ndarray] | None = None) -> ir.Model:
        """Partition ``part`` as an IR model: its nodes, the initializers and load-time
        ``constants`` it reads, its ``inputs`` as graph inputs and ``outputs`` as outputs."""
        constants = constants or {}
        nodes = [self.proto.graph.node[self.index[n]] for n in part.nodes]
        produced = {name for node in nodes for name in node.output}
        sub = onnx.GraphProto(name=f"partition{part.index}_{part.backend}")
        sub.node.extend(nodes)
        needed = _used_names(sub)
        for name in sorted(needed - produced):
            if name in constants:
                sub.initializer.append(onnx.numpy_helper.from_array(constants[name], name))
            elif name in self.initializers:
                sub.initializer.append(self.initializers[name])
            elif name not in part.inputs:
                raise ModelError(f"partition {part.index} ({part.backend}) reads '{name}', "
                                 "which no earlier partition, input or constant provides")
        sub.input.extend(self._typed(name, part) for name in part.inputs)
        sub.output.extend(self._typed(name, part) for name in part.outputs)
        proto = onnx.ModelProto(ir_version=self.proto.ir_version,
                                producer_name="kiln.partition")
        proto.opset_import.extend(self.proto.opset_import)
        proto.functions.extend(self.proto.functions)
        proto.graph.CopyFrom(sub)
        return ir.serde.deserialize_model(proto)

    def _typed(self, name: str, part: Partition) -> onnx.ValueInfoProto:
        info = self.types.get(name)
        if info is None or not info.type.HasField("tensor_type") \
                or not info.type.tensor_type.elem_type:
            raise ModelError(f"cannot cut partition {part.index} ({part.backend}) at tensor "
                             f"'{name}': its type is unknown (shape inference did not reach "
                             "it)")
        return info


def plan_summary(plan: PartitionPlan) -> dict[str, Any]:
    """Counts for one plan, for logs and reports."""
    runtime = plan.runtime_partitions
    return {"partitions": len(runtime),
            "constant_partitions": len(plan.partitions) - len(runtime),
            "boundary_tensors": len(plan.boundaries),
            "boundary_bytes": plan.boundary_bytes(),
            "unplaced": len(plan.unplaced)}
