"""Fuse scaled-dot-product attention into one node.

The subgraph exporters write for every head group (Q, K, V of shape [B, H, S, d], ``Kt`` the
key already transposed to [B, H, d, S], ``mask`` additive and broadcastable to
[B, H, Sq, Skv]):

    scores = MatMul(Q, Kt) * c          (or / c, or no scaling)
    probs  = Softmax(scores + mask, axis=-1)
    out    = MatMul(probs, V)

is ``softmax(c * Q K^T + mask) V``, which is ONNX ``Attention`` (opset 23) with
``K = Transpose(Kt, [0, 1, 3, 2])`` and ``scale = c`` (1/c for a Div, 1.0 with no scaling;
always written, because the op's default is 1/sqrt(d)). It runs for backends whose caps say
they run opset-23 Attention (``BackendCaps.standard_attention``; onnxruntime, measured faster).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes._util import attr, const, is_onnx, new_initializer, opset, sole_consumer
from kiln.compiler.passes.rule import Match, Rule

ATTENTION_OPSET = 23


def _rank(value: ir.Value) -> int | None:
    if value.shape is not None:
        return len(value.shape)
    producer = value.producer()
    if producer is not None and is_onnx(producer, "Transpose"):
        perm = attr(producer, "perm")
        return len(perm) if perm is not None else None
    return None


def _scalar(value: ir.Value | None) -> float | None:
    array = const(value)
    return None if array is None or array.size != 1 else float(array.reshape(-1)[0])


class FuseAttention(Rule):
    """softmax(c * Q Kt + mask) V -> Attention(Q, Transpose(Kt), V, mask, scale=c)."""

    name = "FuseAttention"
    ops = frozenset({"MatMul"})
    needs = frozenset({"Softmax"})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "MatMul") or node.inputs[0] is None:
            return None
        softmax = node.inputs[0].producer()
        if softmax is None or not is_onnx(softmax, "Softmax") or softmax.inputs[0] is None:
            return None
        nodes = [softmax, node]
        cur = softmax.inputs[0].producer()
        mask = None
        if cur is not None and is_onnx(cur, "Add"):
            for i in (0, 1):
                scores = self._scores(cur.inputs[i])
                if scores is not None:
                    mask = cur.inputs[1 - i]
                    nodes.insert(0, cur)
                    break
            else:
                return None
        else:
            scores = self._scores(softmax.inputs[0])
            if scores is None:
                return None
        qk, scale_node = scores
        nodes[:0] = [qk] + ([scale_node] if scale_node is not None else [])
        return Match(node, nodes, {"softmax": softmax, "qk": qk, "scale_node": scale_node,
                                   "mask": mask, "v": node.inputs[1]})

    @staticmethod
    def _scores(value: ir.Value | None) -> tuple[ir.Node, ir.Node | None] | None:
        """(MatMul(Q, Kt), the Mul/Div applying the scale or None) producing ``value``."""
        producer = value.producer() if value is not None else None
        if producer is None:
            return None
        if is_onnx(producer, "Mul", "Div"):
            inner = producer.inputs[0].producer() if producer.inputs[0] is not None else None
            if inner is not None and is_onnx(inner, "MatMul"):
                return inner, producer
            return None
        if is_onnx(producer, "MatMul"):
            return producer, None
        return None

    def check(self, match: Match) -> str | None:
        softmax: ir.Node = match["softmax"]
        qk: ir.Node = match["qk"]
        version = opset(softmax.graph)
        if version < 13:
            return "Softmax before opset 13 flattens its input"
        if version < ATTENTION_OPSET:
            return f"the model imports opset {version}; Attention needs {ATTENTION_OPSET}"
        q, kt, v = qk.inputs[0], qk.inputs[1], match["v"]
        if q is None or kt is None or v is None:
            return "an attention operand is missing"
        ranks = [_rank(x) for x in (q, kt, v)]
        if ranks != [4, 4, 4]:
            return f"Q, K^T, V ranks {ranks} are not all 4"
        if int(attr(softmax, "axis", -1)) not in (-1, 3):
            return "Softmax is not over the last axis"
        for node in match.nodes[:-1]:
            if sole_consumer(node.outputs[0]) is None:
                return f"{node.op_type} output is used outside the attention"
        scale_node: ir.Node | None = match["scale_node"]
        scale = 1.0
        if scale_node is not None:
            c = _scalar(scale_node.inputs[1])
            if c is None or c == 0.0:
                return f"the {scale_node.op_type} scale is not a nonzero constant scalar"
            scale = 1.0 / c if scale_node.op_type == "Div" else c
        mask = match["mask"]
        if mask is not None and mask.dtype not in (None, ir.DataType.FLOAT, ir.DataType.BOOL):
            return f"mask element type {mask.dtype} is not float or bool"
        if mask is not None and mask.shape is not None and len(mask.shape) > 4:
            return "mask rank above 4"
        # ONNX lets the mask broadcast over the query axis; onnxruntime's kernel does not, so
        # a mask not known to span it is expanded to the query length first
        match.values["expand_mask"] = mask is not None and not self._spans_queries(mask, q)
        match.values["scale"] = scale
        return None

    @staticmethod
    def _spans_queries(mask: ir.Value, q: ir.Value) -> bool:
        if mask.shape is None or q.shape is None or len(mask.shape) < 2:
            return False
        m, n = mask.shape[-2], q.shape[-2]
        if isinstance(m, int) or isinstance(n, int):
            return m == n
        return m.value is not None and m.value == n.value

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        qk: ir.Node = match["qk"]
        key = ir.node("Transpose", [qk.inputs[1]], attributes={"perm": [0, 1, 3, 2]})
        q = qk.inputs[0]
        inputs = [q, key.outputs[0], match["v"]]
        new_nodes = [key]
        mask = match["mask"]
        if mask is not None and match.values.get("expand_mask"):
            seq_len = q.shape[-2] if q.shape is not None and len(q.shape) >= 2 else None
            if isinstance(seq_len, int):  # static: a constant, as folding would have left it
                shape = new_initializer(graph, np.array([1, 1, seq_len, 1], np.int64),
                                        "attn_mask_shape")
            else:
                ones = new_initializer(graph, np.array([1, 1], np.int64), "attn_ones")
                one = new_initializer(graph, np.array([1], np.int64), "attn_one")
                seq = ir.node("Shape", [q], attributes={"start": -2, "end": -1})
                target = ir.node("Concat", [ones, seq.outputs[0], one], attributes={"axis": 0})
                new_nodes += [seq, target]
                shape = target.outputs[0]
            expand = ir.node("Expand", [mask, shape])
            new_nodes.append(expand)
            mask = expand.outputs[0]
        if mask is not None:
            inputs.append(mask)
        attention = ir.node("Attention", inputs, attributes={"scale": float(match["scale"])},
                            name=match.root.name)
        ir.convenience.replace_nodes_and_values(
            graph, match.root, match.nodes, [*new_nodes, attention], [match.root.outputs[0]],
            [attention.outputs[0]])
