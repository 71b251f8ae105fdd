"""Fuse Conv/Gemm + bias + residual Add + activation into one kiln-domain node.

    y = act(L(x, W) + b + r)

where L is Conv or Gemm (its bias input already carries b), ``r`` is an optional residual
tensor of exactly y's shape (static, or proven equal dim by dim from the producers when
symbolic: ``symbolic_dims``) and ``act`` one of ACTIVATIONS. The result is
``kiln::FusedConv(X, W, [B], [residual])`` with every Conv attribute, or
``kiln::FusedGemm(A, B, [C], [residual])`` with transA/transB/alpha/beta, plus ``activation``
(a string, "" for none) and the float parameters the activation needs: ``alpha``/``beta`` on
FusedConv, ``activation_alpha``/``activation_beta`` on FusedGemm (whose ``alpha``/``beta``
are Gemm's own):

    Relu          max(y, 0)
    LeakyRelu     y if y >= 0 else alpha * y
    Clip          min(max(y, alpha), beta)
    Sigmoid       1 / (1 + exp(-y))
    SiLU          y * sigmoid(y)
    HardSigmoid   max(0, min(1, alpha * y + beta))
    HardSwish     y * max(0, min(1, y / 6 + 1 / 2))
    Gelu          0.5 * y * (1 + erf(y / sqrt(2)))
    GeluTanh      0.5 * y * (1 + tanh(sqrt(2 / pi) * (y + 0.044715 * y^3)))
    Tanh          tanh(y)

A backend whose BatchNormalization applies a Relu in the same pass over the tensor gets

    BatchNormalization(x, scale, B, mean, var) -> Relu   -> kiln::FusedBatchNorm(x, scale, B,
                                                            mean, var, activation="Relu")

with BatchNormalization's attributes (inference only, float32, no residual).

A MatMul whose A has rank > 2 (a transformer's [batch, tokens, features] Linear), B a 2-D
constant and a constant bias [N] added next is the same FusedGemm with A's leading dims
flattened (``FuseMatMulBiasEpilogue``): the bias and an activation after it go into the
GEMM's epilogue instead of one pass over the output each.

Only backends that run these ops keep them; ``ExpandKilnOpsPass`` writes them back as
standard ONNX for the others, so the two passes are exact inverses up to node names.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from kiln.compiler.capabilities import KILN_DOMAIN
from kiln.compiler.passes._util import (
    attr,
    const,
    is_onnx,
    new_initializer,
    sole_consumer,
    static_shape,
)
from kiln.compiler.passes.rule import Match, Rule
from kiln.compiler.passes.symbolic_dims import same_shape

ACTIVATIONS = ("", "Relu", "LeakyRelu", "Clip", "Sigmoid", "SiLU", "HardSigmoid", "HardSwish",
               "Gelu", "GeluTanh", "Tanh")

_FLOAT_MAX = 3.4028234663852886e38


def activation_of(node: ir.Node, y: ir.Value) -> tuple[str, float, float, list[ir.Node]] | None:
    """Recognize ``node`` (reading y) as an activation: (name, alpha, beta, nodes covered)."""
    if node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is not y:
        return None
    op = node.op_type
    if op == "Relu":
        return "Relu", 0.0, 0.0, [node]
    if op == "Tanh":
        return "Tanh", 0.0, 0.0, [node]
    if op == "Sigmoid":
        return "Sigmoid", 0.0, 0.0, [node]
    if op == "HardSwish":
        return "HardSwish", 0.0, 0.0, [node]
    if op == "LeakyRelu":
        return "LeakyRelu", float(attr(node, "alpha", 0.01)), 0.0, [node]
    if op == "HardSigmoid":
        return "HardSigmoid", float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5)), [
            node]
    if op == "Gelu":
        name = "GeluTanh" if attr(node, "approximate", "none") == "tanh" else "Gelu"
        return name, 0.0, 0.0, [node]
    if op == "Clip":
        if "min" in node.attributes or "max" in node.attributes:  # opset < 11
            lo, hi = float(attr(node, "min", -_FLOAT_MAX)), float(attr(node, "max", _FLOAT_MAX))
        else:
            bounds = []
            for i, default in ((1, -_FLOAT_MAX), (2, _FLOAT_MAX)):
                v = node.inputs[i] if len(node.inputs) > i else None
                if v is None:
                    bounds.append(default)
                    continue
                k = const(v)
                if k is None or k.size != 1:
                    return None
                bounds.append(float(k.reshape(())))
            lo, hi = bounds
        return "Clip", lo, hi, [node]
    return None


class _FuseEpilogue(Rule):
    """Shared matching of ``L -> [Add residual] -> [activation]`` chains."""

    linear_op: str
    fused_op: str

    @property
    def ops(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({self.linear_op})

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, self.linear_op) or len(node.outputs) != 1:
            return None
        y = node.outputs[0]
        nodes = [node]
        residual = None
        nxt = sole_consumer(y)
        if nxt is not None and is_onnx(nxt, "Add") and len(nxt.inputs) == 2 \
                and nxt.inputs[0] is not nxt.inputs[1]:
            other = nxt.inputs[1] if nxt.inputs[0] is y else nxt.inputs[0]
            residual = (nxt, other)
        act = None
        tail = y
        if residual is not None:
            tail = residual[0].outputs[0]
        act = self._find_activation(tail)
        if residual is None and act is None:
            return None
        if residual is not None:
            nodes.append(residual[0])
        if act is not None:
            nodes.extend(act[3])
        return Match(node, nodes, {"residual": residual, "act": act})

    @staticmethod
    def _find_activation(y: ir.Value) -> tuple[str, float, float, list[ir.Node]] | None:
        if y.is_graph_output():
            return None
        users = y.consumers()
        if len(users) == 1:
            return activation_of(users[0], y)
        if len(users) == 2:  # y * gate(y): SiLU, or HardSwish below opset 14
            gate = next((u for u in users if is_onnx(u, "Sigmoid", "HardSigmoid")), None)
            mul = next((u for u in users if is_onnx(u, "Mul")), None)
            if gate is None or mul is None or sole_consumer(gate.outputs[0]) is not mul:
                return None
            if set(mul.inputs) != {y, gate.outputs[0]}:
                return None
            if gate.op_type == "Sigmoid":
                return "SiLU", 0.0, 0.0, [gate, mul]
            alpha, beta = float(attr(gate, "alpha", 0.2)), float(attr(gate, "beta", 0.5))
            if abs(alpha - 1 / 6) <= 1e-6 and abs(beta - 0.5) <= 1e-6:
                return "HardSwish", 0.0, 0.0, [gate, mul]
        return None

    def check(self, match: Match) -> str | None:
        lin = match.root
        dtype = lin.outputs[0].dtype or lin.inputs[0].dtype
        if dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16):
            return f"element type {dtype} is not float, float16 or bfloat16"
        residual = match["residual"]
        if residual is not None:
            add, other = residual
            y_shape, r_shape = static_shape(lin.outputs[0]), static_shape(other)
            if y_shape is not None and r_shape is not None:
                if y_shape != r_shape:
                    return f"residual {list(r_shape)} is not the output shape {list(y_shape)}"
            elif not same_shape(lin.outputs[0], other):
                return "residual shape is not proven equal to the output shape"
            if other.producer() is not None and self._depends_on(other, lin):
                return "residual depends on the fused output"
        return None

    def activation_attributes(self, name: str, alpha: float, beta: float) -> dict[str, str | float]:
        """The fused op's activation attributes. FusedGemm keeps Gemm's own alpha/beta, so
        the activation's are activation_alpha/_beta."""
        return {"activation": name, "activation_alpha": alpha, "activation_beta": beta}

    @staticmethod
    def _depends_on(value: ir.Value, node: ir.Node) -> bool:
        """Whether ``value`` is computed from ``node``'s output (a cycle if fused)."""
        seen: set[int] = set()
        stack = [value.producer()]
        while stack:
            cur = stack.pop()
            if cur is None or id(cur) in seen:
                continue
            if cur is node:
                return True
            seen.add(id(cur))
            stack.extend(v.producer() for v in cur.inputs if v is not None)
        return False

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        lin = match.root
        residual = match["residual"]
        inputs = list(lin.inputs)
        while len(inputs) < 3:
            inputs.append(None)
        if residual is not None:
            inputs.append(residual[1])
        while inputs and inputs[-1] is None:
            inputs.pop()
        self._replace(graph, match, inputs, dict(lin.attributes.items()))

    def _replace(self, graph: ir.Graph, match: Match, inputs: list[ir.Value | None],
                 attributes: dict[str, ir.Attr]) -> None:
        """The matched nodes -> one fused node on ``inputs``, with ``attributes`` and the
        activation's."""
        act = match["act"]
        name, alpha, beta = ("", 0.0, 0.0) if act is None else act[:3]
        extra = self.activation_attributes(name, alpha, beta)
        attributes.update({k: ir.convenience.convert_attribute(k, v) for k, v in extra.items()})
        fused = ir.node(self.fused_op, inputs, attributes=attributes, domain=KILN_DOMAIN,
                        name=match.root.name)
        last = match.nodes[-1]
        ir.convenience.replace_nodes_and_values(
            graph, last, match.nodes, [fused], [last.outputs[0]], [fused.outputs[0]])
        graph.opset_imports.setdefault(KILN_DOMAIN, 1)


