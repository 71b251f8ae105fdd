"""Narrow element types through the native engine: Cast to and from each, against ml_dtypes
(which onnx.reference uses) on values that hit every rounding and overflow rule."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import kiln
import kiln.backend
from kiln.backends.native.dtypes import NARROW, from_carrier, to_carrier

# ties, subnormals, values just past the largest finite one, infinities, NaN, signed zero
EDGES = np.array([0.0, -0.0, 0.1, -0.3, 1.0625, 1.125, 2.5, -3.5, 240.0, 250.0, 448.0, 449.0,
                  464.0, 465.0, 500.0, 57344.0, 61440.0, 61441.0, 1e6, -1e6, np.inf, -np.inf,
                  np.nan, 2.0 ** -9, 2.0 ** -10, 3 * 2.0 ** -11, 1e-30, 7.9, -8.6, 100.0],
                 np.float32)
FLOAT8 = [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
          TensorProto.FLOAT8E5M2FNUZ]


def _cast(x: np.ndarray, to: int, **attrs) -> np.ndarray:
    src = helper.np_dtype_to_tensor_dtype(x.dtype)
    node = helper.make_node("Cast", ["x"], ["y"], to=to, **attrs)
    graph = helper.make_graph([node], "cast", [helper.make_tensor_value_info("x", src, x.shape)],
                              [helper.make_tensor_value_info("y", to, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    [y] = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run([x])
    return y


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("to", FLOAT8)
@pytest.mark.parametrize("saturate", [0, 1])
def test_float_to_float8_rounds_and_overflows_as_onnx_says(to: int, saturate: int):
    dtype = helper.tensor_dtype_to_np_dtype(to)
    if saturate:
        info = ml_dtypes.finfo(dtype)
        want = np.clip(EDGES, float(info.min), float(info.max)).astype(dtype)
    else:
        want = EDGES.astype(dtype)
    _same(_cast(EDGES, to, saturate=saturate), want)


@pytest.mark.parametrize("to", [TensorProto.BFLOAT16, TensorProto.FLOAT4E2M1,
                                TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2,
                                TensorProto.UINT2])
def test_float_to_other_narrow_types_matches_ml_dtypes(to: int):
    dtype = helper.tensor_dtype_to_np_dtype(to)
    is_int = to in (TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2)
    x = EDGES
    if is_int:  # NaN and out-of-range values have no defined int result (ONNX, ml_dtypes)
        info = ml_dtypes.iinfo(dtype)
        x = EDGES[np.isfinite(EDGES) & (EDGES >= int(info.min)) & (EDGES <= int(info.max))]
    with np.errstate(invalid="ignore"):
        _same(_cast(x, to), x.astype(dtype))


@pytest.mark.parametrize("code", sorted(int(t) for t in NARROW))
def test_every_code_of_a_narrow_type_decodes_like_ml_dtypes(code: int):
    dtype, carrier = NARROW[code]
    bits = np.arange(256 if carrier.itemsize == 1 else 65536, dtype=np.uint32)
    if dtype.itemsize == 1:
        width = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2, "float4_e2m1fn": 4}
        bits = bits[bits < (1 << width.get(dtype.name, 8))]
    x = bits.astype(carrier).view(dtype)
    with np.errstate(invalid="ignore"):
        _same(_cast(x, TensorProto.FLOAT), x.astype(np.float32))


def test_e8m0_round_modes():
    x = np.array([1.0, 1.5, 3.0, 0.7, 2.0 ** 127 * 1.5, 6.0], np.float32)
    for mode in ("up", "down", "nearest"):
        want = onnx.numpy_helper.to_float8e8m0(x, True, mode)
        _same(_cast(x, TensorProto.FLOAT8E8M0, round_mode=mode), want)


def test_carrier_round_trip_keeps_bits_and_dtype():
    x = np.array([1.5, -2.0, np.nan], np.float32).astype(ml_dtypes.bfloat16)
    carried, code = to_carrier(x)
    assert carried.dtype == np.uint16 and code == TensorProto.BFLOAT16
    back = from_carrier(carried, code)
    assert back.dtype == x.dtype and back.tobytes() == x.tobytes()
    plain = np.ones(3, np.float32)
    assert to_carrier(plain) == (plain, 0)


@pytest.mark.parametrize("src,to", [(np.float32, TensorProto.INT32),
                                    (np.int64, TensorProto.DOUBLE),
                                    (np.bool_, TensorProto.UINT8)])
def test_bitcast_keeps_the_bytes(src: type, to: int):
    x = np.array([[1.5, -2.0, 0.0], [3.0, 1.0, 7.0]]).astype(src)
    node = helper.make_node("BitCast", ["x"], ["y"], to=to)
    dtype = helper.tensor_dtype_to_np_dtype(to)
    graph = helper.make_graph(
        [node], "bitcast",
        [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), [2, 3])],
        [helper.make_tensor_value_info("y", to, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)])
    [y] = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run([x])
    assert y.dtype == dtype and y.tobytes() == x.tobytes()


def test_bitcast_between_widths_is_refused_naming_both():
    node = helper.make_node("BitCast", ["x"], ["y"], to=TensorProto.INT64)
    graph = helper.make_graph(
        [node], "bitcast", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)])
    with pytest.raises(kiln.UnsupportedError, match="FLOAT to INT64"):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None)


QUANTIZED = [TensorProto.INT16, TensorProto.UINT16, TensorProto.INT4, TensorProto.UINT4,
             TensorProto.INT2, TensorProto.UINT2, TensorProto.FLOAT8E4M3FN,
             TensorProto.FLOAT8E5M2, TensorProto.FLOAT4E2M1]


@pytest.mark.parametrize("to", QUANTIZED)
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_then_dequantize_narrow_types_match_onnx_reference(to: int, per_axis: bool):
    from onnx.reference import ReferenceEvaluator

    x = (np.random.default_rng(3).standard_normal((2, 3, 4)) * 6).astype(np.float32)
    x[0, 0, :3] = [np.inf, -np.inf, 1e9]
    is_float = to in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2, TensorProto.FLOAT4E2M1)
    if not is_float:
        x[0, 0, :2] = 0.0  # onnx.reference leaves inf -> integer undefined
    shape = [3] if per_axis else []
    scale = np.array([0.5, 0.25, 2.0], np.float32) if per_axis else np.array(0.5, np.float32)
    zero_values = np.zeros(shape, np.float32) if is_float else \
        np.array([1, 0, -1], np.int64)[:3 if per_axis else 1].reshape(shape)
    dtype = helper.tensor_dtype_to_np_dtype(to)
    if not is_float and to in (TensorProto.UINT16, TensorProto.UINT4, TensorProto.UINT2):
        zero_values = np.abs(zero_values)
    zero = helper.make_tensor("z", to, shape, zero_values.astype(dtype).astype(np.float32)
                              .tolist() if is_float else zero_values.tolist())
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("q", to, [2, 3, 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, shape, scale.reshape(-1).tolist()), zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run([x])
    _same(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
