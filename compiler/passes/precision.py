"""fp16 / bf16 conversion in the IR, with Casts at the fp32 boundaries.

A node runs in the low type when every float input and output of it may carry that type
(its ONNX schema at the model's opset allows it), its op is not overflow- or
precision-prone, the calibrated range of its outputs fits the type, and the user did not keep
it in fp32. Everything else stays fp32, and a Cast sits on every edge that crosses between the
two; graph inputs and outputs keep their fp32 signature.

Kept in fp32 (``ALWAYS_FP32``): reductions and normalisations (a sum of n fp16 values can
overflow 65504, and the mean/variance of LayerNorm/BatchNorm lose their small terms),
Softmax/LogSoftmax (exp of large logits), Exp/Pow/Log/Reciprocal/Sqrt/Div (range blow-up),
and ops whose output type comes from an attribute (Cast, ConstantOfShape, RandomNormal...).
The range rule: a node whose output was observed with ``|x| > limit`` (default 65504 / 2 for
fp16, headroom for the inputs calibration did not see) stays fp32; bf16 has fp32's exponent,
so it needs no range rule, only the op rules.

Weights (initializers, Constant outputs) read only by low-precision nodes are converted in
place; weights of nodes that stay fp32 may still be *stored* in the low type with a Cast up
(``store_weights=True``), which halves their size and lets backends that run bf16 internally
(OpenVINO with an inference-precision hint) read them as such.

``verify`` (in ``convert_precision``) checks the result with the ONNX checker, loads it in
onnxruntime and compares outputs with the fp32 model, refusing NaN/Inf the original did not
produce.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common

from kiln.compiler.accuracy import AccuracyReport
from kiln.compiler.calibrate import Range
from kiln.compiler.passes.quantize import _Builder, constant_array, is_excluded, opset_version
from kiln.errors import InputError

if TYPE_CHECKING:
    from kiln.compiler.target import Target

LOW_TYPES = {"fp16": ir.DataType.FLOAT16, "bf16": ir.DataType.BFLOAT16}
FP16_MAX = 65504.0
ALWAYS_FP32 = frozenset({
    "ReduceSum", "ReduceMean", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "CumSum", "Softmax", "LogSoftmax", "LayerNormalization",
    "BatchNormalization", "InstanceNormalization", "GroupNormalization", "LRN",
    "Exp", "Pow", "Log", "Reciprocal", "Sqrt", "Div", "Erf", "Range",
    "Cast", "CastLike", "ConstantOfShape", "Constant", "RandomNormal", "RandomUniform",
    "RandomNormalLike", "RandomUniformLike", "EyeLike", "Multinomial", "Resize", "Upsample",
    "TopK", "NonMaxSuppression", "RoiAlign",
})


def _type_str(dtype: ir.DataType) -> str:
    return "tensor(float16)" if dtype == ir.DataType.FLOAT16 else "tensor(bfloat16)"


def schema_allows(node: ir.Node, opset: int, dtype: ir.DataType) -> bool:
    """Whether every float input/output slot of ``node`` admits ``dtype`` at ``opset``."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return False
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    want = _type_str(dtype)

    def ok(formals: list, values: list) -> bool:
        for i, v in enumerate(values):
            if v is None or v.dtype != ir.DataType.FLOAT:
                continue
            if not formals:
                return False
            formal = formals[min(i, len(formals) - 1)]
            types = allowed.get(formal.type_str, {formal.type_str})
            if want not in types:
                return False
        return True

    return ok(list(schema.inputs), list(node.inputs)) and \
        ok(list(schema.outputs), list(node.outputs))


@dataclasses.dataclass
class PrecisionStats:
    low_nodes: list[str] = dataclasses.field(default_factory=list)
    fp32_nodes: dict[str, str] = dataclasses.field(default_factory=dict)
    casts: int = 0
    weights: int = 0
    stored_weights: int = 0


def _drop_unused(graph: ir.Graph) -> None:
    for name in list(graph.initializers):
        value = graph.initializers[name]
        if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
            graph.initializers.pop(name)


def _float_values(node: ir.Node) -> list[ir.Value]:
    return [v for v in list(node.inputs) + list(node.outputs)
            if v is not None and v.dtype == ir.DataType.FLOAT]


