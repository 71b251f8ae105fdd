"""INT8 quantization as explicit QuantizeLinear / DequantizeLinear pairs in the IR.

Q/DQ is the one format onnxruntime, OpenVINO and TensorRT 11 all read: each backend fuses
``DQ -> op -> Q`` into its own int8 kernel, or runs the float op between them when it cannot.

Static (``QuantizeStaticPass``), from calibrated ranges:

- activations, per tensor: ``q = clamp(round(x / s) + z)``, ``x' = (q - z) * s``.
  uint8 (asymmetric): ``s = (hi - lo) / 255``, ``z = round(-lo / s)``; int8 (symmetric):
  ``s = max(|lo|, hi) / 127``, ``z = 0``. VNNI (``vpdpbusd``) multiplies u8 by s8, so x86
  targets with VNNI take u8 activations; others take s8.
- weights, per output channel, symmetric int8 in [-127, 127]: ``s_c = max|W_c| / 127``.
  Conv: axis 0; Gemm: axis 0 with transB=1 else 1; MatMul: the last axis (columns).
- bias (Conv input 2, Gemm 1-D C), int32: ``s_c = s_x * s_w[c]``, ``z = 0``, so
  ``acc_c = sum(q_x * q_w) + q_b`` and ``y_c = s_x * s_w[c] * acc_c``.

Each quantized tensor gets one Q/DQ pair right after its producer and every consumer reads the
DQ output (graph outputs keep the float value). Which tensors are quantized depends on the
form (``STATIC_FORMS``, chosen by the backend's ``BackendCaps.static_int8``):

- "chained", for engines that chain integer kernels (onnxruntime's QLinear ops, kiln's native
  QConv): the inputs *and* outputs of quantized ops, so ``DQ -> Conv -> Q`` becomes one kernel
  from int8 to int8. A ConvTranspose is quantized when each output pixel has one tap (kernel
  == stride, the PP-OCR detector's upsampling). A Relu/Clip that is the sole consumer of a
  quantized Conv/ConvTranspose/Gemm/MatMul/Add output is treated as fused: only its output is
  quantized, so backends see ``DQ -> Conv -> Relu -> Q`` and fold the Relu into the requantization.
- "inputs", for OpenVINO: only the activation inputs of quantized ops (Conv/ConvTranspose/
  Gemm/MatMul, Add/Concat and the pools, which it runs on int8), never a Conv's own output nor
  a Relu/Clip's input. Its CPU plugin turns each Q/DQ pair into a FakeQuantize and folds the
  float ops that follow a Conv (per-channel scale, bias, Relu, hard-swish written as
  x*clip(x+3)/6, ...) into that Conv, ending with the next FakeQuantize as its requantization;
  a Q/DQ pair on the Conv's output would cut that chain and leave the tail as a separate
  elementwise kernel. Activations are symmetric (zero point 0): u8 when the range is
  non-negative, s8 otherwise (with asymmetric u8 the PP-OCRv4 detector ran x1.61 over fp32
  instead of x1.93, same run).

Dynamic (``QuantizeDynamicPass``), for MatMul/Gemm-heavy transformers: weights are stored as
per-column int8; activations are quantized at run time:

    x -> DynamicQuantizeLinear -> (x_q u8, s_x, z_x)
    y  = Cast<float>(MatMulInteger(x_q, W_q, z_x, 0)) * (s_x * s_w)      [+ bias]

which is the pattern onnxruntime fuses into one ``DynamicQuantizeMatMul`` kernel. Engines
that quantize activations themselves at run time (OpenVINO's CPU plugin does, per group of 32
values, for fully-connected layers with int8 weights) take the ``"weights"`` form instead:

    y = MatMul(x, DequantizeLinear(W_q, s_w, axis=last))                   [+ bias]

OpenVINO reads it as a compressed-weight fully-connected layer and runs it u8 x s8; an engine
without that path folds the DequantizeLinear back into float weights (no gain, no harm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from kiln.compiler.calibrate import Range
from kiln.compiler.passes.fuse_int8 import one_tap_refusal
from kiln.errors import InputError

if TYPE_CHECKING:
    from kiln.compiler.target import Target

#: Ops whose inputs (and weights) are quantized: the int8 compute.
COMPUTE_OPS = frozenset({"Conv", "Gemm", "MatMul"})
#: Ops that run on int8 directly when their neighbours are quantized.
PASS_THROUGH_OPS = frozenset({"Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
                              "Add", "Concat"})
#: Activations folded into the producing op's requantization.
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip"})
#: Compute ops the chained form quantizes only in one geometry: OpenVINO (the "inputs" form)
#: runs every ConvTranspose on int8 with per-output-channel weights; kiln's native
#: QConvTranspose (chained) runs one whose kernel equals its stride, each output pixel one tap
#: (``fuse_int8.one_tap_refusal``), and an engine without it runs the Q/DQ as written.
GEOMETRY_COMPUTE_OPS = frozenset({"ConvTranspose"})
#: Default op set for convolutional models; transformers usually want {"MatMul", "Gemm"}.
DEFAULT_OPS = COMPUTE_OPS | PASS_THROUGH_OPS | GEOMETRY_COMPUTE_OPS
#: Where static int8 puts activation Q/DQ pairs (BackendCaps.static_int8; module docstring).
STATIC_FORMS = ("chained", "inputs")
#: How activations may be stored (``QuantScheme.activation``).
ACTIVATION_TYPES = ("uint8", "int8", "symmetric")
MIN_OPSET = 13  # per-axis QuantizeLinear / DequantizeLinear


@dataclasses.dataclass(frozen=True)
class QuantScheme:
    """How activations are stored: ``uint8`` asymmetric, ``int8`` symmetric, or ``symmetric``
    (zero point 0; uint8 for a non-negative range, int8 otherwise)."""

    activation: str = "uint8"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATION_TYPES:
            raise InputError(f"activation type must be one of {ACTIVATION_TYPES}, got "
                             f"{self.activation!r}")


def scheme_for(target: Target | None, form: str = "chained") -> QuantScheme:
    """u8 activations x s8 weights where the CPU has VNNI (or is x86 without a stated
    preference); s8 x s8 elsewhere (e.g. ARM sdot). The "inputs" form (OpenVINO) takes
    symmetric activations, whose signedness follows each range."""
    if form == "inputs":
        return QuantScheme("symmetric")
    if target is None:
        return QuantScheme("uint8")
    if any(target.has(f) for f in ("avx512_vnni", "amx", "avx2", "avx512f")):
        return QuantScheme("uint8")
    return QuantScheme("int8")


def opset_version(model: ir.Model) -> int:
    return int(model.opset_imports.get("", model.graph.opset_imports.get("", 1)))


def is_excluded(node: ir.Node, exclude: Collection[str]) -> bool:
    """``exclude`` lists node names and op types."""
    return bool(exclude) and (node.name in exclude or node.op_type in exclude)


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value as a numpy array when it is an initializer or a Constant's output."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and not producer.domain:
        attr = producer.attributes.get("value")
        if attr is not None:
            return attr.as_tensor().numpy()
    return None


def _overlapping_taps(node: ir.Node) -> str | None:
    """Why a ConvTranspose's output pixels may take more than one tap (None: one each)."""
    w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 4:
        return "the weights are not a constant of rank 4"
    kernel = tuple(int(d) for d in w.shape[2:])
    attr = node.attributes.get("kernel_shape")
    if attr is not None and tuple(attr.as_ints()) != kernel:
        return "kernel_shape is not W's"
    return one_tap_refusal(node, kernel)


