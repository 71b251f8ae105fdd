"""Placement: which backend runs which node, why the others refuse, and what it costs.

This is the runtime side of partitioning. It turns registered backends into the
``Capability`` values ``kiln.compiler.partition`` asks (the compiler imports no backend), and
it renders plans as JSON: ``placement_to_json`` for one plan (what an artifact's manifest
records) and ``placement_report`` for ``kiln inspect --backends`` (every backend's coverage
plus the plan for the priority list). The schema is documented in docs/placement_schema.md.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence
from typing import Any

import onnx_ir as ir

from kiln.backends import registry
from kiln.backends.base import Backend
from kiln.compiler.capabilities import QCONV_GROUPS
from kiln.compiler.partition import Capability, PartitionPlan, plan_partitions
from kiln.compiler.source_digest import source_sha256
from kiln.compiler.target import Target
from kiln.errors import BackendUnavailableError, KilnError

#: Version of the JSON layout below; bump it when a field changes meaning.
SCHEMA = "kiln.placement/1"

#: Default for ``min_partition_nodes`` (see kiln.compiler.partition).
MIN_PARTITION_NODES = 3


def capability_of(backend: Backend, model: ir.Model, device: str | None = None) -> Capability:
    """The partitioner's view of ``backend`` for ``model``.

    The backend's per-model verdicts (``Backend.capability``, e.g. OpenVINO's
    ``query_model``) are asked once; nodes without one fall back to ``backend.refusal``.
    """
    verdicts = backend.capability(model) if device is None else \
        backend.capability(model, device=device)
    if not verdicts:
        return Capability(backend.name, backend.refusal)

    def refusal(node: ir.Node) -> str | None:
        if node in verdicts:
            return verdicts[node]
        return backend.refusal(node)

    return Capability(backend.name, refusal)


def resolve_backends(names: Sequence[str], fallback: str | None) -> tuple[list[str], list[dict]]:
    """The usable priority list for ``names`` + ``fallback``, and the backends skipped.

    Strict mode (``fallback=None``) refuses an unavailable backend outright
    (BackendUnavailableError); with a fallback it is skipped and reported. The fallback
    itself must be available.
    """
    order = [str(n) for n in names]
    if not order:
        raise KilnError("the backend list is empty; name at least one backend")
    if fallback is not None and fallback not in order:
        order.append(str(fallback))
    usable, skipped = [], []
    for name in order:
        status = registry.availability(registry.get_backend(name).name)
        if status.ok:
            usable.append(name)
            continue
        if fallback is None or name == fallback:
            mode = "strict mode (fallback=None)" if fallback is None else "the fallback"
            raise BackendUnavailableError(f"backend '{name}' is unavailable ({mode}): "
                                          f"{status.reason}")
        skipped.append({"backend": name, "reason": status.reason})
    return usable, skipped


def plan_for(model: ir.Model, names: Sequence[str], *,
             min_partition_nodes: int = MIN_PARTITION_NODES,
             device: str | None = None) -> PartitionPlan:
    """The partition plan for ``model`` over the backends ``names`` (in priority order);
    ``device`` is the device string backends with a per-model query ask about."""
    caps = [capability_of(registry.get_backend(n), model, device) for n in names]
    return plan_partitions(model, caps, min_partition_nodes=min_partition_nodes)


_KIND_PATTERNS = (
    ("dynamic_shape", re.compile(r"dynamic|symbolic|unknown (rank|shape|dim)|static dim",
                                 re.I)),
    ("dtype", re.compile(r"dtype|float64|float16|bfloat16|int64|int32|int8|uint8|bool|"
                         r"string|complex|float8|\bon (tensor|int|float|uint|bool)", re.I)),
    ("attribute", re.compile(r"attribute|must be (an initializer|a constant|1|0|empty)|"
                             r"mode|output .* unsupported|only the first output", re.I)),
    ("domain", re.compile(r"domain", re.I)),
    ("unavailable", re.compile(r"unavailable|not installed", re.I)),
)


def refusal_kind(reason: str) -> str:
    """Classify a refusal reason: dynamic_shape, dtype, attribute, domain or op."""
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(reason):
            return kind
    return "op"


def _op(node: ir.Node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def placement_to_json(plan: PartitionPlan, dims: Mapping[str, int] | None = None,
                      skipped: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """One plan as JSON: partitions, boundaries and their bytes, moves and unplaced nodes.

    ``dims`` binds symbolic dims when counting bytes (unbound symbols make bytes null).
    """
    nodes = plan.node_by_label()
    partitions = []
    for part in plan.partitions:
        ops = collections.Counter(_op(n) for n in part.nodes)
        partitions.append({
            "index": part.index, "backend": part.backend, "constant": part.constant,
            "node_count": len(part.nodes), "ops": dict(sorted(ops.items())),
            "nodes": [plan.label(n) for n in part.nodes],
            "inputs": list(part.inputs), "outputs": list(part.outputs)})
    boundaries = [{"name": b.name, "from": b.producer, "to": list(b.consumers),
                   "dtype": b.dtype, "shape": None if b.shape is None else list(b.shape),
                   "bytes": b.nbytes(dims)} for b in plan.boundaries]
    unplaced = [{"node": label, "op": _op(nodes[label]),
                 "reasons": dict(plan.verdicts[label])} for label in plan.unplaced]
    # Every node not on the first backend of the list, and why the backends before it refused
    # it (a node moved only to join a partition is listed under "merges").
    first = plan.backends[0] if plan.backends else None
    off_first = [{"node": label, "op": _op(nodes[label]), "backend": backend,
                  "reasons": {b: r for b, r in plan.verdicts[label].items() if r is not None}}
                 for label, backend in plan.assignment.items() if backend != first]
    runtime = plan.runtime_partitions
    per_backend = collections.Counter(plan.assignment.values())
    return {
        "schema": SCHEMA,
        "backends": list(plan.backends),
        "skipped_backends": [dict(s) for s in skipped],
        "min_partition_nodes": plan.min_partition_nodes,
        "node_count": len(plan.labels),
        "nodes_per_backend": {b: per_backend.get(b, 0) for b in plan.backends},
        "partition_count": len(runtime),
        "constant_partition_count": len(plan.partitions) - len(runtime),
        "boundary_tensor_count": len(plan.boundaries),
        "boundary_bytes_per_inference": plan.boundary_bytes(dims),
        "dims": dict(dims or {}),
        "complete": not plan.unplaced,
        "unplaced": unplaced,
        "off_first_backend": off_first,
        "merges": [{"nodes": list(m.nodes), "from": m.moved_from, "to": m.moved_to,
                    "reason": m.reason} for m in plan.merges],
        "partitions": partitions,
        "boundaries": boundaries,
        "assignment": dict(plan.assignment),
    }


def _coverage(plan: PartitionPlan, name: str) -> dict[str, Any]:
    nodes = plan.node_by_label()
    runs, refused = [], []
    for label, verdict in plan.verdicts.items():
        reason = verdict[name]
        if reason is None:
            runs.append(label)
        else:
            refused.append({"node": label, "op": _op(nodes[label]), "reason": reason,
                            "kind": refusal_kind(reason)})
    by_op: dict[str, dict[str, Any]] = {}
    for item in refused:
        entry = by_op.setdefault(item["op"], {"count": 0, "reason": item["reason"],
                                              "kind": item["kind"]})
        entry["count"] += 1
    total = len(plan.verdicts)
    return {"runs": len(runs), "refuses": len(refused), "of": total,
            "coverage": round(len(runs) / total, 4) if total else 1.0,
            "nodes": runs, "refused": refused, "refused_by_op": dict(sorted(by_op.items()))}


def joint_caps(names: Sequence[str]) -> Any:
    """Compiler caps for a graph split over ``names``: kiln ops any of them runs (the
    partitioner then places those there), the lowest opset any of them imports, and static
    int8 in the "inputs" form only when every one of them asks for it (the chained form runs
    int8 everywhere; the inputs form loses the integer kernels of engines that chain them),
    and work left to the engines' own loads only when each of them does it."""
    import dataclasses

    caps = [registry.get_backend(n).caps() for n in names]
    return dataclasses.replace(
        caps[0], name="+".join(names),
        kiln_ops=frozenset().union(*(c.kiln_ops for c in caps)),
        conv_prologue=any(c.conv_prologue for c in caps),
        f32_nhwc=any(c.f32_nhwc for c in caps),
        # work kiln leaves to an engine's own load is left only when every engine does it
        fuses_norm_gelu=all(c.fuses_norm_gelu for c in caps),
        folds_conv_batchnorm=all(c.folds_conv_batchnorm for c in caps),
        cleans_up_at_load=all(c.cleans_up_at_load for c in caps),
        qconv_groups=max((c.qconv_groups for c in caps), key=QCONV_GROUPS.index),
        int8_byte_table=any(c.int8_byte_table for c in caps),
        int8_activations=frozenset().union(*(c.int8_activations for c in caps)),
        max_opset=min(c.max_opset for c in caps),
        static_int8="inputs" if all(c.static_int8 == "inputs" for c in caps) else "chained",
        precision_hints=frozenset.intersection(*(c.precision_hints for c in caps)))