class ConvertPrecisionPass(ir.passes.InPlacePass):
    """Run every node that safely can in fp16/bf16; Casts on the boundaries.

    precision:     "fp16" or "bf16".
    keep_fp32:     node names or op types forced to fp32 (e.g. found by verification).
    ranges:        calibrated ranges; outputs beyond ``range_limit`` keep their node in fp32.
    supports:      optional extra query ``supports(node, dtype) -> bool`` (a backend's).
    store_weights: store fp32-kept nodes' float weights in the low type with a Cast up.
    Types must be known (run shape inference first); ``stats`` lists every decision.
    """

    def __init__(self, precision: str = "fp16", keep_fp32: Collection[str] = (),
                 ranges: Mapping[str, Range] | None = None, range_limit: float | None = None,
                 supports: Callable[[ir.Node, ir.DataType], bool] | None = None,
                 store_weights: bool = False) -> None:
        super().__init__()
        if precision not in LOW_TYPES:
            raise InputError(f"precision must be one of {sorted(LOW_TYPES)}, got {precision!r}")
        self.precision = precision
        self.low = LOW_TYPES[precision]
        self.keep_fp32 = frozenset(keep_fp32)
        self.ranges = dict(ranges or {})
        self.range_limit = range_limit if range_limit is not None else (
            FP16_MAX / 2 if precision == "fp16" else None)
        self.supports = supports
        self.store_weights = store_weights
        self.stats = PrecisionStats()

    def _why_fp32(self, node: ir.Node, opset: int) -> str | None:
        if not _float_values(node):
            return "no float tensors"
        if node.domain:
            return f"custom domain {node.domain}"
        if is_excluded(node, self.keep_fp32):
            return "kept in fp32 on request"
        if node.op_type in ALWAYS_FP32:
            return "overflow- or precision-prone op"
        if any(v is not None and v.dtype not in (ir.DataType.FLOAT, None) and
               v.dtype.is_floating_point() for v in list(node.inputs) + list(node.outputs)):
            return "mixes other float types"
        if self.range_limit is not None:
            for v in node.outputs:
                rng = self.ranges.get(str(v.name))
                if rng is not None and rng.amax > self.range_limit:
                    return f"calibrated |x| beyond {self.range_limit:g}"
        if not schema_allows(node, opset, self.low):
            return f"ONNX {node.op_type}-{opset} does not admit {self.precision}"
        if self.supports is not None and not self.supports(node, self.low):
            return "backend cannot run it in this type"
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = opset_version(model)
        if any(v.dtype is None for n in graph for v in n.outputs):
            common.ShapeInferencePass()(model)  # the rules need every value's type
        b = _Builder(graph)
        low_nodes = set()
        for node in graph:
            why = self._why_fp32(node, opset)
            if why is None:
                low_nodes.add(node)
                self.stats.low_nodes.append(str(node.name))
            elif why != "no float tensors":
                self.stats.fp32_nodes[str(node.name)] = why
        np_low = np.float16 if self.low == ir.DataType.FLOAT16 else None
        if not low_nodes:
            if self.store_weights:
                self._store_weights(graph, b, low_nodes, np_low)
                _drop_unused(graph)
            return ir.passes.PassResult(model, modified=self.stats.stored_weights > 0)
        converted: dict[str, ir.Value] = {}   # weights in the low type, by original name
        cast_down: dict[str, ir.Value] = {}   # fp32 activation -> low copy
        cast_up: dict[str, ir.Value] = {}     # low activation -> fp32 copy
        inserted: set[ir.Node] = set()

        def low_weight(v: ir.Value, array: np.ndarray) -> ir.Value:
            if v.name not in converted:
                if np_low is not None:
                    data = ir.tensor(array.astype(np_low))
                else:
                    data = ir.tensor(array.astype(ml_dtypes.bfloat16))
                name = b.unique(f"{v.name}_{self.precision}")
                value = ir.Value(name=name, const_value=data, type=ir.TensorType(self.low),
                                 shape=ir.Shape(array.shape))
                graph.register_initializer(value)
                converted[str(v.name)] = value
                self.stats.weights += 1
            return converted[str(v.name)]

        def cast(v: ir.Value, to: ir.DataType, cache: dict[str, ir.Value],
                 before: ir.Node | None) -> ir.Value:
            if v.name not in cache:
                node = b.node("Cast", [v], f"{v.name}_to_{to.name.lower()}", to=int(to))
                node.outputs[0].dtype = to
                node.outputs[0].shape = v.shape
                producer = v.producer()
                if producer is not None:
                    graph.insert_after(producer, node)
                elif before is not None:
                    graph.insert_before(before, node)
                else:
                    graph.insert_before(graph.node(0), node)
                cache[str(v.name)] = node.outputs[0]
                inserted.add(node)
                self.stats.casts += 1
            return cache[str(v.name)]

        for node in list(graph):
            if node not in low_nodes:
                continue
            for i, v in enumerate(node.inputs):
                if v is None or v.dtype != ir.DataType.FLOAT:
                    continue
                array = constant_array(v)
                if array is not None and (v.producer() is None or v.is_initializer()):
                    node.replace_input_with(i, low_weight(v, array))
                elif array is not None and getattr(v.producer(), "op_type", "") == "Constant":
                    node.replace_input_with(i, low_weight(v, array))
                elif v.producer() in low_nodes:
                    continue  # already low once its producer is rewritten
                else:
                    node.replace_input_with(i, cast(v, self.low, cast_down, node))
            for v in node.outputs:
                if v.dtype == ir.DataType.FLOAT:
                    v.dtype = self.low
        # fp32 readers of low values (and the graph outputs) get a Cast up
        for node in list(graph):
            if node in low_nodes or node in inserted:
                continue
            for i, v in enumerate(node.inputs):
                if v is not None and v.dtype == self.low and v.producer() in low_nodes:
                    node.replace_input_with(i, cast(v, ir.DataType.FLOAT, cast_up, node))
        for idx, v in enumerate(list(graph.outputs)):
            if v.dtype == self.low and v.producer() in low_nodes:
                up = cast(v, ir.DataType.FLOAT, cast_up, None)
                name = v.name
                v.name = b.unique(f"{name}_{self.precision}")
                up.name = name
                graph.outputs[idx] = up
        if self.store_weights:
            self._store_weights(graph, b, low_nodes, np_low)
        _drop_unused(graph)
        return ir.passes.PassResult(model, modified=True)

    def _store_weights(self, graph: ir.Graph, b: _Builder, low_nodes: set[ir.Node],
                       np_low: type | None) -> None:
        for node in list(graph):
            if node in low_nodes or node.op_type not in ("Conv", "Gemm", "MatMul",
                                                          "ConvTranspose"):
                continue
            if len(node.inputs) < 2 or node.inputs[1] is None:
                continue
            v = node.inputs[1]
            array = constant_array(v)
            if array is None or array.dtype != np.float32 or not v.is_initializer():
                continue
            data = ir.tensor(array.astype(np_low)) if np_low is not None else \
                ir.tensor(array.astype(ml_dtypes.bfloat16))
            name = b.unique(f"{v.name}_{self.precision}")
            stored = ir.Value(name=name, const_value=data, type=ir.TensorType(self.low),
                              shape=ir.Shape(array.shape))
            graph.register_initializer(stored)
            up = b.node("Cast", [stored], f"{v.name}_to_float", to=int(ir.DataType.FLOAT))
            up.outputs[0].dtype = ir.DataType.FLOAT
            up.outputs[0].shape = ir.Shape(array.shape)
            graph.insert_before(node, up)
            node.replace_input_with(1, up.outputs[0])
            self.stats.stored_weights += 1


