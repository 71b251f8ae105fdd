"""Differential testing: run one model on two backends (or two models, e.g. an original and an
edited copy, on one or two backends) with the same feeds and compare every output; on a
mismatch, bisect to the first node whose output diverges.

Closeness is numpy's ``allclose`` rule, per element: ``|b - a| <= atol + rtol * |a|`` where
``a`` is side A (the reference side) and ``b`` side B. NaN on both sides agrees.

Bisect. Every intermediate value with a known dtype is added as a graph output of a copy of
each side's IR model; both copies run on their backends with the same feeds; nodes are walked
in topological order and the first node with an output beyond tolerance (matched across sides
by value name) is named. Its inputs are, by construction, still within tolerance, so the
divergence starts there. Adding outputs can change what a backend fuses (Polygraphy users hit
this), so the culprit is then re-run *in isolation*: a one-node model fed side A's values for
its inputs, with each side's own initializers, on each side's backend. ``isolated_max_abs``
says whether the node alone reproduces the difference.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from kiln.errors import InputError, KilnError


@dataclasses.dataclass
class Closeness:
    """How two arrays compare under (rtol, atol)."""

    ok: bool
    max_abs: float
    max_rel: float
    mismatched: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def closeness(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> Closeness:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return Closeness(False, float("inf"), float("inf"), max(a.size, b.size),
                         max(a.size, b.size))
    if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        wrong = int(np.count_nonzero(a != b))
        gap = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.
        return Closeness(wrong == 0, gap, 0.0 if wrong == 0 else float("inf"), wrong, a.size)
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    # NaN on both sides, or the same infinity (log(0) = -inf on both), agrees
    same = (np.isnan(x) & np.isnan(y)) | (x == y)
    with np.errstate(invalid="ignore"):  # inf - inf where the infinities differ: NaN -> inf
        diff = np.where(same, 0.0, np.abs(x - y))
    diff = np.where(np.isnan(diff), np.inf, diff)
    bad = diff > atol + rtol * np.abs(np.nan_to_num(x))
    rel = diff / np.maximum(np.abs(np.nan_to_num(x)), 1e-12)
    return Closeness(not bool(bad.any()), float(diff.max()) if diff.size else 0.0,
                     float(rel.max()) if rel.size else 0.0, int(bad.sum()), int(a.size))


@dataclasses.dataclass
class Side:
    """One side of a comparison: a model on a backend at a precision."""

    model: Any
    backend: str
    precision: str = "fp32"
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        where = f"{self.backend}/{self.precision}"
        if isinstance(self.model, (str, os.PathLike)):
            return f"{Path(self.model).name} on {where}"
        return where


@dataclasses.dataclass
class NodeDiff:
    index: int
    node: str
    op_type: str
    output: str
    closeness: Closeness

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "node": self.node, "op_type": self.op_type,
                "output": self.output, **self.closeness.to_json()}


@dataclasses.dataclass
class Bisect:
    """Where two sides start to disagree."""

    first: NodeDiff | None
    nodes_compared: int
    nodes_unmatched: int
    diverged: list[NodeDiff]
    isolated_max_abs: float | None = None
    isolated_ok: bool | None = None
    isolation_note: str = ""
    differing_initializers: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first.to_json() if self.first else None,
                "nodes_compared": self.nodes_compared, "nodes_unmatched": self.nodes_unmatched,
                "diverged": [d.to_json() for d in self.diverged[:50]],
                "isolated_max_abs": self.isolated_max_abs, "isolated_ok": self.isolated_ok,
                "isolation_note": self.isolation_note,
                "differing_initializers": self.differing_initializers}


@dataclasses.dataclass
class CompareResult:
    a: Side
    b: Side
    rtol: float
    atol: float
    outputs: dict[str, Closeness]
    bisect: Bisect | None = None
    notes: list[str] = dataclasses.field(default_factory=list)  # how random feeds were sized

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs.values())

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a.describe(), "b": self.b.describe(), "rtol": self.rtol,
                "atol": self.atol, "ok": self.ok,
                "outputs": {k: v.to_json() for k, v in self.outputs.items()},
                "bisect": self.bisect.to_json() if self.bisect else None,
                "notes": list(self.notes)}


def node_label(node: ir.Node, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _import(model: Any) -> ir.Model:
    if isinstance(model, ir.Model):
        return model
    from kiln.compiler.frontend import import_model

    return import_model(model)


def _copy(model: ir.Model) -> ir.Model:
    from kiln.compiler.frontend import aside_tensors, keep_aside

    copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    keep_aside(copy, aside_tensors(model))  # weights a large file's parse set aside stay mapped
    return copy


def _session(model: ir.Model, side: Side, threads: int | None):
    from kiln.runtime.session import Session

    # Session optimizes the IR model it is given in place; bisect needs the graph as imported
    return Session(_copy(model), backend=side.backend, precision=side.precision,
                   threads=threads)


def _open(side: Side, threads: int | None) -> tuple[ir.Model, Side, Any]:
    """(graph, side, Session) of one side. A .kiln side runs the artifact's stored graph:
    on its own backend(s) when ``side.backend`` is "auto", else rebuilt for that backend
    (kiln ops written back as standard ONNX where the backend does not run them); the side
    returned names the backend and precision it actually ran with."""
    from kiln.runtime.compile import is_artifact_path

    if not is_artifact_path(side.model):
        model = _import(side.model)
        return model, side, _session(model, side, threads)
    from kiln.runtime.session import Session

    session = Session(side.model, backend=side.backend, threads=threads)
    choice = session.compiled.choice
    backend = ",".join(choice.backends) if choice.partitioned else choice.name
    ran = dataclasses.replace(side, backend=backend, precision=session.options.precision)
    return session.model, ran, session


def compare(a: Side, b: Side, feeds: Mapping[str, np.ndarray] | None = None, *,
            rtol: float = 1e-3, atol: float = 1e-4, seed: int = 0, threads: int | None = None,
            bisect: bool = True, dims: Mapping[str, int] | None = None) -> CompareResult:
    """Run both sides on the same feeds and compare every output; bisect to the first
    divergent node when they disagree and ``bisect`` is set. Without ``feeds``, seeded random
    ones, symbolic dims sized from ``dims`` or the model (``kiln.runtime.input_dims``)."""
    if rtol < 0 or atol < 0:
        raise KilnError(f"tolerances must be >= 0, got rtol={rtol}, atol={atol}")
    model_a, a, sess_a = _open(a, threads)
    model_b, b, sess_b = _open(b, threads)
    names_a = [s.name for s in sess_a.inputs]
    names_b = [s.name for s in sess_b.inputs]
    if sorted(names_a) != sorted(names_b):
        raise KilnError(f"the two models take different inputs: {names_a} vs {names_b}")
    notes: list[str] = []
    sized = None
    if feeds is None:
        from kiln.runtime.input_dims import resolve_input_dims
        from kiln.runtime.session import random_feeds

        sized = resolve_input_dims(sess_a.inputs, model_a, dims)
        notes = sized.notes
        feeds = random_feeds(sized.specs(sess_a.inputs), seed=seed)
    try:
        out_a, out_b = sess_a(**feeds), sess_b(**feeds)
    except KilnError as exc:
        if sized is None or not sized.sizes:
            raise
        raise InputError(sized.explain(str(exc))) from exc
    missing = [n for n in out_a if n not in out_b]
    if missing:
        raise KilnError(f"side B has no output(s) {missing}; its outputs are {list(out_b)}")
    result = CompareResult(a, b, rtol, atol,
                           {n: closeness(out_a[n], out_b[n], rtol, atol) for n in out_a},
                           notes=notes)
    if bisect and not result.ok:
        result.bisect = bisect_models(model_a, model_b, a, b, feeds, rtol=rtol, atol=atol,
                                      threads=threads)
    return result


def expose_intermediates(model: ir.Model) -> tuple[ir.Model, list[str]]:
    """A copy of ``model`` whose graph also outputs every node output with a known dtype;
    returns (copy, names of the values added)."""
    copy = _copy(model)
    graph = copy.graph
    present = {v.name for v in graph.outputs}
    added = []
    for node in graph:
        for value in node.outputs:
            if not value.name or value.name in present or value.dtype is None:
                continue
            if not value.uses():  # an unused optional output (Dropout's mask) feeds nothing
                continue
            if not isinstance(value.type, ir.TensorType):
                continue
            graph.outputs.append(value)
            present.add(value.name)
            added.append(value.name)
    return copy, added


def bisect_models(model_a: ir.Model, model_b: ir.Model, a: Side, b: Side,
                  feeds: Mapping[str, np.ndarray], *, rtol: float, atol: float,
                  threads: int | None = None) -> Bisect:
    """Name the first node (topological order of side A) whose output differs beyond
    tolerance between the two sides, then re-run it alone to confirm."""
    exposed_a, _ = expose_intermediates(model_a)
    exposed_b, _ = expose_intermediates(model_b)
    vals_a = _session(exposed_a, a, threads)(**feeds)
    vals_b = _session(exposed_b, b, threads)(**feeds)
    compared = unmatched = 0
    diverged: list[NodeDiff] = []
    for index, node in enumerate(model_a.graph):
        for value in node.outputs:
            if value.name not in vals_a:
                continue
            if value.name not in vals_b:
                unmatched += 1
                continue
            compared += 1
            check = closeness(vals_a[value.name], vals_b[value.name], rtol, atol)
            if not check.ok:
                diverged.append(NodeDiff(index, node_label(node, index), node.op_type,
                                         str(value.name), check))
    result = Bisect(diverged[0] if diverged else None, compared, unmatched, diverged,
                    differing_initializers=_differing_initializers(model_a, model_b))
    if result.first is not None:
        _isolate(result, model_a, model_b, a, b, vals_a, vals_b, feeds, rtol, atol, threads)
    return result


def _differing_initializers(model_a: ir.Model, model_b: ir.Model) -> list[dict[str, Any]]:
    out = []
    for name, va in model_a.graph.initializers.items():
        vb = model_b.graph.initializers.get(name)
        if vb is None or va.const_value is None or vb.const_value is None:
            continue
        x, y = va.const_value.numpy(), vb.const_value.numpy()
        if x.shape != y.shape or not np.array_equal(x, y):
            diff = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) \
                if x.shape == y.shape else None
            out.append({"name": name, "max_abs": diff})
    return out


def _single_node_model(model: ir.Model, index: int,
                       values: Mapping[str, np.ndarray]) -> tuple[ir.Model, dict[str, Any]]:
    """Node ``index`` of ``model`` alone: initializer inputs stay initializers, every other
    input becomes a graph input fed from ``values``."""
    import onnx
    from onnx import helper

    proto = ir.serde.serialize_model(model)
    node = proto.graph.node[index]
    inits = {t.name: t for t in proto.graph.initializer}
    graph_inputs: list[onnx.ValueInfoProto] = []
    initializers: list[onnx.TensorProto] = []
    feeds: dict[str, np.ndarray] = {}
    for name in node.input:
        if not name or name in feeds or any(t.name == name for t in initializers):
            continue
        if name in inits:
            initializers.append(inits[name])
        elif name in values:
            array = np.asarray(values[name])
            feeds[name] = array
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
        else:
            raise KilnError(f"no value for input '{name}' of node {node.name or node.op_type}")
    outputs = []
    for name in node.output:
        if not name:
            continue
        if name in values:  # typed from the value side A computed for it
            array = np.asarray(values[name])
            outputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
        else:
            outputs.append(helper.make_empty_tensor_value_info(name))
    graph = helper.make_graph([node], "isolated", graph_inputs, outputs, initializer=initializers)
    single = helper.make_model(graph, opset_imports=list(proto.opset_import))
    single.ir_version = proto.ir_version
    single = onnx.shape_inference.infer_shapes(single)
    return ir.serde.deserialize_model(single), feeds


def _isolate(result: Bisect, model_a: ir.Model, model_b: ir.Model, a: Side, b: Side,
             vals_a: Mapping[str, np.ndarray], vals_b: Mapping[str, np.ndarray],
             feeds: Mapping[str, np.ndarray], rtol: float, atol: float,
             threads: int | None) -> None:
    first = result.first
    assert first is not None
    known = dict(feeds) | dict(vals_a)
    index_b = next((i for i, n in enumerate(model_b.graph)
                    if any(v.name == first.output for v in n.outputs)), None)
    if index_b is None:
        result.isolation_note = "side B has no node producing that value"
        return
    try:
        single_a, feeds_a = _single_node_model(model_a, first.index, known)
        single_b, feeds_b = _single_node_model(model_b, index_b, known)
        got_a = _session(single_a, a, threads)(**feeds_a)
        sess_b = _session(single_b, b, threads)
        got_b = sess_b(**feeds_b)
    except Exception as exc:  # isolation is a confirmation; its failure is only reported
        result.isolation_note = f"could not run the node alone: {exc}"
        return
    check = closeness(got_a[first.output], got_b[first.output], rtol, atol)
    result.isolated_max_abs, result.isolated_ok = check.max_abs, check.ok
    if not check.ok:
        result.isolation_note = ("the node alone, fed identical inputs, reproduces the "
                                 "difference")
        return
    # Fed side B's own (in-tolerance) inputs, does the node turn them into B's output?
    known_b = dict(feeds) | dict(vals_b)
    own = {k: known_b[k] for k in feeds_b if k in known_b}
    amplified = False
    if len(own) == len(feeds_b):
        again = closeness(got_a[first.output], sess_b(**own)[first.output], rtol, atol)
        amplified = not again.ok
    result.isolation_note = (
        "the node alone agrees on identical inputs, but turns side B's inputs (within "
        "tolerance) into an output beyond it: the node amplifies small upstream differences"
        if amplified else
        "the node alone agrees: the difference needs its context (fusion or layout across "
        "neighbours)")


def first_divergence_summary(result: CompareResult) -> str:
    """One line naming the first divergent node, for errors and reports."""
    if result.bisect is None or result.bisect.first is None:
        return "no single node diverges beyond tolerance"
    f = result.bisect.first
    return (f"first divergent node: {f.node} ({f.op_type}, output '{f.output}', "
            f"max abs {f.closeness.max_abs:.3g}, {f.closeness.mismatched}/"
            f"{f.closeness.total} elements beyond tolerance)")


def compare_many(sides: Sequence[Side], feeds: Mapping[str, np.ndarray] | None = None,
                 **kwargs: Any) -> list[CompareResult]:
    """Compare ``sides[0]`` against each of the others."""
    return [compare(sides[0], other, feeds, **kwargs) for other in sides[1:]]