def placement_report(model: ir.Model, backends: Sequence[str], fallback: str | None =
                     "onnxruntime", dims: Mapping[str, int] | None = None,
                     min_partition_nodes: int = MIN_PARTITION_NODES,
                     opt_level: int | None = None, target: Target | None = None) -> dict[str, Any]:
    """The full placement report for ``model`` (see docs/placement_schema.md).

    Per backend: availability, the nodes it would run, why it refuses each other node, and
    the plan it would give paired with ``fallback``. Then the plan for the whole priority
    list. Unavailable backends are still asked (capability is a pure query) and marked.

    With ``opt_level`` each graph is first optimized (for ``target``) the way
    ``kiln.Session(model, backend=[...], opt_level=...)`` would for that backend list: per
    backend for its own entry, for the whole list for ``plan``. Without it the imported graph
    is placed as is. ``model`` itself is never modified.
    """
    names = [str(n) for n in backends]
    for name in names + ([fallback] if fallback else []):
        registry.get_backend(name)  # unknown names raise a KilnError naming the known ones

    def prepared(for_backends: Sequence[str]) -> ir.Model:
        if opt_level is None:
            return model
        from kiln.compiler.pipeline import optimize

        copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
        copy.meta.update(model.meta)
        return optimize(copy, opt_level, target, joint_caps(for_backends))[0]

    combined = prepared(names)
    given = dict(dims or {})
    dims = bind_symbols(combined, given)
    ops = collections.Counter(_op(n) for n in model.graph)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "model": {"name": model.meta.get("kiln.source_name"),
                  "sha256": source_sha256(model) or None,
                  "node_count": len(list(model.graph)), "ops": dict(sorted(ops.items())),
                  "inputs": [_value_json(v) for v in model.graph.inputs
                             if not v.is_initializer()],
                  "outputs": [_value_json(v) for v in model.graph.outputs]},
        "fallback": fallback,
        "opt_level": opt_level,
        "dims": dims,
        "assumed_dims": sorted(set(dims) - set(given)),
        "backends": {},
    }
    for name in names:
        graph = prepared([name])
        status = registry.availability(name)
        entry: dict[str, Any] = {"available": status.ok, "version": status.version,
                                 "reason": status.reason,
                                 "node_count": len(list(graph.graph))}
        entry.update(_coverage(plan_for(graph, [name], min_partition_nodes=min_partition_nodes),
                               name))
        order = [name] + ([fallback] if fallback and fallback != name else [])
        paired = plan_for(graph, order, min_partition_nodes=min_partition_nodes)
        entry["plan"] = _plan_brief(paired, bind_symbols(graph, given))
        report["backends"][name] = entry
    order = names + ([fallback] if fallback and fallback not in names else [])
    report["plan"] = placement_to_json(
        plan_for(combined, order, min_partition_nodes=min_partition_nodes), dims)
    return report


