"""What the native backend really runs: (domain, op) -> element types and attribute checks.

The table mirrors the C++ kernels under ``src/ops``: a node is claimed only when its op has
a kernel, every input and output has an element type that kernel handles, and its
attributes are ones the kernel implements. ``refusal`` says which of these failed.
Element types that are not known yet (no shape inference) are accepted; the kernel then
checks them at run time and raises a kiln error naming the node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import onnx_ir as ir

from kiln.backends.native.dtypes import NARROW_TYPES

DT = ir.DataType
FLOAT = frozenset({DT.FLOAT})
FLOATS = frozenset({DT.FLOAT, DT.DOUBLE})
INTS = frozenset({DT.INT64, DT.INT32, DT.INT16, DT.INT8, DT.UINT64, DT.UINT32, DT.UINT16,
                  DT.UINT8})
NUMERIC = FLOATS | INTS
NUMERIC_BOOL = NUMERIC | {DT.BOOL}
ANY = NUMERIC_BOOL | {DT.FLOAT16}
CASTABLE = ANY | NARROW_TYPES   # Cast/CastLike also convert to and from the narrow types
INDEX = frozenset({DT.INT64, DT.INT32})

ACTIVATIONS = ("", "Relu", "LeakyRelu", "Clip", "Sigmoid", "SiLU", "HardSigmoid", "HardSwish",
               "Gelu", "GeluTanh", "Tanh")

Check = Callable[[ir.Node], "str | None"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """types: element types allowed for the data input (input 0 unless `data` says); every
    other input and output must have the same type, except `index_inputs` (int64/int32) and
    the `free_inputs` / `free_outputs` the kernel types itself. check: attribute test
    returning the reason for a refusal.
    """

    types: frozenset
    data: int = 0
    index_inputs: tuple[int, ...] = ()
    free_inputs: tuple[int, ...] = ()   # inputs whose type is not constrained here
    free_outputs: tuple[int, ...] = ()
    check: Check | None = None
    narrow_outputs: frozenset = frozenset()  # narrow types the kernel's free outputs may have


def _attr(node: ir.Node, key: str, default: object = None) -> object:
    attr = node.attributes.get(key)
    return default if attr is None else attr.value


def _one_of(key: str, allowed: tuple[str, ...], default: str) -> Check:
    def check(node: ir.Node) -> str | None:
        value = _attr(node, key, default)
        return None if value in allowed else f"{key}={value!r} (native implements {allowed})"
    return check


def _all(*checks: Check) -> Check:
    def check(node: ir.Node) -> str | None:
        for c in checks:
            reason = c(node)
            if reason:
                return reason
        return None
    return check


def _activation(node: ir.Node) -> str | None:
    act = _attr(node, "activation", "")
    return None if act in ACTIVATIONS else f"activation={act!r} is not one of {ACTIVATIONS}"


#: What the int8 kernels take (``NativeBackend.caps`` tells the compiler the same): the
#: epilogues of QGemm / QConv, which grouped convolutions QConv runs (one of
#: ``capabilities.QCONV_GROUPS``) and whether QConv / QGemm apply a byte table (input 8).
INT8_ACTIVATIONS = frozenset({"Relu"})
QCONV_GROUPS = "depthwise"
INT8_BYTE_TABLE = True


def _int8_epilogue(node: ir.Node) -> str | None:
    reason = _one_of("activation", ("", *sorted(INT8_ACTIVATIONS)), "")(node)
    group = int(_attr(node, "group", 1))  # type: ignore[call-overload]
    if reason is None and group != 1:
        w = node.inputs[1] if len(node.inputs) > 1 else None
        shape = list(w.shape) if w is not None and w.shape is not None else None
        if shape is None or shape[:2] != [group, 1]:
            return (f"group={group} on int8 with weights {shape}: the QConv kernel runs one "
                    "group or depthwise (group == channels, one filter each)")
    return reason


def _batchnorm(node: ir.Node) -> str | None:
    if _attr(node, "training_mode", 0):
        return "training_mode=1"
    if any(o is not None and o.uses() for o in node.outputs[1:]):
        return "training-mode outputs (running mean/var) are used"
    return None


def _resize(node: ir.Node) -> str | None:
    reason = _all(
        _one_of("mode", ("nearest", "linear", "bilinear", "cubic"), "nearest"),
        _one_of("coordinate_transformation_mode",
                ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                 "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"), "half_pixel"),
        _one_of("nearest_mode", ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"),
                "round_prefer_floor"),
        _one_of("keep_aspect_ratio_policy", ("stretch", "not_larger", "not_smaller"), "stretch"),
    )(node)
    if reason:
        return reason
    if node.op_type == "Upsample" and _attr(node, "mode", "nearest") == "cubic":
        return "mode='cubic' on Upsample (cubic needs Resize from opset 11)"
    if _attr(node, "antialias", 0) and _attr(node, "mode", "nearest") == "nearest":
        return "antialias=1 with mode='nearest' (antialias is defined for linear and cubic)"
    return None


def _cast(node: ir.Node) -> str | None:
    to = _attr(node, "to")
    try:
        target = DT(int(to))
    except (TypeError, ValueError):
        return f"to={to!r}"
    if target not in CASTABLE:
        return f"cast to {target.name}"
    if _attr(node, "round_mode", "up") not in ("up", "down", "nearest"):
        return f"round_mode={_attr(node, 'round_mode')!r}"
    return None


def _cast_like_target(node: ir.Node) -> str | None:
    target = _dtype(node.inputs[1]) if len(node.inputs) > 1 else None
    return None if target is None or target in CASTABLE else f"cast to {target.name}"


def _bit_cast(node: ir.Node) -> str | None:
    reason = _cast(node)
    if reason is not None:
        return reason
    source = _dtype(node.inputs[0]) if node.inputs else None
    target = DT(int(_attr(node, "to")))
    if source is not None and source.itemsize != target.itemsize:
        return f"bitcast from {source.name} to {target.name}: the widths differ"
    return None


def _constant_of_shape(node: ir.Node) -> str | None:
    value = _attr(node, "value")
    if value is not None and value.dtype not in ANY:
        return f"value of type {value.dtype.name}"
    return None


def _dropout(node: ir.Node) -> str | None:
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        v = node.inputs[2]
        if v.const_value is None or bool(v.const_value.numpy().reshape(-1)[0]):
            return "training_mode input that is not a constant false"
    return None


def _pad(node: ir.Node) -> str | None:
    return _one_of("mode", ("constant", "reflect", "edge", "wrap"), "constant")(node)


def _depth_to_space(node: ir.Node) -> str | None:
    return _one_of("mode", ("DCR", "CRD"), "DCR")(node)


def _auto_pad(node: ir.Node) -> str | None:
    return _one_of("auto_pad", ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"), "NOTSET")(node)


def _recurrent(default_activations: list[str]) -> Check:
    """LSTM / GRU / RNN: the default activations only, any direction."""
    def check(node: ir.Node) -> str | None:
        acts = _attr(node, "activations")
        directions = 2 if _attr(node, "direction", "forward") == "bidirectional" else 1
        if acts is not None and list(acts) != default_activations * directions:
            return (f"activations={list(acts)} (native runs "
                    f"{', '.join(default_activations)})")
        return _one_of("direction", ("forward", "reverse", "bidirectional"), "forward")(node)
    return check


def _pow(node: ir.Node) -> str | None:
    exponent = _dtype(node.inputs[1]) if len(node.inputs) > 1 else None
    if exponent is not None and exponent not in (DT.FLOAT, DT.DOUBLE, DT.INT64, DT.INT32):
        return f"exponent of element type {exponent.name}"
    return None


def _reduction(node: ir.Node) -> str | None:
    return _one_of("reduction", ("none", "add", "mul", "max", "min"), "none")(node)


def _gelu(node: ir.Node) -> str | None:
    return _one_of("approximate", ("none", "tanh"), "none")(node)


def _conv_fused(node: ir.Node) -> str | None:
    prologue = _attr(node, "prologue", "")
    if prologue not in ("", "affine", "affine_relu"):
        return f"prologue={prologue!r} is not 'affine' or 'affine_relu'"
    if prologue and (len(node.inputs) != 6 or None in node.inputs[4:]):
        return "a prologue needs its scale and shift as inputs 5 and 6"
    return _auto_pad(node) or _activation(node)


def _unblocked(node: ir.Node) -> str | None:
    return "blocked quantization (block_size)" if _attr(node, "block_size", 0) else None


QUANTIZED = frozenset({DT.UINT8, DT.INT8, DT.UINT16, DT.INT16, DT.UINT4, DT.INT4, DT.UINT2,
                       DT.INT2, DT.FLOAT8E4M3FN, DT.FLOAT8E4M3FNUZ, DT.FLOAT8E5M2,
                       DT.FLOAT8E5M2FNUZ, DT.FLOAT4E2M1})


def _float_scale(node: ir.Node) -> str | None:
    scale = _dtype(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is not None and scale != DT.FLOAT:
        return f"scale of element type {scale.name} (native runs float32 scales)"
    return _unblocked(node)


def _quantize(node: ir.Node) -> str | None:
    out = _dtype(node.outputs[0]) if node.outputs else None
    if out is not None and out not in QUANTIZED:
        return f"QuantizeLinear to {out.name}"
    return _float_scale(node)


def _dequantize(node: ir.Node) -> str | None:
    out = _dtype(node.outputs[0]) if node.outputs else None
    if out is not None and out != DT.FLOAT:
        return f"DequantizeLinear to {out.name} (native dequantizes to float32)"
    return _float_scale(node)


def _matmul_integer(node: ir.Node) -> str | None:
    b = node.inputs[1] if len(node.inputs) > 1 else None
    if b is not None and b.shape is not None and len(b.shape) != 2:
        return f"B of rank {len(b.shape)} (native MatMulInteger takes a 2-D B)"
    if b is not None and b.dtype not in (None, DT.UINT8, DT.INT8):
        return f"B of element type {b.dtype.name}"
    return None


ML_INPUTS = frozenset({DT.FLOAT, DT.DOUBLE, DT.INT64, DT.INT32})  # what the ai.onnx.ml ops read
POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")
NODE_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ",
              "LEAF")


def _post_transform(node: ir.Node) -> str | None:
    return _one_of("post_transform", POST_TRANSFORMS, "NONE")(node)


def _int_labels(key: str, least: int) -> Check:
    """Classifiers: int64 labels only (string labels and ZipMap stay on the fallback)."""
    def check(node: ir.Node) -> str | None:
        if _attr(node, "classlabels_strings"):
            return "string class labels (native runs int64 labels)"
        labels = list(_attr(node, key) or ())  # type: ignore[call-overload]
        if len(labels) < least:
            return f"{key} has {len(labels)} label(s) (native runs {least} or more)"
        return _post_transform(node)
    return check


def _indices_int64(node: ir.Node) -> str | None:
    index = _dtype(node.inputs[1]) if len(node.inputs) > 1 else None
    return None if index in (None, DT.INT64) else f"indices of element type {index.name}"


def _tree_modes(node: ir.Node) -> str | None:
    modes = list(_attr(node, "nodes_modes") or ())  # type: ignore[call-overload]
    bad = sorted({str(m) for m in modes} - set(NODE_MODES))
    return f"nodes_modes {bad}" if bad else None


def _tree_classifier(node: ir.Node) -> str | None:
    return _tree_modes(node) or _int_labels("classlabels_int64s", 2)(node)


def _tree_regressor(node: ir.Node) -> str | None:
    return (_tree_modes(node) or _post_transform(node)
            or _one_of("aggregate_function", ("SUM", "AVERAGE", "MIN", "MAX"), "SUM")(node))


_ML = "ai.onnx.ml"
_U = Rule(FLOATS)                      # float unary math
_N = Rule(NUMERIC)                     # numeric, same type everywhere
_MOVE = Rule(ANY, index_inputs=(1, 2, 3, 4))

RULES: dict[tuple[str, str], Rule] = {
    # elementwise math
    **{("", op): _U for op in (
        "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan",
        "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Softplus",
        "Softsign", "Mish", "Elu", "Selu", "Celu", "ThresholdedRelu", "Shrink", "Relu",
        "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "PRelu", "Mean", "Swish")},
    ("", "Gelu"): Rule(FLOATS, check=_gelu),
    **{("", op): _N for op in ("Neg", "Abs", "Sign", "Add", "Sub", "Mul", "Div", "Mod",
                               "Sum", "Min", "Max")},
    ("", "Clip"): Rule(NUMERIC),
    ("", "Pow"): Rule(frozenset({DT.FLOAT, DT.DOUBLE, DT.INT64, DT.INT32}),
                      free_inputs=(1,), check=_pow),
    **{("", op): Rule(NUMERIC_BOOL, free_outputs=(0,)) for op in (
        "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")},
    **{("", op): Rule(frozenset({DT.BOOL})) for op in ("And", "Or", "Xor", "Not")},
    ("", "Where"): Rule(ANY, data=1, free_inputs=(0,)),
    ("", "IsNaN"): Rule(FLOATS, free_outputs=(0,)),
    ("", "IsInf"): Rule(FLOATS, free_outputs=(0,)),
    # linear algebra and convolution
    ("", "Conv"): Rule(FLOAT, check=_auto_pad),
    ("", "ConvTranspose"): Rule(FLOAT, check=_auto_pad),
    ("", "Gemm"): Rule(FLOAT),
    ("", "MatMul"): Rule(FLOAT),
    ("", "LSTM"): Rule(FLOAT, index_inputs=(4,), check=_recurrent(["Sigmoid", "Tanh", "Tanh"])),
    ("", "GRU"): Rule(FLOAT, index_inputs=(4,), check=_recurrent(["Sigmoid", "Tanh"])),
    ("", "RNN"): Rule(FLOAT, index_inputs=(4,), check=_recurrent(["Tanh"])),
    # onnxruntime's dynamic quantizer's LSTM: W, R and their zero points int8 / uint8
    ("com.microsoft", "DynamicQuantizeLSTM"): Rule(FLOAT, index_inputs=(4,),
                                                   free_inputs=(1, 2, 9, 11),
                                                   check=_recurrent(["Sigmoid", "Tanh", "Tanh"])),
    ("kiln", "FusedConv"): Rule(FLOAT, check=_conv_fused),
    # int8: Q/DQ, run-time quantization, the integer product
    ("", "QuantizeLinear"): Rule(FLOAT, free_inputs=(1, 2), free_outputs=(0,),
                                 check=_quantize, narrow_outputs=QUANTIZED),
    ("", "DequantizeLinear"): Rule(QUANTIZED | {DT.INT32}, free_inputs=(1,),
                                   free_outputs=(0,), check=_dequantize),
    ("", "DynamicQuantizeLinear"): Rule(FLOAT, free_outputs=(0, 2)),
    ("", "MatMulInteger"): Rule(frozenset({DT.UINT8, DT.INT8}), free_inputs=(1, 3),
                                free_outputs=(0,), check=_matmul_integer),
    ("", "ConvInteger"): Rule(frozenset({DT.UINT8, DT.INT8}), free_inputs=(1, 3),
                              free_outputs=(0,), check=_auto_pad),
    ("kiln", "FusedGemm"): Rule(FLOAT, check=_activation),
    # the int8 kernels (contracts in compiler/passes/fuse_int8.py); the kernels check the
    # element types of their parameters themselves
    ("kiln", "QGemm"): Rule(frozenset({DT.UINT8}), free_inputs=tuple(range(1, 9)),
                            free_outputs=(0,), check=_int8_epilogue),
    ("kiln", "QConv"): Rule(frozenset({DT.UINT8}), free_inputs=tuple(range(1, 9)),
                            free_outputs=(0,), check=_all(_auto_pad, _int8_epilogue)),
    ("kiln", "QConvTranspose"): Rule(frozenset({DT.UINT8}), free_inputs=tuple(range(1, 9)),
                                     free_outputs=(0,), check=_int8_epilogue),
    ("kiln", "QMaxPool"): Rule(frozenset({DT.UINT8}), free_inputs=(1, 2, 3, 4)),
    # normalization, pooling
    ("", "BatchNormalization"): Rule(FLOAT, check=_batchnorm),
    ("kiln", "FusedBatchNorm"): Rule(FLOAT, check=_all(
        _batchnorm, _one_of("activation", ("", "Relu"), ""))),
    ("", "LayerNormalization"): Rule(FLOAT),
    ("", "InstanceNormalization"): Rule(FLOAT),
    ("", "LRN"): Rule(FLOAT),
    ("", "Softmax"): Rule(FLOAT),
    ("", "LogSoftmax"): Rule(FLOAT),
    ("", "Hardmax"): Rule(FLOAT),
    ("", "MaxPool"): Rule(FLOAT, free_outputs=(1,), check=_auto_pad),
    ("", "AveragePool"): Rule(FLOAT, check=_auto_pad),
    ("", "LpPool"): Rule(FLOAT, check=_auto_pad),
    ("", "GlobalAveragePool"): Rule(FLOAT),
    ("", "GlobalMaxPool"): Rule(FLOAT),
    ("", "Resize"): Rule(FLOAT, free_inputs=(1, 2, 3), check=_resize),
    ("", "Upsample"): Rule(FLOAT, free_inputs=(1,), check=_resize),
    # reductions
    **{("", op): Rule(NUMERIC, index_inputs=(1,)) for op in (
        "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
        "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")},
    ("", "ArgMax"): Rule(NUMERIC, free_outputs=(0,)),
    ("", "ArgMin"): Rule(NUMERIC, free_outputs=(0,)),
    ("", "TopK"): Rule(NUMERIC, index_inputs=(1,), free_outputs=(1,)),
    # shape and data movement
    **{("", op): _MOVE for op in (
        "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Slice",
        "Gather", "GatherElements", "Expand", "Tile")},
    ("", "Concat"): Rule(ANY),
    ("", "Split"): Rule(ANY, index_inputs=(1,)),
    ("", "Dropout"): Rule(ANY, free_inputs=(1, 2), free_outputs=(1,), check=_dropout),
    ("", "Pad"): Rule(NUMERIC_BOOL, index_inputs=(1, 3), check=_pad),
    ("", "Shape"): Rule(ANY, free_outputs=(0,)),
    ("", "Size"): Rule(ANY, free_outputs=(0,)),
    ("", "ConstantOfShape"): Rule(INDEX, free_outputs=(0,), check=_constant_of_shape),
    ("", "Range"): Rule(frozenset({DT.FLOAT, DT.DOUBLE, DT.INT64, DT.INT32})),
    ("", "Cast"): Rule(CASTABLE, free_outputs=(0,), check=_cast),
    ("", "BitCast"): Rule(CASTABLE, free_outputs=(0,), check=_bit_cast),
    ("", "CastLike"): Rule(CASTABLE, free_inputs=(1,), free_outputs=(0,),
                           check=_cast_like_target),
    ("", "DepthToSpace"): Rule(ANY, check=_depth_to_space),
    ("", "SpaceToDepth"): Rule(ANY, check=_depth_to_space),
    ("", "Constant"): Rule(ANY, free_outputs=(0,)),
    # bitwise and index-driven
    **{("", op): Rule(INTS) for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor",
                                       "BitwiseNot")},
    ("", "BitShift"): Rule(INTS,
                           check=_one_of("direction", ("LEFT", "RIGHT"), "")),
    ("", "GatherND"): Rule(ANY, index_inputs=(1,)),
    ("", "ScatterND"): Rule(NUMERIC_BOOL, index_inputs=(1,), check=_reduction),
    ("", "ScatterElements"): Rule(NUMERIC_BOOL, index_inputs=(1,), check=_reduction),
    ("", "NonZero"): Rule(ANY, free_outputs=(0,)),
    ("", "Compress"): Rule(ANY, free_inputs=(1,)),
    ("", "OneHot"): Rule(frozenset({DT.FLOAT, DT.DOUBLE, DT.INT64, DT.INT32}),
                         free_inputs=(1, 2), free_outputs=(0,)),
    ("", "Trilu"): Rule(ANY, index_inputs=(1,)),
    ("", "EyeLike"): Rule(ANY, free_outputs=(0,)),
    ("", "CumSum"): Rule(NUMERIC, index_inputs=(1,)),
    ("", "CumProd"): Rule(NUMERIC, index_inputs=(1,)),
    ("", "RMSNormalization"): Rule(FLOAT),
    ("", "LpNormalization"): Rule(FLOAT, check=lambda n: None if _attr(n, "p", 2) in (1, 2)
                                  else "p must be 1 or 2"),
    ("", "MeanVarianceNormalization"): Rule(FLOAT),
    # ai.onnx.ml, as onnxruntime types them: what is not float32 is converted to float
    (_ML, "Scaler"): Rule(ML_INPUTS, free_outputs=(0,)),
    (_ML, "Normalizer"): Rule(ML_INPUTS, free_outputs=(0,),
                              check=_one_of("norm", ("MAX", "L1", "L2"), "MAX")),
    (_ML, "Binarizer"): Rule(FLOAT),
    (_ML, "Imputer"): Rule(frozenset({DT.FLOAT, DT.INT64})),
    (_ML, "ArrayFeatureExtractor"): Rule(ML_INPUTS, free_inputs=(1,), check=_indices_int64),
    (_ML, "LinearRegressor"): Rule(FLOAT, check=_post_transform),
    (_ML, "LinearClassifier"): Rule(ML_INPUTS, free_outputs=(0, 1),
                                    check=_int_labels("classlabels_ints", 0)),
    (_ML, "TreeEnsembleClassifier"): Rule(ML_INPUTS, free_outputs=(0, 1),
                                          check=_tree_classifier),
    (_ML, "TreeEnsembleRegressor"): Rule(ML_INPUTS, free_outputs=(0,), check=_tree_regressor),
}


def _dtype(value: ir.Value | None) -> ir.DataType | None:
    return None if value is None else value.dtype


def _name(data: ir.DataType | None, rule: Rule) -> str:
    return data.name if data is not None else "/".join(sorted(t.name for t in rule.types))


SUBGRAPHS = {"If": ("then_branch", "else_branch"), "Loop": ("body",), "Scan": ("body",)}


def _control_flow_refusal(node: ir.Node) -> str | None:
    """If, Loop and Scan run when every node of their subgraphs runs natively (each
    subgraph becomes native plans of its own); If's condition must be bool."""
    if node.op_type == "If":
        cond = _dtype(node.inputs[0]) if node.inputs else None
        if cond is not None and cond != DT.BOOL:
            return f"condition of element type {cond.name}"
    if node.op_type == "Scan" and node.inputs and node.inputs[0] is not None \
            and node.inputs[0].dtype == DT.INT64 and "num_scan_inputs" in node.attributes \
            and len(node.inputs) > int(_attr(node, "num_scan_inputs")) + 1 \
            and node.version is not None and node.version < 9:
        return "Scan-8 (batched, with sequence_lens)"
    for key in SUBGRAPHS[node.op_type]:
        attr = node.attributes.get(key)
        if attr is None or attr.type != ir.AttributeType.GRAPH:
            return f"no {key} graph"
        for inner in attr.value:
            reason = refusal(inner)
            if reason is not None:
                return f"{key} node '{inner.name or inner.op_type}': {reason}"
    return None


