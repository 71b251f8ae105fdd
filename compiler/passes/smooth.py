"""Smoothing: move activation outliers into the weights before int8 (SmoothQuant's idea).

Transformer activations have a few channels far larger than the rest; one per-tensor int8
scale for them leaves the other channels with a handful of levels. For ``Y = X W`` with a
constant ``W [K, N]``, and any positive ``s [K]``:

    Y = (X diag(1/s)) (diag(s) W)

is exact. With ``s_k = max|X_k|^a / max|W_k|^(1-a)`` (a = 0.5 by default) the activation
channels and the weight rows end up with comparable ranges, and both quantize well. ``1/s`` is
folded into a producing LayerNormalization's scale and bias when every reader of its output
is smoothed with the same ``s``; otherwise a ``Mul(X, 1/s)`` is inserted once per tensor.
All MatMuls reading one tensor share one ``s`` (max over their weight rows).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import onnx_ir as ir

from kiln.compiler.passes.quantize import _Builder, constant_array, is_excluded


def channel_absmax(tap_values: list[np.ndarray]) -> np.ndarray:
    """max |x| per last-axis channel over a list of arrays."""
    return np.max([np.abs(v.reshape(-1, v.shape[-1])).max(axis=0) for v in tap_values], axis=0)


def smoothable(model: ir.Model, exclude: Collection[str] = ()) -> dict[str, list[ir.Node]]:
    """Activation tensor name -> MatMuls reading it with a constant 2-D weight."""
    out: dict[str, list[ir.Node]] = {}
    for node in model.graph:
        if node.op_type != "MatMul" or node.domain or is_excluded(node, exclude):
            continue
        w = constant_array(node.inputs[1])
        x = node.inputs[0]
        if w is None or w.ndim != 2 or x is None or constant_array(x) is not None:
            continue
        out.setdefault(str(x.name), []).append(node)
    return out


class SmoothActivationsPass(ir.passes.InPlacePass):
    """Rescale MatMul activation channels into the weights (see the module docstring).

    absmax: per-channel max |x| of each activation tensor, from calibration.
    """

    def __init__(self, absmax: Mapping[str, np.ndarray], alpha: float = 0.5,
                 exclude: Collection[str] = ()) -> None:
        super().__init__()
        self.absmax = dict(absmax)
        self.alpha = alpha
        self.exclude = frozenset(exclude)
        self.smoothed: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        b = _Builder(graph)
        groups = smoothable(model, self.exclude)
        modified = False
        for name, nodes in groups.items():
            amax = self.absmax.get(name)
            if amax is None:
                continue
            weights = [constant_array(n.inputs[1]) for n in nodes]
            wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
            if amax.shape != wmax.shape:
                continue
            s = (np.maximum(amax, 1e-5) ** self.alpha /
                 np.maximum(wmax, 1e-5) ** (1 - self.alpha)).astype(np.float32)
            s = np.clip(s, 1e-2, 1e2)
            x = nodes[0].inputs[0]
            assert x is not None  # smoothable() checked it
            if not self._fold_into_layernorm(x, nodes, s):
                inv = b.constant(f"{name}_smooth", (1.0 / s).astype(np.float32))
                mul = b.node("Mul", [x, inv], f"{name}_smoothed")
                mul.outputs[0].dtype = ir.DataType.FLOAT
                mul.outputs[0].shape = x.shape
                producer = x.producer()
                if producer is not None:
                    graph.insert_after(producer, mul)
                else:
                    graph.insert_before(nodes[0], mul)
                for n in nodes:
                    n.replace_input_with(0, mul.outputs[0])
            for n, w in zip(nodes, weights):
                scaled = (w * s[:, None]).astype(np.float32)
                value = b.constant(f"{getattr(n.inputs[1], 'name', n.name)}_smoothed", scaled)
                n.replace_input_with(1, value)
                self.smoothed.append(str(n.name))
            modified = True
        for init in list(graph.initializers):
            v = graph.initializers[init]
            if not v.uses() and not v.is_graph_output() and not v.is_graph_input():
                graph.initializers.pop(init)
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _fold_into_layernorm(x: ir.Value, nodes: list[ir.Node], s: np.ndarray) -> bool:
        producer = x.producer()
        if producer is None or producer.op_type != "LayerNormalization" or x.is_graph_output():
            return False
        if {u for u, _ in x.uses()} != set(nodes):
            return False
        axis = producer.attributes.get("axis")
        if axis is not None and axis.as_int() not in (-1, len(x.shape or []) - 1):
            return False
        for index in (1, 2):
            if len(producer.inputs) <= index or producer.inputs[index] is None:
                continue
            p = constant_array(producer.inputs[index])
            if p is None or p.shape != s.shape:
                return False
        graph = producer.graph
        assert graph is not None
        b = _Builder(graph)
        for index in (1, 2):
            if len(producer.inputs) > index and producer.inputs[index] is not None:
                p = constant_array(producer.inputs[index])
                value = b.constant(f"{getattr(producer.inputs[index], 'name', '')}_smoothed",
                                   (p / s).astype(np.float32))
                producer.replace_input_with(index, value)
        return True
