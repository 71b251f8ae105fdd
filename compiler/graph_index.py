"""What the compiler asks of a graph as it stands: every node with its subgraphs', op counts,
and the index the pipeline keeps of them between passes (so a pass that finds nothing to do
costs no walk of its own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import onnx_ir as ir

#: The attribute types that hold subgraphs (If / Loop / Scan bodies).
SUBGRAPH_ATTRS = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


def node_bodies(node: ir.Node) -> Iterator[ir.Graph]:
    """The subgraphs ``node``'s attributes hold (its own, not theirs), in attribute order."""
    if not node.attributes:
        return
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.value
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.value


def has_bodies(node: ir.Node) -> bool:
    return bool(node.attributes) and any(attr.type in SUBGRAPH_ATTRS
                                         for attr in node.attributes.values())


def walk_nodes(graph: ir.Graph | ir.Function) -> Iterator[ir.Node]:
    """Every node of ``graph`` and of its subgraphs, each before its subgraphs' nodes (the
    order of ``Graph.all_nodes``, at a fraction of its cost: the pipeline walks the graph
    after every pass)."""
    for node in graph:
        yield node
        for sub in node_bodies(node):
            yield from walk_nodes(sub)


def all_graphs(model: ir.Model) -> list[ir.Graph]:
    """The main graph, then every subgraph (bodies within bodies too) once: ``Model.graphs``
    in its order, at about a third of its cost (it walks with onnx_ir's generic iterator)."""
    graphs: dict[ir.Graph, None] = {model.graph: None}
    for node in walk_nodes(model.graph):
        for graph in node_bodies(node):
            graphs.setdefault(graph)
    return list(graphs)


def count_nodes(model: ir.Model) -> int:
    """Nodes in the main graph and every subgraph."""
    return sum(1 for _ in walk_nodes(model.graph))


def op_histogram(model: ir.Model) -> Counter[str]:
    """How often each op occurs; kiln-domain and other non-ONNX ops carry their domain."""
    hist: Counter[str] = Counter()
    for node in walk_nodes(model.graph):
        hist[_op_key(node)] += 1
    return hist


def _op_key(node: ir.Node) -> str:
    domain = node.domain
    return node.op_type if domain in ("", "ai.onnx") else f"{domain}::{node.op_type}"


#: ``ir.Model.meta`` key (in memory, never saved) of the ``GraphIndex`` that ``run_steps``
#: keeps of the model while no pass has changed it
GRAPH_INDEX = "kiln.graph_index"


class GraphIndex:
    """One walk of a model, for what the pipeline and its passes ask of the graph as it is:

    histogram  ``op_histogram`` (the graph and its subgraphs)
    ops        the op types of every node of the graph, its subgraphs and the model's
               functions (what onnxscript's rewriter visits)
    edges      the (consumer op, producer op) pairs among those nodes
    subgraphs  whether some node of the graph holds a subgraph
    facts      answers worked out from the graph as indexed (``indexed``), kept with it

    ``run_steps`` walks the graph once and again only after a pass that changed it, instead
    of each pass walking it for the op types it looks for (YOLOv8n: ~30 walks a compile)."""

    __slots__ = ("histogram", "ops", "edges", "subgraphs", "facts")

    def __init__(self, model: ir.Model) -> None:
        hist: Counter[str] = Counter()
        ops: set[str] = set()
        edges: set[tuple[str, str]] = set()
        subgraphs = False
        for node in walk_nodes(model.graph):
            hist[_op_key(node)] += 1
            _add_op(node, ops, edges)
            subgraphs = subgraphs or has_bodies(node)
        for function in model.functions.values():
            for node in walk_nodes(function):
                _add_op(node, ops, edges)
        self.histogram = hist
        self.ops = frozenset(ops)
        self.edges = frozenset(edges)
        self.subgraphs = subgraphs
        self.facts: dict[str, Any] = {}


def _add_op(node: ir.Node, ops: set[str], edges: set[tuple[str, str]]) -> None:
    op = node.op_type
    ops.add(op)
    for value in node.inputs:
        producer = value.producer() if value is not None else None
        if producer is not None:
            edges.add((op, producer.op_type))


def indexed(model: ir.Model) -> GraphIndex | None:
    """The ``GraphIndex`` that ``run_steps`` keeps of ``model`` while no pass has changed it
    (None outside a pipeline, or once a pass changed the graph)."""
    index = model.meta.get(GRAPH_INDEX)
    return index if isinstance(index, GraphIndex) else None


def graph_index(model: ir.Model) -> GraphIndex:
    """``indexed(model)``, or a walk of it now. A pass reads it at its start: the index does
    not follow what the pass itself then changes."""
    return indexed(model) or GraphIndex(model)