def weight_axis(node: ir.Node, index: int, rank: int) -> int | None:
    """Per-channel axis of the constant input ``index`` of ``node`` (None: per tensor)."""
    if node.op_type == "Conv" and index == 1:
        return 0
    if node.op_type == "ConvTranspose" and index == 1:  # [C_in, C_out / group, kh, kw]
        group = node.attributes.get("group")
        return 1 if group is None or group.as_int() == 1 else None
    if node.op_type == "Gemm" and index == 1:
        trans_b = node.attributes.get("transB")
        return 0 if trans_b is not None and trans_b.as_int() else 1
    if node.op_type == "MatMul" and index == 1 and rank == 2:
        return 1
    return None


def quantize_weight(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 in [-127, 127]; returns (w_q, scale) with scale per ``axis``."""
    w = w.astype(np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=red).astype(np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def activation_params(rng: Range, scheme: QuantScheme) -> tuple[np.float32, np.ndarray]:
    """(scale, zero point) for one activation range."""
    if scheme.activation == "symmetric" and rng.lo >= 0:
        scale = np.float32(rng.hi / 255.0 if rng.hi > 0 else 1.0)
        return scale, np.array(0, dtype=np.uint8)
    if scheme.activation == "uint8":
        span = rng.hi - rng.lo
        scale = np.float32(span / 255.0 if span > 0 else 1.0)
        zp = np.uint8(np.clip(np.rint(-rng.lo / scale), 0, 255))
        return scale, np.array(zp, dtype=np.uint8)
    amax = rng.amax
    scale = np.float32(amax / 127.0 if amax > 0 else 1.0)
    return scale, np.array(0, dtype=np.int8)


class _Builder:
    """Adds initializers and nodes to a graph under unique names."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.names = {v.name for v in graph.initializers.values()}
        for node in graph.all_nodes():
            self.names.update(v.name for v in node.outputs if v.name)
            if node.name:
                self.names.add(node.name)
        self.names.update(v.name for v in graph.inputs)

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def constant(self, base: str, array: np.ndarray) -> ir.Value:
        name = self.unique(base)
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         shape=ir.Shape(array.shape))
        self.graph.register_initializer(value)
        return value

    def node(self, op: str, inputs: Iterable[ir.Value | None], base: str, *,
             outputs: int = 1, domain: str = "", **attrs: Any) -> ir.Node:
        node = ir.Node(domain, op, list(inputs), attributes=[
            ir.convenience.convert_attribute(k, v) for k, v in attrs.items()],
            num_outputs=outputs, name=self.unique(base))
        for i, out in enumerate(node.outputs):
            out.name = self.unique(f"{base}_out{i}" if outputs > 1 else base)
        return node


