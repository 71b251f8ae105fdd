"""Pruning: unstructured magnitude sparsity, and structured removal of whole channels.

``magnitude:S`` (``PruneMagnitudePass``) zeroes the fraction S of each Conv/Gemm/MatMul
weight with the smallest |w|. The model keeps its shapes; the report gives the sparsity.
It pays only on backends with sparse kernels, or after compression.

``channels:R`` (``PruneChannelsPass``) removes the fraction R of output channels of
Conv/Gemm layers, giving a smaller dense model that every backend runs faster. Channels are
tracked as *channel spaces*: each prunable Conv/Gemm output opens one; ops that keep
channels in place (BatchNormalization, Relu, pools, Dropout, scalar Mul/Add, Flatten/Reshape
of an ``[N, C, 1, 1]`` tensor) carry the layout of their input to their output; Concat on
axis 1 concatenates layouts (so a consumer of a Concat sees each input at its offset); a
residual Add/Sum unites the spaces of its inputs, which must then keep the *same* channels
(one choice for the whole group, e.g. every Conv writing to a ResNet stage's stream). Any
other reader (a graph output, Softmax, a grouped Conv, a Reshape that mixes channels...)
freezes the spaces it sees.

Per group of united spaces, a channel's importance is the sum over the group's producers of
its weight L1 norm ``||W_p[c]||_1 / mean_c ||W_p[c]||_1`` (normalised so that each producer
counts equally); the ``round((1 - R) * C)`` most important survive (rounded up to a multiple
of 8 from 32 channels on, which keeps SIMD blocking intact). Then producers lose the rows
``W[c]`` and biases ``b[c]``, BatchNormalization loses its per-channel parameters, and every
consumer Conv/Gemm loses the matching input columns ``W[:, c]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from kiln.compiler.passes.quantize import _Builder, constant_array, is_excluded
from kiln.errors import InputError

PRUNABLE = frozenset({"Conv", "Gemm", "MatMul"})
ELEMENTWISE = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid",
                         "HardSwish", "Elu", "Selu", "Gelu", "Erf", "Identity", "Dropout",
                         "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                         "LRN"})


def parse_prune(spec: str) -> tuple[str, float]:
    """``magnitude:0.5`` or ``channels:0.3`` -> (kind, fraction)."""
    kind, _, amount = spec.partition(":")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if kind not in ("magnitude", "channels") or not 0.0 < value < 1.0:
        raise InputError(f"bad --prune {spec!r}: expected magnitude:S or channels:R with a "
                         "fraction between 0 and 1, e.g. magnitude:0.5 or channels:0.3")
    return kind, value


# ------------------------------------------------------------------------------------------
# counting


def _dims(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    dims = [d if isinstance(d, int) else None for d in value.shape]
    return None if any(d is None for d in dims) else dims  # type: ignore[return-value]


def count_macs(model: ir.Model, dims: dict[str, int] | None = None) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul for one inference. Symbolic input dims
    take their value from ``dims`` (by symbol name; default 1), then shapes are inferred on a
    copy of the model."""
    model = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    for v in model.graph.inputs:
        if v.shape is not None:
            v.shape = ir.Shape([d if isinstance(d, int) else (dims or {}).get(str(d), 1)
                                for d in v.shape])
    for node in model.graph:
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
    common.ShapeInferencePass()(model)
    total = 0
    for node in model.graph:
        if node.op_type == "Conv":
            w, y = _dims(node.inputs[1]), _dims(node.outputs[0])
            if w and y:
                total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, y = _dims(node.inputs[0]), _dims(node.outputs[0])
            if a and y:
                k = a[0] if node.op_type == "Gemm" and node.attributes.get("transA") is not None \
                    and node.attributes["transA"].as_int() else a[-1]
                total += int(np.prod(y)) * k
    return total


def count_params(model: ir.Model) -> int:
    """Float parameters in initializers, counted once per node that reads them (so weights
    that deduplication merged, like the light zoo's constant-filled ones, count as written)."""
    total = 0
    for v in model.graph.initializers.values():
        if v.const_value is not None and v.dtype is not None and v.dtype.is_floating_point():
            readers = max(1, len({node for node, _ in v.uses()}))
            total += int(np.prod(v.const_value.shape.numpy())) * readers
    return total


def weight_sparsity(model: ir.Model) -> float:
    zeros = total = 0
    for node in model.graph:
        if node.op_type in PRUNABLE and len(node.inputs) > 1:
            w = constant_array(node.inputs[1])
            if w is not None and w.dtype.kind == "f":
                zeros += int(np.count_nonzero(w == 0))
                total += w.size
    return zeros / total if total else 0.0


# ------------------------------------------------------------------------------------------
# magnitude