# ------------------------------------------------------------------------------------------
# conversion with verification

_MISSING_KERNEL = re.compile(r"implementation for (\w+)\(\d+\) node with name '([^']*)'")


def _function_ops(model: ir.Model, low_nodes: list[str]) -> list[str]:
    names = set(low_nodes)
    opset = opset_version(model)
    out = []
    for node in model.graph:
        if node.name not in names or node.op_type in out:
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
        except onnx.defs.SchemaError:
            continue
        if getattr(schema, "has_function", False) or \
                getattr(schema, "has_context_dependent_function", False):
            out.append(node.op_type)
    return out


@dataclasses.dataclass
class PrecisionReport:
    precision: str
    stats: PrecisionStats
    checker: str
    accuracy: AccuracyReport | None
    runtime_fp32: list[str]
    data_note: str = ""

    def lines(self) -> list[str]:
        s = self.stats
        out = [f"{self.precision}: {len(s.low_nodes)} node(s) in {self.precision}, "
               f"{len(s.fp32_nodes)} kept fp32, {s.casts} Cast(s), {s.weights} weight(s) "
               f"converted, {s.stored_weights} stored in {self.precision}; checker {self.checker}"]
        reasons: dict[str, int] = {}
        for why in s.fp32_nodes.values():
            reasons[why] = reasons.get(why, 0) + 1
        out += [f"  fp32 x{n}: {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
        if self.data_note:
            out.append(f"  {self.data_note}")
        if self.accuracy is not None:
            out += ["  " + line for line in self.accuracy.lines()]
        return out


@dataclasses.dataclass
class PrecisionResult:
    model: ir.Model
    report: PrecisionReport


def target_allows(target: Target | None, precision: str) -> bool:
    """bf16 needs avx512_bf16 or AMX on the target; fp16 is always representable."""
    if precision != "bf16":
        return True
    return target is not None and target.prefers_bf16


def convert_precision(model: ir.Model, target: Target | None, precision: str,
                      samples: list[dict[str, np.ndarray]] | None = None,
                      ranges: Mapping[str, Range] | None = None,
                      keep_fp32: Collection[str] = (), store_weights: bool | None = None,
                      max_runtime_retries: int = 64) -> PrecisionResult:
    """Convert a copy of ``model`` to fp16/bf16 and verify it before returning it.

    Verification: ``onnx.checker`` (full check), an onnxruntime session (nodes onnxruntime has
    no kernel for in the low type are moved back to fp32 and the conversion redone), and on
    ``samples`` the outputs compared with fp32; NaN/Inf the fp32 model did not produce raise
    a ModelError. bf16 raises UnsupportedError unless the target has avx512_bf16 or AMX.
    """
    from kiln.compiler.accuracy import evaluate, onnxruntime_runner
    from kiln.compiler.reference import reference_session
    from kiln.errors import ModelError, UnsupportedError

    if precision not in LOW_TYPES:
        raise InputError(f"precision must be one of {sorted(LOW_TYPES)}, got {precision!r}")
    if not target_allows(target, precision):
        raise UnsupportedError("bf16 needs a CPU with avx512_bf16 or AMX; this target has "
                               "neither (use --precision fp16 or int8)")
    if store_weights is None:
        store_weights = precision == "bf16"
    source = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    if precision == "bf16" and opset_version(source) < 13:
        from kiln.compiler.quantization import ensure_opset

        source = ensure_opset(source, 13)  # Cast and most ops admit bfloat16 from opset 13
    common.ShapeInferencePass()(source)
    if ranges is None and samples and precision == "fp16":
        from kiln.compiler.calibrate import collect_ranges

        ranges = collect_ranges(source, samples, method="minmax")
    keep = set(keep_fp32)
    runtime_fp32: list[str] = []
    for _ in range(max_runtime_retries):
        candidate = ir.serde.deserialize_model(ir.serde.serialize_model(source))
        conv = ConvertPrecisionPass(precision, keep, ranges, store_weights=store_weights)
        conv(candidate)
        proto = ir.serde.serialize_model(candidate)
        try:
            # the graph as written, before onnxruntime's own rewrites add nodes of their own
            reference_session(proto, optimize=False)
            break
        except Exception as exc:  # onnxruntime's own exception types
            # kernels exist per op type: keep every node of that type in fp32 and retry
            found = _MISSING_KERNEL.search(str(exc))
            op = found.group(1) if found else ""
            if found and not found.group(2):
                # a node onnxruntime made by expanding a function op (Clip -> Less, ...):
                # blame the first low-precision op of the model that is such a function
                op = next((t for t in _function_ops(candidate, conv.stats.low_nodes)
                           if t not in keep), "")
            if not op or op in keep:
                raise ModelError(f"the {precision} model does not load in onnxruntime: {exc}") \
                    from exc
            keep.add(op)
            runtime_fp32.append(op)
    else:
        raise ModelError(f"gave up making the {precision} model load in onnxruntime")
    for node in candidate.graph:
        if node.op_type in runtime_fp32 and node.op_type not in keep_fp32:
            conv.stats.fp32_nodes[str(node.name)] = \
                f"onnxruntime has no {precision} kernel for {node.op_type}"
    try:
        onnx.checker.check_model(proto, full_check=True)
        checker = "ok"
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the {precision} model fails the ONNX checker: {exc}") from exc
    report = None
    if samples:
        reference = onnxruntime_runner(model)
        try:
            runner = onnxruntime_runner(proto)
        except Exception:  # noqa: BLE001 - an onnxruntime rewrite without a low-type kernel
            runner = onnxruntime_runner(proto, optimize=False)
        report = evaluate(reference, runner, samples)
        fp32_bad = evaluate(reference, reference, samples[:1]).outputs
        if any(o.nonfinite for o in report.outputs) and not any(o.nonfinite for o in fp32_bad):
            raise ModelError(f"the {precision} model produces NaN/Inf where fp32 does not: "
                             + "; ".join(report.lines()))
    return PrecisionResult(candidate, PrecisionReport(precision, conv.stats, checker, report,
                                                      runtime_fp32))