def sv_of(dq_output: ir.Value) -> np.ndarray:
    """The scale array of the DequantizeLinear producing ``dq_output``."""
    producer = dq_output.producer()
    assert producer is not None and producer.inputs[1] is not None
    scale = producer.inputs[1].const_value
    assert scale is not None
    return scale.numpy()


def _float(value: ir.Value) -> bool:
    return value.dtype in (ir.DataType.FLOAT, None)


@dataclasses.dataclass
class QuantizeStats:
    nodes: list[str] = dataclasses.field(default_factory=list)
    activations: int = 0
    weights: int = 0
    biases: int = 0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


class QuantizeStaticPass(ir.passes.InPlacePass):
    """Insert Q/DQ for calibrated activations and per-channel int8 weights.

    ranges:   Range per tensor name, from ``kiln.compiler.calibrate.collect_ranges``.
    scheme:   activation storage (u8 asymmetric, s8 symmetric, or symmetric by sign).
    op_types: which ops to quantize (compute + pass-through); ``exclude``: node names or op
              types kept in fp32. After the pass, ``stats`` says what was quantized and why
              nodes were skipped. ``form``: "chained" or "inputs" (module docstring).
    """

    def __init__(self, ranges: Mapping[str, Range], scheme: QuantScheme | None = None,
                 op_types: Collection[str] = DEFAULT_OPS,
                 exclude: Collection[str] = (), form: str = "chained") -> None:
        super().__init__()
        if form not in STATIC_FORMS:
            raise InputError(f"unknown static int8 form {form!r}; one of {STATIC_FORMS}")
        self.form = form
        self.ranges = dict(ranges)
        self.scheme = scheme or QuantScheme()
        self.compute_ops = COMPUTE_OPS | GEOMETRY_COMPUTE_OPS
        self.op_types = frozenset(op_types)
        self.exclude = frozenset(exclude)
        self.stats = QuantizeStats()

    def requires(self, model: ir.Model) -> None:
        if opset_version(model) < MIN_OPSET:
            raise ir.passes.PreconditionError(
                f"quantization needs ai.onnx opset >= {MIN_OPSET} (per-axis Q/DQ); the model "
                f"has {opset_version(model)}: upgrade it first")

    # -- which nodes and tensors --------------------------------------------------------------

    def _candidates(self, graph: ir.Graph) -> set[ir.Node]:
        chosen = set()
        for node in graph:
            if node.domain or node.op_type not in self.op_types:
                continue
            if is_excluded(node, self.exclude):
                self.stats.skipped[str(node.name)] = "excluded"
                continue
            if self.form == "chained" and node.op_type == "ConvTranspose" \
                    and (why := _overlapping_taps(node)) is not None:
                self.stats.skipped[str(node.name)] = f"chained int8 ConvTranspose: {why}"
                continue
            acts = [v for i, v in enumerate(node.inputs) if v is not None and _float(v)
                    and not self._is_param(node, i)]
            if not acts:
                self.stats.skipped[str(node.name)] = "no float activation input"
                continue
            missing = [v.name for v in acts if v.name not in self.ranges]
            if missing:
                self.stats.skipped[str(node.name)] = f"no calibrated range for {missing[0]}"
                continue
            chosen.add(node)
        # pass-through ops only pay off between quantized neighbours: prune to a fixpoint
        changed = True
        while changed:
            changed = False
            for node in list(chosen):
                if node.op_type in self.compute_ops:
                    continue
                fed = any(v is not None and (v.producer() in chosen or v.is_graph_input())
                          for v in node.inputs)
                feeds = any(user in chosen for out in node.outputs for user, _ in out.uses())
                if node.op_type == "Add" and any(constant_array(v) is not None
                                                 for v in node.inputs):
                    fed = False
                if not (fed and feeds):
                    chosen.discard(node)
                    changed = True
        return chosen

    def _is_param(self, node: ir.Node, index: int) -> bool:
        """Weight / bias / attribute-like inputs: constants of compute ops, Clip bounds."""
        value = node.inputs[index]
        if node.op_type == "Clip" and index > 0:
            return True
        if node.op_type in self.compute_ops and constant_array(value) is not None:
            return True
        return False

    def _tensors(self, graph: ir.Graph, chosen: set[ir.Node]) -> list[ir.Value]:
        out: dict[str, ir.Value] = {}
        for node in graph:
            if node not in chosen:
                continue
            if self.form == "inputs" and node.op_type in FUSED_ACTIVATIONS:
                continue  # a Conv's post-op in OpenVINO: quantized where the next op reads
            for i, v in enumerate(node.inputs):
                if v is not None and _float(v) and not self._is_param(node, i):
                    if not self._fused_away(v, chosen):
                        out.setdefault(str(v.name), v)
            if self.form == "inputs":
                continue
            for v in node.outputs:
                users = [u for u, _ in v.uses()]
                if not _float(v) or v.name not in self.ranges or self._fused_away(v, chosen):
                    continue
                if node.op_type == "Conv" or any(u in chosen for u in users):
                    out.setdefault(v.name, v)
        return [v for v in out.values() if v.name in self.ranges]

    @staticmethod
    def _fused_away(value: ir.Value, chosen: set[ir.Node]) -> bool:
        producer = value.producer()
        users = [u for u, _ in value.uses()]
        return (producer in chosen
                and producer.op_type in COMPUTE_OPS | GEOMETRY_COMPUTE_OPS | {"Add"}
                and len(users) == 1 and users[0] in chosen
                and users[0].op_type in FUSED_ACTIVATIONS and not value.is_graph_output())

    # -- rewriting -----------------------------------------------------------------------------

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        b = _Builder(graph)
        chosen = self._candidates(graph)
        if not chosen:
            return ir.passes.PassResult(model, modified=False)
        act_scale: dict[str, np.float32] = {}
        for value in self._tensors(graph, chosen):
            scale, zp = activation_params(self.ranges[str(value.name)], self.scheme)
            s = b.constant(f"{value.name}_scale", np.array(scale, dtype=np.float32))
            z = b.constant(f"{value.name}_zero_point", zp)
            q = b.node("QuantizeLinear", [value, s, z], f"{value.name}_q")
            dq = b.node("DequantizeLinear", [q.outputs[0], s, z], f"{value.name}_dq")
            dq.outputs[0].dtype = ir.DataType.FLOAT
            dq.outputs[0].shape = value.shape
            act_scale[str(dq.outputs[0].name)] = scale
            q.outputs[0].dtype = ir.DataType.from_numpy(zp.dtype)
            q.outputs[0].shape = value.shape
            # Every reader but q takes the dequantized value; a graph output stays the exact
            # float value (replace_all_uses_with would have to move the output too).
            for user, index in list(value.uses()):
                if user is not q:
                    user.replace_input_with(index, dq.outputs[0])
            producer = value.producer()
            if producer is not None:
                graph.insert_after(producer, [q, dq])
            else:
                graph.insert_before(graph.node(0), [q, dq])
            self.stats.activations += 1
        weights: dict[tuple[str, int | None], ir.Value] = {}
        for node in list(graph):
            if node not in chosen or node.op_type not in self.compute_ops:
                continue
            self.stats.nodes.append(str(node.name))
            w_scale = None
            for i, v in enumerate(node.inputs):
                if v is None or not self._is_param(node, i) or i == 2:
                    continue
                w = constant_array(v)
                if w is None or w.dtype != np.float32:
                    continue
                axis = weight_axis(node, i, w.ndim)
                key = (str(v.name), axis)
                if key not in weights:
                    wq, sc = quantize_weight(w, axis)
                    qv = b.constant(f"{v.name}_quantized", wq)
                    sv = b.constant(f"{v.name}_scale", sc)
                    zv = b.constant(f"{v.name}_zero_point", np.zeros_like(sc, dtype=np.int8))
                    attrs: dict[str, Any] = {} if axis is None else {"axis": axis}
                    dq = b.node("DequantizeLinear", [qv, sv, zv], f"{v.name}_dq", **attrs)
                    dq.outputs[0].dtype = ir.DataType.FLOAT
                    dq.outputs[0].shape = ir.Shape(w.shape)
                    graph.insert_before(node, dq)
                    weights[key] = dq.outputs[0]
                    self.stats.weights += 1
                node.replace_input_with(i, weights[key])
                if i == 1:
                    w_scale = sv_of(weights[key])
            self._quantize_bias(b, graph, node, w_scale, act_scale)
        # initializers only the quantized copies use now
        for name in list(graph.initializers):
            value = graph.initializers[name]
            if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
                graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=True)

    def _quantize_bias(self, b: _Builder, graph: ir.Graph, node: ir.Node,
                       w_scale: np.ndarray | None, act_scale: Mapping[str, np.float32]) -> None:
        if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or w_scale is None:
            return
        bias_v = node.inputs[2]
        bias = constant_array(bias_v)
        x = node.inputs[0]
        if bias is None or bias.ndim != 1 or x is None or bias_v is None \
                or str(x.name) not in act_scale:
            return
        scale = (np.float32(act_scale[str(x.name)]) * w_scale).astype(np.float32)
        if scale.size not in (1, bias.size):
            return
        q = int32_bias(bias, scale)
        qv = b.constant(f"{bias_v.name}_quantized", q)
        sv = b.constant(f"{bias_v.name}_scale", np.broadcast_to(scale, bias.shape).copy())
        zv = b.constant(f"{bias_v.name}_zero_point", np.zeros(bias.shape, dtype=np.int32))
        dq = b.node("DequantizeLinear", [qv, sv, zv], f"{bias_v.name}_dq", axis=0)
        dq.outputs[0].dtype = ir.DataType.FLOAT
        dq.outputs[0].shape = ir.Shape(bias.shape)
        graph.insert_before(node, dq)
        node.replace_input_with(2, dq.outputs[0])
        self.stats.biases += 1


