"""int8 ops on the native backend: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear
and MatMulInteger equal to onnxruntime (the integer product exactly), on every ISA path this
machine can run (the u8 x s8 GEMM has an AVX-512 VNNI kernel and a plain one); hostile
parameters give kiln errors naming the node."""

from __future__ import annotations

import numpy as np
import pytest
from model_builders import model_from_arrays, run_reference
from native_cases import compile_native
from onnx import helper

import kiln
from kiln.backends.native import _native as native

RNG = np.random.default_rng(0)


def _dynamic_matmul(x: np.ndarray, w: np.ndarray, wz: np.ndarray | None):
    inits = {"w": w}
    ins = ["xq", "w", "xz"]
    if wz is not None:
        inits["wz"] = wz
        ins.append("wz")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             helper.make_node("MatMulInteger", ins, ["y"], name="mmi")]
    return model_from_arrays(nodes, {"x": x}, ["y", "xs", "xz"], initializers=inits)


# the larger ones cover AMX's blocks (64 rows, 32 columns, K in steps of 64) and their tails
@pytest.mark.parametrize(("m", "k", "n"), [(1, 3, 5), (5, 4, 31), (7, 33, 40), (6, 64, 32),
                                           (13, 130, 97), (75, 200, 150), (40, 129, 16)])
@pytest.mark.parametrize("zero", ["none", "zeros", "per_column"])
def test_dynamic_quantized_matmul_equals_onnxruntime(isa: str, m: int, k: int, n: int,
                                                     zero: str):
    x = RNG.standard_normal((2, m, k)).astype(np.float32) * 3
    w = RNG.integers(-127, 128, (k, n)).astype(np.int8)
    wz = {"none": None, "zeros": np.zeros(n, np.int8),
          "per_column": RNG.integers(-4, 5, n).astype(np.int8)}[zero]
    model = _dynamic_matmul(x, w, wz)
    got = compile_native(model, threads=2).run({"x": x})
    want = run_reference(model, {"x": x})
    np.testing.assert_array_equal(got["y"], want[0])  # integer products: exact
    np.testing.assert_allclose(got["xs"], want[1], rtol=1e-7)
    np.testing.assert_array_equal(got["xz"], want[2])


@pytest.mark.parametrize(("a_type", "b_type"), [(np.int8, np.int8), (np.uint8, np.uint8),
                                                (np.int8, np.uint8)])
def test_other_integer_types_take_the_plain_path(a_type, b_type):
    lo_a, hi_a = np.iinfo(a_type).min, np.iinfo(a_type).max
    a = RNG.integers(lo_a, hi_a, (4, 9), endpoint=True).astype(a_type)
    b = RNG.integers(np.iinfo(b_type).min, np.iinfo(b_type).max, (9, 6),
                     endpoint=True).astype(b_type)
    za = np.array(3, a_type)
    model = model_from_arrays([helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])],
                              {"a": a, "b": b}, ["y"], initializers={"za": za})
    np.testing.assert_array_equal(compile_native(model).run({"a": a, "b": b})["y"],
                                  run_reference(model, {"a": a, "b": b})[0])


@pytest.mark.parametrize("scale", [0.0173, 0.3, 1.7e-3, 3.0])
def test_quantize_rounds_the_quotient_as_division_does(isa: str, scale: float):
    """Quotients on and next to half-integers, where x * (1 / s) and x / s can round apart:
    the kernels (reciprocal plus one correction where the ISA has FMA) give round_half_even(x /
    s) + zero exactly, and saturate infinities each to its own end."""
    s = np.float32(scale)
    halves = (np.arange(-140, 140, dtype=np.float32) + np.float32(0.5)) * s
    x = np.concatenate([halves, np.nextafter(halves, np.float32(np.inf)),
                        np.nextafter(halves, np.float32(-np.inf)),
                        RNG.standard_normal(4099).astype(np.float32) * s * 60,
                        np.array([np.inf, -np.inf, 0.0], np.float32)])
    zero = np.array(128, np.uint8)
    model = model_from_arrays([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])],
                              {"x": x}, ["q"], initializers={"s": np.array(s), "z": zero})
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.clip(np.rint(x / s) + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(compile_native(model).run({"x": x})["q"], want)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_dequantize_equal_onnxruntime(dtype, per_axis: bool):
    x = RNG.standard_normal((2, 5, 7)).astype(np.float32) * 4
    if per_axis:
        scale = RNG.uniform(0.01, 0.1, 5).astype(np.float32)
        zero = RNG.integers(0 if dtype == np.uint8 else -10, 10, 5).astype(dtype)
    else:
        scale = np.array(0.03, np.float32)
        zero = np.array(7, dtype)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    model = model_from_arrays(nodes, {"x": x}, ["q", "y"], initializers={"s": scale, "z": zero})
    got = compile_native(model).run({"x": x})
    want = run_reference(model, {"x": x})
    np.testing.assert_array_equal(got["q"], want[0])
    np.testing.assert_allclose(got["y"], want[1], rtol=1e-6, atol=1e-7)


def test_int8_gemm_kernel_follows_the_isa(isa: str):
    vnni = native.cpu_features().get("avx512_vnni", False)
    want = {"generic": "generic", "avx2": "avx2"}.get(isa, "avx512vnni" if vnni else "avx2")
    if want == "avx512vnni" and native.kernels.amx_int8_ready():  # AMX tiles where VNNI may
        assert native.kernels.int8_gemm_kernel_name() == "kiln_u8s8_gemm_panel__amx"
    else:
        assert native.kernels.int8_gemm_kernel_name() == f"kiln_u8s8_gemm_ukernel__{want}"


def test_scale_of_the_wrong_length_is_a_kiln_error():
    x = RNG.standard_normal((2, 5)).astype(np.float32)
    model = model_from_arrays([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="ql",
                                         axis=1)],
                              {"x": x}, ["q"], initializers={"s": np.ones(3, np.float32),
                                                     "z": np.zeros(3, np.uint8)})
    with pytest.raises(kiln.KilnError, match="ql.*scale has 3 values"):
        compile_native(model).run({"x": x})