class FuseConvEpilogue(_FuseEpilogue):
    """Conv [+ residual Add] [+ activation] -> kiln::FusedConv."""

    name = "FuseConvEpilogue"
    linear_op = "Conv"
    fused_op = "FusedConv"

    def activation_attributes(self, name: str, alpha: float, beta: float) -> dict[str, str | float]:
        return {"activation": name, "alpha": alpha, "beta": beta}


class FuseGemmEpilogue(_FuseEpilogue):
    """Gemm [+ residual Add] [+ activation] -> kiln::FusedGemm."""

    name = "FuseGemmEpilogue"
    linear_op = "Gemm"
    fused_op = "FusedGemm"


def _constant_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The shape of the constant ``value`` holds (as ``const`` finds it), else None."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return tuple(value.const_value.shape)


class FuseMatMulBiasEpilogue(_FuseEpilogue):
    """MatMul(A of rank > 2, B a 2-D constant) + bias [N] [+ activation]
    -> kiln::FusedGemm(A, B, bias); 2-D products are matmul-add-to-gemm's."""

    name = "FuseMatMulBiasEpilogue"
    linear_op = "MatMul"
    fused_op = "FusedGemm"

    def match(self, node: ir.Node) -> Match | None:
        if not is_onnx(node, "MatMul") or len(node.inputs) != 2 or len(node.outputs) != 1:
            return None
        a, b = node.inputs
        # shapes only here (const() would read out every MatMul's weights)
        weights = _constant_shape(b)
        if a is None or a.shape is None or len(a.shape) <= 2 or weights is None \
                or len(weights) != 2:
            return None
        add = sole_consumer(node.outputs[0])
        if add is None or not is_onnx(add, "Add") or len(add.inputs) != 2:
            return None
        bias_value = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
        bias = _constant_shape(bias_value)
        n = weights[1]
        if bias is None or math.prod(bias) != n or len(bias) > len(a.shape) \
                or (bias and bias[-1] != n):
            return None
        # the bias and an activation right after it; a residual Add is left to itself
        # (proving a symbolic residual's shape walks the graph: ~3 ms a Linear on MiniLM,
        # more than the Add it would save)
        act = self._find_activation(add.outputs[0])
        nodes = [node, add, *(act[3] if act is not None else [])]
        return Match(node, nodes, {"residual": None, "act": act, "bias": bias_value})

    def check(self, match: Match) -> str | None:
        dtype = match.root.outputs[0].dtype or match.root.inputs[0].dtype
        if dtype != ir.DataType.FLOAT:
            return f"element type {dtype} is not float"  # FusedGemm's N-D A is float32's
        return super().check(match)

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        lin = match.root
        bias = new_initializer(graph, np.asarray(const(match["bias"]), np.float32).reshape(-1),
                               f"{lin.name or 'matmul'}_bias")
        self._replace(graph, match, [lin.inputs[0], lin.inputs[1], bias], {})


class FuseBatchNormEpilogue(_FuseEpilogue):
    """BatchNormalization -> Relu (its only reader) -> kiln::FusedBatchNorm: one pass."""

    name = "FuseBatchNormRelu"
    linear_op = "BatchNormalization"
    fused_op = "FusedBatchNorm"

    def check(self, match: Match) -> str | None:
        bn = match.root
        if match["residual"] is not None:
            return "a residual Add follows (the kernel applies an activation only)"
        if match["act"][0] != "Relu":
            return f"the activation is {match['act'][0]}, not Relu"
        if int(attr(bn, "training_mode", 0)) or not bn.inputs or bn.inputs[0] is None:
            return "training mode"
        if const(bn.inputs[0]) is not None:
            return "the input is a constant (folded instead)"
        dtype = bn.outputs[0].dtype or bn.inputs[0].dtype
        if dtype not in (None, ir.DataType.FLOAT):
            return f"element type {dtype} is not float"
        return None

    def activation_attributes(self, name: str, alpha: float, beta: float) -> dict[str, str | float]:
        return {"activation": name}