#: How dynamic int8 reaches the engine: "integer" (DynamicQuantizeLinear + MatMulInteger) or
#: "weights" (int8 weights behind DequantizeLinear; the engine quantizes activations itself).
DYNAMIC_FORMS = ("integer", "weights")


class QuantizeDynamicPass(ir.passes.InPlacePass):
    """int8 weights for MatMul/Gemm with a constant 2-D weight; activations quantized at run
    time (see the module docstring). ``exclude`` lists node names or op types."""

    def __init__(self, op_types: Collection[str] = ("MatMul", "Gemm"),
                 exclude: Collection[str] = (), form: str = "integer") -> None:
        super().__init__()
        if form not in DYNAMIC_FORMS:
            raise ValueError(f"unknown dynamic quantization form {form!r}; one of "
                             f"{DYNAMIC_FORMS}")
        self.op_types = frozenset(op_types)
        self.exclude = frozenset(exclude)
        self.form = form
        self.stats = QuantizeStats()

    def requires(self, model: ir.Model) -> None:
        if opset_version(model) < 11:
            raise ir.passes.PreconditionError("dynamic quantization needs ai.onnx opset >= 11")

    def _weight(self, node: ir.Node) -> np.ndarray | None:
        """The [K, N] float weight, or None when the node does not fit."""
        if len(node.inputs) < 2 or node.inputs[0] is None or not _float(node.inputs[0]):
            return None
        w = constant_array(node.inputs[1])
        if w is None or w.dtype != np.float32 or w.ndim != 2:
            return None
        if node.op_type == "Gemm":
            attrs = node.attributes
            if attrs.get("transA") is not None and attrs["transA"].as_int():
                return None
            for name in ("alpha", "beta"):
                if attrs.get(name) is not None and attrs[name].as_float() != 1.0:
                    return None
            if attrs.get("transB") is not None and attrs["transB"].as_int():
                w = w.T
        return np.ascontiguousarray(w)

    @staticmethod
    def _integer_matmul(b: _Builder, x: tuple[ir.Value, ir.Value, ir.Value], qv: ir.Value,
                        zv: ir.Value, sv: ir.Value, node: ir.Node,
                        new: list[ir.Node]) -> ir.Value:
        """MatMulInteger on the run-time quantized x, rescaled to float; nodes go to ``new``."""
        xq, xs, xz = x
        mmi = b.node("MatMulInteger", [xq, qv, xz, zv], f"{node.name}_matmul_integer")
        mmi.outputs[0].dtype = ir.DataType.INT32
        cast = b.node("Cast", [mmi.outputs[0]], f"{node.name}_cast", to=ir.DataType.FLOAT)
        cast.outputs[0].dtype = ir.DataType.FLOAT
        scale = b.node("Mul", [xs, sv], f"{node.name}_scale")
        scale.outputs[0].dtype = ir.DataType.FLOAT
        out = b.node("Mul", [cast.outputs[0], scale.outputs[0]], f"{node.name}_rescaled")
        out.outputs[0].dtype = ir.DataType.FLOAT
        new += [mmi, cast, scale, out]
        return out.outputs[0]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        b = _Builder(graph)
        modified = False
        shared_x: dict[str, tuple[ir.Value, ir.Value, ir.Value]] = {}
        for node in list(graph):
            if node.domain or node.op_type not in self.op_types:
                continue
            if is_excluded(node, self.exclude):
                self.stats.skipped[str(node.name)] = "excluded"
                continue
            w = self._weight(node)
            if w is None:
                self.stats.skipped[str(node.name)] = "weight is not a constant 2-D float tensor"
                continue
            x = node.inputs[0]
            assert x is not None  # _weight checked it
            wq, ws = quantize_weight(w, axis=1)
            qv = b.constant(f"{node.name}_weight_quantized", wq)
            zv = b.constant(f"{node.name}_weight_zero_point", np.zeros(ws.shape, np.int8))
            sv = b.constant(f"{node.name}_weight_scale", ws)
            new: list[ir.Node] = []
            key_x = str(x.name)
            if self.form == "weights":
                dq = b.node("DequantizeLinear", [qv, sv, zv], f"{node.name}_weight_dq",
                            axis=1)
                dq.outputs[0].dtype = ir.DataType.FLOAT
                dq.outputs[0].shape = ir.Shape(w.shape)
                mm = b.node("MatMul", [x, dq.outputs[0]], f"{node.name}_int8_weights")
                mm.outputs[0].dtype = ir.DataType.FLOAT
                new += [dq, mm]
                result = mm.outputs[0]
            elif key_x not in shared_x:
                dql = b.node("DynamicQuantizeLinear", [x], f"{x.name}_dynamic_q", outputs=3)
                dql.outputs[0].dtype = ir.DataType.UINT8
                dql.outputs[1].dtype = ir.DataType.FLOAT
                dql.outputs[2].dtype = ir.DataType.UINT8
                new.append(dql)
                shared_x[key_x] = (dql.outputs[0], dql.outputs[1], dql.outputs[2])
            if self.form == "integer":
                result = self._integer_matmul(b, shared_x[key_x], qv, zv, sv, node, new)
            if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
                add = b.node("Add", [result, node.inputs[2]], f"{node.name}_bias")
                add.outputs[0].dtype = ir.DataType.FLOAT
                new.append(add)
                result = add.outputs[0]
            old = node.outputs[0]
            result.shape = old.shape
            graph.insert_before(node, new)
            was_output = old.is_graph_output()
            old.replace_all_uses_with(result, replace_graph_outputs=True)
            if was_output:
                name = old.name
                old.name = b.unique(f"{name}_fp32")
                result.name = name
            graph.remove(node, safe=True)
            self.stats.nodes.append(str(node.name))
            self.stats.weights += 1
            modified = True
        for name in list(graph.initializers):
            value = graph.initializers[name]
            if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
                graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=modified)


def int32_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``bias / scale`` rounded and saturated to int32, in float64: float32 cannot hold
    2**31 - 1, so a clip there rounds up to 2**31 and the cast wraps a large positive bias to
    the most negative int32."""
    ratio = np.rint(bias.astype(np.float64) / scale.astype(np.float64))
    return np.clip(ratio, -(2**31), 2**31 - 1).astype(np.int32)