def test_zero_point_type_mismatch_is_refused():
    a = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    model = model_from_arrays([helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"],
                                         name="mmi")],
                              {"a": a}, ["y"], initializers={"b": np.ones((4, 2), np.int8),
                                                     "za": np.array(1, np.int8)})
    with pytest.raises(kiln.KilnError, match="mmi"):
        compile_native(model).run({"a": a})


def test_nan_input_to_dynamic_quantization_is_a_kiln_error():
    x = np.array([[1.0, np.nan, 2.0]], np.float32)
    model = _dynamic_matmul(x, np.ones((3, 2), np.int8), None)
    with pytest.raises(kiln.KilnError, match="dql.*NaN"):
        compile_native(model).run({"x": x})


def test_session_int8_runs_a_quantized_mlp_on_native():
    w1 = RNG.standard_normal((64, 128)).astype(np.float32) / 8
    x = RNG.standard_normal((8, 64)).astype(np.float32)
    model = model_from_arrays([helper.make_node("MatMul", ["x", "w1"], ["y"])], {"x": x}, ["y"],
                              initializers={"w1": w1})
    fp32 = kiln.Session(model.SerializeToString(), backend="native")(x=x)["y"]
    int8 = kiln.Session(model.SerializeToString(), backend="native", precision="int8",
                        fallback=None)
    # the quantizer wrote MatMulInteger, which the compiler's fuse-int8 rule wrote as one
    # integer GEMM for the native backend (compiler/passes/fuse_int8.py)
    assert int8.report.fired()["FuseMatMulIntegerIntoQGemm"] == 1
    assert [(n.domain, n.op_type) for n in int8.model.graph] == [
        ("", "DynamicQuantizeLinear"), ("kiln", "QGemm")]
    lowered = [n.op for seg in int8._compiled.segments for n in seg.lowered.nodes]
    assert lowered == ["DynamicQuantizeLinear", "QGemm"]
    got = int8(x=x)["y"]
    assert np.dot(got.ravel(), fp32.ravel()) / np.linalg.norm(got) / np.linalg.norm(fp32) > 0.999


@pytest.mark.parametrize("attrs,w_zero_per_channel", [
    ({}, False),
    ({"pads": [1, 1, 1, 1], "strides": [2, 1]}, True),
    ({"dilations": [2, 2], "group": 2, "auto_pad": "SAME_UPPER"}, False),
])
def test_conv_integer_matches_onnx_reference(attrs: dict, w_zero_per_channel: bool):
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    import kiln.backend

    gen = np.random.default_rng(8)
    group = attrs.get("group", 1)
    x = gen.integers(0, 256, (2, 4, 7, 6), dtype=np.uint8)
    w = gen.integers(0, 256, (6, 4 // group, 3, 3), dtype=np.uint8)
    xz = np.array(120, np.uint8)
    wz = gen.integers(100, 140, 6, dtype=np.uint8) if w_zero_per_channel \
        else np.array(128, np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "convinteger",
        [helper.make_tensor_value_info(n, TensorProto.UINT8, list(a.shape))
         for n, a in (("x", x), ("w", w), ("xz", xz), ("wz", wz))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None] * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = [x, w, xz, wz]
    [want] = ReferenceEvaluator(model).run(None, dict(zip(["x", "w", "xz", "wz"], feeds)))
    [got] = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run(feeds)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_conv_integer_with_a_float_zero_point_is_a_kiln_error():
    from onnx import TensorProto

    import kiln.backend

    node = helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"])
    graph = helper.make_graph(
        [node], "convinteger",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 3, 3]),
         helper.make_tensor_value_info("w", TensorProto.UINT8, [1, 1, 2, 2]),
         helper.make_tensor_value_info("xz", TensorProto.UINT8, [2])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None] * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.KilnError, match="x_zero_point must be one value"):
        rep.run([np.ones((1, 1, 3, 3), np.uint8), np.ones((1, 1, 2, 2), np.uint8),
                 np.zeros(2, np.uint8)])