@dataclasses.dataclass
class PruneStats:
    layers: int = 0
    groups: int = 0
    frozen_groups: int = 0
    channels_before: int = 0
    channels_after: int = 0
    sparsity: float = 0.0
    frozen_reasons: dict[str, int] = dataclasses.field(default_factory=dict)


def _replace_constant(graph: ir.Graph, b: _Builder, node: ir.Node, index: int,
                      array: np.ndarray) -> None:
    """Give ``node`` its own initializer holding ``array`` at input ``index``."""
    old = node.inputs[index]
    base = old.name if old is not None else f"{node.name}_in{index}"
    name = b.unique(f"{base}_pruned")
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name),
                     type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     shape=ir.Shape(array.shape))
    graph.register_initializer(value)
    node.replace_input_with(index, value)


def _drop_unused(graph: ir.Graph) -> None:
    for name in list(graph.initializers):
        value = graph.initializers[name]
        if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
            graph.initializers.pop(name)


class PruneMagnitudePass(ir.passes.InPlacePass):
    """Zero the ``sparsity`` fraction of smallest-|w| weights of every Conv/Gemm/MatMul."""

    def __init__(self, sparsity: float = 0.5, exclude: Collection[str] = ()) -> None:
        super().__init__()
        if not 0.0 < sparsity < 1.0:
            raise InputError(f"sparsity must be between 0 and 1, got {sparsity}")
        self.sparsity = sparsity
        self.exclude = frozenset(exclude)
        self.stats = PruneStats()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        b = _Builder(graph)
        modified = False
        for node in list(graph):
            if node.op_type not in PRUNABLE or node.domain or is_excluded(node, self.exclude):
                continue
            w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
            if w is None or w.dtype.kind != "f" or w.size < 2:
                continue
            k = int(self.sparsity * w.size)
            if k == 0:
                continue
            threshold = np.partition(np.abs(w).ravel(), k - 1)[k - 1]
            pruned = np.where(np.abs(w) <= threshold, 0, w).astype(w.dtype)
            _replace_constant(graph, b, node, 1, pruned)
            self.stats.layers += 1
            modified = True
        _drop_unused(graph)
        self.stats.sparsity = weight_sparsity(model)
        return ir.passes.PassResult(model, modified=modified)


# ------------------------------------------------------------------------------------------
# channels

Layout = list[tuple[int, int]]  # [(space id, channel count)] along axis 1