def _plan_brief(plan: PartitionPlan, dims: Mapping[str, int] | None) -> dict[str, Any]:
    full = placement_to_json(plan, dims)
    keep = ("backends", "nodes_per_backend", "partition_count", "constant_partition_count",
            "boundary_tensor_count", "boundary_bytes_per_inference", "complete")
    brief = {k: full[k] for k in keep}
    brief["unplaced"] = [u["node"] for u in full["unplaced"]]
    return brief


def _value_json(value: ir.Value) -> dict[str, Any]:
    dims = None if value.shape is None else [
        d if isinstance(d, int) else (d.value if isinstance(d.value, str) else None)
        for d in value.shape]
    return {"name": value.name, "dtype": None if value.dtype is None else value.dtype.name,
            "shape": dims}


def bind_symbols(model: ir.Model, dims: Mapping[str, int] | None = None) -> dict[str, int]:
    """``dims`` plus every other symbolic dim of the graph's values bound to 1."""
    bound = {str(k): int(v) for k, v in (dims or {}).items()}
    values = list(model.graph.inputs) + [o for n in model.graph for o in n.outputs]
    for value in values:
        for dim in value.shape or ():
            if not isinstance(dim, int) and isinstance(dim.value, str) and dim.value:
                bound.setdefault(dim.value, 1)
    return bound