def refusal(node: ir.Node) -> str | None:
    """Why the native backend cannot run ``node``; None when it can."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain == "" and node.op_type in SUBGRAPHS:
        return _control_flow_refusal(node)
    rule = RULES.get((domain, node.op_type))
    if rule is None:
        return f"no native kernel for {domain or 'ai.onnx'}::{node.op_type}"
    for key, attr in node.attributes.items():
        if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS,
                         ir.AttributeType.SPARSE_TENSOR, ir.AttributeType.SPARSE_TENSORS,
                         ir.AttributeType.TYPE_PROTO, ir.AttributeType.TYPE_PROTOS):
            return f"attribute '{key}' of kind {attr.type.name}"
        if attr.type == ir.AttributeType.TENSOR and attr.value.dtype not in ANY:
            return f"tensor attribute '{key}' of type {attr.value.dtype.name}"
    if domain == "" and node.op_type == "Constant":
        if not any(k in node.attributes for k in ("value", "value_float", "value_floats",
                                                   "value_int", "value_ints")):
            return "Constant holding strings or sparse data"
        return None
    data = _dtype(node.inputs[rule.data]) if len(node.inputs) > rule.data else None
    if data is not None and data not in rule.types:
        return f"element type {data.name} (native runs {sorted(t.name for t in rule.types)})"
    for i, value in enumerate(node.inputs):
        dt = _dtype(value)
        if dt is None or i in rule.free_inputs or i == rule.data:
            continue
        if i in rule.index_inputs:
            if dt not in INDEX:
                return f"input {i} has element type {dt.name}, expected int64 or int32"
        elif dt not in rule.types or (data is not None and dt != data):
            return f"input {i} has element type {dt.name}, expected {_name(data, rule)}"
    for i, value in enumerate(node.outputs):
        dt = _dtype(value)
        if dt is None:
            continue
        if dt not in ANY | rule.types | rule.narrow_outputs:
            return f"output {i} of element type {dt.name}"
        if i in rule.free_outputs:
            continue
        if dt not in rule.types or (data is not None and dt != data):
            return f"output {i} has element type {dt.name}, expected {_name(data, rule)}"
    if rule.check is not None:
        return rule.check(node)
    return None