class _Spaces:
    """Union-find over channel spaces, with the producers and freeze reasons per space."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.producers: dict[int, list[ir.Node]] = {}
        self.frozen: dict[int, str] = {}

    def new(self, size: int, producer: ir.Node) -> int:
        sid = len(self.parent)
        self.parent.append(sid)
        self.size.append(size)
        self.producers[sid] = [producer]
        return sid

    def find(self, sid: int) -> int:
        while self.parent[sid] != sid:
            self.parent[sid] = self.parent[self.parent[sid]]
            sid = self.parent[sid]
        return sid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.producers[ra] = self.producers.get(ra, []) + self.producers.pop(rb, [])
        if rb in self.frozen:
            self.frozen.setdefault(ra, self.frozen.pop(rb))

    def freeze(self, layout: Layout | None, reason: str) -> None:
        for sid, _ in layout or []:
            self.frozen.setdefault(self.find(sid), reason)


def _out_channels(node: ir.Node) -> int | None:
    """Output channels of a prunable producer (Conv group 1, Gemm without transA)."""
    if node.op_type == "Conv":
        group = node.attributes.get("group")
        if group is not None and group.as_int() != 1:
            return None
        w = constant_array(node.inputs[1])
        return None if w is None or w.ndim < 3 else int(w.shape[0])
    if node.op_type == "Gemm":
        attrs = node.attributes
        if attrs.get("transA") is not None and attrs["transA"].as_int():
            return None
        w = constant_array(node.inputs[1])
        if w is None or w.ndim != 2:
            return None
        trans_b = attrs.get("transB") is not None and attrs["transB"].as_int()
        return int(w.shape[0] if trans_b else w.shape[1])
    return None


def _const(value: ir.Value | None) -> np.ndarray:
    array = constant_array(value)
    assert array is not None, "checked by the analysis"
    return array


def _is_scalar_constant(value: ir.Value | None) -> bool:
    a = constant_array(value)
    return a is not None and a.size == 1


class PruneChannelsPass(ir.passes.InPlacePass):
    """Remove ``ratio`` of the output channels of Conv/Gemm layers (see the module docstring).

    Needs known shapes for Flatten/Reshape after pooling; runs shape inference itself.
    """

    def __init__(self, ratio: float = 0.3, exclude: Collection[str] = (),
                 multiple: int = 8) -> None:
        super().__init__()
        if not 0.0 < ratio < 1.0:
            raise InputError(f"channel ratio must be between 0 and 1, got {ratio}")
        self.ratio = ratio
        self.exclude = frozenset(exclude)
        self.multiple = multiple
        self.stats = PruneStats()
        #: producer node name -> output channels kept (indices into the original channels)
        self.kept: dict[str, np.ndarray] = {}

    # -- analysis ------------------------------------------------------------------------------

    def _analyse(self, graph: ir.Graph) -> tuple[_Spaces, dict[str, Layout],
                                                  list[tuple[ir.Node, int, Layout]]]:
        spaces = _Spaces()
        layouts: dict[str, Layout] = {}
        consumers: list[tuple[ir.Node, int, Layout]] = []  # (node, input index, layout)
        for node in graph:
            ins = [layouts.get(str(v.name)) if v is not None else None for v in node.inputs]
            op = node.op_type
            out_layout: Layout | None = None
            if op in ("Conv", "Gemm") and not node.domain:
                if ins[0] is not None:
                    group = node.attributes.get("group")
                    if op == "Conv" and group is not None and group.as_int() != 1:
                        spaces.freeze(ins[0], "read by a grouped Conv")
                    elif constant_array(node.inputs[1]) is None:
                        spaces.freeze(ins[0], f"{op} with a non-constant weight")
                    elif op == "Gemm" and node.attributes.get("transA") is not None \
                            and node.attributes["transA"].as_int():
                        spaces.freeze(ins[0], "Gemm with transA")
                    else:
                        consumers.append((node, 0, ins[0]))
                for lay in ins[1:]:
                    spaces.freeze(lay, f"{op} weight input")
                channels = _out_channels(node)
                if channels is not None and not is_excluded(node, self.exclude):
                    out_layout = [(spaces.new(channels, node), channels)]
            elif op == "BatchNormalization" or op in ELEMENTWISE:
                for lay in ins[1:]:
                    spaces.freeze(lay, f"{op} parameter")
                if op == "BatchNormalization" and not all(
                        constant_array(v) is not None for v in node.inputs[1:5]):
                    spaces.freeze(ins[0], "BatchNormalization with non-constant parameters")
                else:
                    out_layout = ins[0]
            elif op in ("Add", "Sum", "Mul", "Sub", "Max", "Min") and not node.domain:
                acts = [(v, lay) for v, lay in zip(node.inputs, ins) if lay is not None]
                others = [v for v, lay in zip(node.inputs, ins) if lay is None]
                if others and all(_is_scalar_constant(v) for v in others) and len(acts) == 1:
                    out_layout = acts[0][1]
                elif not others and len(acts) >= 2 and op in ("Add", "Sum", "Max", "Min") \
                        and all(len(lay) == 1 for _, lay in acts) \
                        and len({spaces.size[spaces.find(lay[0][0])] for _, lay in acts}) == 1:
                    for _, lay in acts[1:]:
                        spaces.union(acts[0][1][0][0], lay[0][0])
                    out_layout = acts[0][1]
                else:
                    for _, lay in acts:
                        spaces.freeze(lay, f"{op} that mixes channel layouts")
            elif op == "Concat":
                axis = node.attributes.get("axis")
                if axis is not None and axis.as_int() == 1 and all(
                        lay is not None for lay in ins):
                    out_layout = [seg for lay in ins for seg in lay]  # type: ignore[union-attr]
                else:
                    for lay in ins:
                        spaces.freeze(lay, "Concat off the channel axis or with a fixed input")
            elif op in ("Flatten", "Reshape") and ins[0] is not None:
                shape = node.inputs[0].shape if node.inputs[0] is not None else None
                dims = list(shape) if shape is not None else None
                flat_ok = dims is not None and len(dims) == 4 and dims[2] == dims[3] == 1
                if op == "Flatten":
                    axis = node.attributes.get("axis")
                    flat_ok = flat_ok and (axis is None or axis.as_int() == 1)
                else:
                    target = constant_array(node.inputs[1])
                    flat_ok = flat_ok and target is not None and target.size == 2 and \
                        int(target[1]) in (-1, dims[1] if dims else -2)
                if flat_ok:
                    out_layout = ins[0]
                else:
                    spaces.freeze(ins[0], f"{op} that moves channels")
            else:
                for lay in ins:
                    spaces.freeze(lay, f"read by {op}")
            if out_layout is not None and node.outputs:
                layouts[str(node.outputs[0].name)] = out_layout
                for extra in node.outputs[1:]:  # e.g. Dropout mask, BN running stats
                    if extra.uses():
                        spaces.freeze(out_layout, f"{op} secondary output in use")
        for v in graph.outputs:
            spaces.freeze(layouts.get(str(v.name)), "graph output")
        return spaces, layouts, consumers

    # -- choice and rewrite ----------------------------------------------------------------------

    def _keep(self, channels: int) -> int:
        k = max(1, int(round(channels * (1.0 - self.ratio))))
        if channels >= 32 and self.multiple > 1:
            k = min(channels, -(-k // self.multiple) * self.multiple)
        return k

    @staticmethod
    def _importance(node: ir.Node) -> np.ndarray:
        w = constant_array(node.inputs[1])
        assert w is not None
        if node.op_type == "Gemm":
            trans_b = node.attributes.get("transB") is not None and \
                node.attributes["transB"].as_int()
            w = w if trans_b else w.T
        l1 = np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).astype(np.float64)
        return l1 / max(float(l1.mean()), 1e-12)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        common.ShapeInferencePass()(model)
        spaces, layouts, consumers = self._analyse(graph)
        keep: dict[int, np.ndarray] = {}
        roots = {spaces.find(s) for s in range(len(spaces.parent))}
        for root in roots:
            size = spaces.size[root]
            self.stats.groups += 1
            if root in spaces.frozen:
                self.stats.frozen_groups += 1
                why = spaces.frozen[root]
                self.stats.frozen_reasons[why] = self.stats.frozen_reasons.get(why, 0) + 1
                continue
            k = self._keep(size)
            if k >= size:
                continue
            score = sum(self._importance(p) for p in spaces.producers[root])
            keep[root] = np.sort(np.argsort(-score, kind="stable")[:k])
            self.stats.channels_before += size
            self.stats.channels_after += k
        if not keep:
            return ir.passes.PassResult(model, modified=False)
        b = _Builder(graph)

        def kept_index(layout: Layout) -> np.ndarray | None:
            """Indices kept along axis 1 of a tensor with this layout (None: all)."""
            parts, offset, changed = [], 0, False
            for sid, count in layout:
                root = spaces.find(sid)
                if root in keep:
                    parts.append(keep[root] + offset)
                    changed = True
                else:
                    parts.append(np.arange(count) + offset)
                offset += count
            return np.concatenate(parts) if changed else None

        for root, idx in keep.items():
            for producer in spaces.producers[root]:
                self.kept[str(producer.name)] = idx
                self._prune_outputs(graph, b, producer, idx)
                self.stats.layers += 1
        for node in graph:
            if node.op_type == "BatchNormalization" and node.inputs[0] is not None:
                lay = layouts.get(str(node.inputs[0].name))
                sel = kept_index(lay) if lay else None
                if sel is not None:
                    for i in range(1, 5):
                        _replace_constant(graph, b, node, i, _const(node.inputs[i])[sel])
            if node.op_type == "Reshape" and node.inputs[0] is not None:
                lay = layouts.get(str(node.inputs[0].name))
                sel = kept_index(lay) if lay else None
                target = constant_array(node.inputs[1])
                if sel is not None and target is not None and int(target[1]) != -1:
                    _replace_constant(graph, b, node, 1,
                                      np.array([target[0], sel.size], dtype=target.dtype))
        for node, _index, lay in consumers:
            sel = kept_index(lay)
            if sel is not None:
                self._prune_inputs(graph, b, node, sel)
        # shapes changed along the channel axis: forget them and infer again
        for node in graph:
            for v in node.outputs:
                if not v.is_graph_output():
                    v.shape = None
        _drop_unused(graph)
        common.ShapeInferencePass()(model)
        return ir.passes.PassResult(model, modified=True)

    @staticmethod
    def _prune_outputs(graph: ir.Graph, b: _Builder, node: ir.Node, idx: np.ndarray) -> None:
        w = constant_array(node.inputs[1])
        assert w is not None
        if node.op_type == "Gemm":
            trans_b = node.attributes.get("transB") is not None and \
                node.attributes["transB"].as_int()
            w = w[idx] if trans_b else w[:, idx]
        else:
            w = w[idx]
        _replace_constant(graph, b, node, 1, np.ascontiguousarray(w))
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            bias = constant_array(node.inputs[2])
            if bias is not None and bias.ndim >= 1 and bias.shape[-1] > 1:
                _replace_constant(graph, b, node, 2, np.ascontiguousarray(bias[..., idx]))

    @staticmethod
    def _prune_inputs(graph: ir.Graph, b: _Builder, node: ir.Node, idx: np.ndarray) -> None:
        w = constant_array(node.inputs[1])
        assert w is not None
        if node.op_type == "Gemm":
            trans_b = node.attributes.get("transB") is not None and \
                node.attributes["transB"].as_int()
            w = w[:, idx] if trans_b else w[idx]
        else:
            w = w[:, idx]
        _replace_constant(graph, b, node, 1, np.ascontiguousarray(w))
