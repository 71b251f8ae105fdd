"""Quantized graphs on the native integer kernels (the compiler's fuse-int8 rules,
compiler/passes/fuse_int8.py, then the native lowering): QDQ Conv / MatMul / Gemm / MaxPool and
MatMulInteger chains become kiln::QConv, kiln::QGemm and kiln::QMaxPool. Each test checks both
that the fusion happened (the plan's ops) and that the result equals onnxruntime running the
graph as written; graphs the kernels cannot take stay as written; bad run-time shapes give kiln
errors naming the node."""

from __future__ import annotations

import numpy as np
import pytest
from model_builders import QDQ_RNG as RNG
from model_builders import (
    dynamic_int8_matmul,
    model_from_arrays,
    qdq_depthwise,
    qdq_upsampling_head,
    run_reference,
)
from model_builders import qdq_activation as _qdq
from model_builders import qdq_conv_net as _conv_net
from model_builders import qdq_int32_bias as _int32_bias
from model_builders import qdq_weights as _weights
from native_cases import compile_native
from onnx import helper

import kiln


def _ops(compiled) -> list[str]:
    return [n.op for seg in compiled.segments for n in seg.lowered.nodes]


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float summation order: onnxruntime adds the dequantized products in float,
    the integer kernels exactly in int32 and scale once."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4e-6 * float(np.abs(want).max()))


def _plan_nodes(compiled):
    return [n for seg in compiled.segments for n in seg.lowered.nodes]


def _assert_vnni_and_amx_plans_give(got: np.ndarray, model, x: np.ndarray, isa: str) -> None:
    """On an AVX-512 VNNI CPU, the VNNI plan and the VNNI + AMX plan give exactly `got` (the
    integer sums are exact either way)."""
    if isa != "avx512" or not kiln.backends.native._native.cpu_features().get("avx512_vnni"):
        return
    vnni = "cpu:avx2,fma,avx512f,avx512bw,avx512vl,avx512_vnni"
    for target in (vnni, vnni + ",amx"):
        np.testing.assert_array_equal(
            compile_native(model, threads=2, target=target).run({"x": x})["y"], got)


def test_qdq_conv_net_runs_on_integer_kernels_and_equals_onnxruntime(isa: str):
    x = RNG.standard_normal((2, 3, 19, 17)).astype(np.float32)
    model = _conv_net(x)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConv", "QConv", "QMaxPool", "QConv"]
    conv1, conv2, pool, conv3 = _plan_nodes(compiled)[1:]
    # u8 handed over in NHWC between the integer ops; the float result leaves in NCHW
    assert conv1.attrs.get("kiln_layout_out") == "NHWC"
    assert conv2.attrs.get("kiln_layout_in") == "NHWC" == conv2.attrs.get("kiln_layout_out")
    assert pool.attrs.get("kiln_layout_in") == "NHWC" == pool.attrs.get("kiln_layout_out")
    assert conv3.attrs.get("kiln_layout_in") == "NHWC" and "kiln_layout_out" not in conv3.attrs
    got = compiled.run({"x": x})["out"]
    want = run_reference(model, {"x": x})[0]
    assert got.shape == want.shape
    _assert_close(got, want)


def test_intermediate_graph_output_keeps_nchw():
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    model = _conv_net(x)
    model.graph.output.append(helper.make_value_info("r1_q", helper.make_tensor_type_proto(
        2, None)))  # uint8: the first conv's u8 result is wanted by the caller
    compiled = compile_native(model)
    conv1 = _plan_nodes(compiled)[1]
    assert conv1.op == "QConv" and "kiln_layout_out" not in conv1.attrs
    got = compiled.run({"x": x})
    want = run_reference(model, {"x": x})
    # u8 in the model's own layout; a value on a rounding tie may land one step away
    diff = np.abs(got["r1_q"].astype(int) - want[1].astype(int))
    assert diff.max() <= 1 and np.mean(diff) < 0.01


def _matmul_model(x: np.ndarray, n: int, weight_zero: int = 0, act_dtype=np.uint8):
    inits: dict = {}
    k = x.shape[-1]
    nodes = _qdq("x", 0.05, 128 if act_dtype == np.uint8 else 0, inits)
    if act_dtype == np.int8:
        inits["x_z"] = np.array(0, np.int8)
    nodes += _weights("m", (k, n), 1, inits, zero=weight_zero)
    inits["bias"] = RNG.standard_normal(n).astype(np.float32)
    nodes += [helper.make_node("MatMul", ["x_dq", "m_wdq"], ["mm"], name="matmul"),
              helper.make_node("Add", ["bias", "mm"], ["y"], name="bias_add")]
    return model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)


@pytest.mark.parametrize(("shape", "n"), [((1, 7, 48), 40), ((2, 64, 96), 130), ((5, 3), 33)])
def test_qdq_matmul_with_bias_becomes_one_qgemm(isa: str, shape: tuple, n: int):
    x = (RNG.standard_normal(shape) * 2).astype(np.float32)
    model = _matmul_model(x, n)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QGemm"]
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    _assert_close(got, want)


def test_gemm_with_transposed_weights_and_int32_bias(isa: str):
    x = RNG.standard_normal((6, 20)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.04, 120, inits) + _weights("g", (9, 20), 0, inits)
    nodes += _int32_bias("g", 9, 0.04, inits)
    nodes += [helper.make_node("Gemm", ["x_dq", "g_wdq", "g_bdq"], ["y"], transB=1,
                               name="gemm")]
    model = model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model)
    assert _ops(compiled) == ["QuantizeLinear", "QGemm"]
    _assert_close(compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0])


@pytest.mark.parametrize(("weight_zero", "act_dtype"), [(3, np.uint8), (0, np.int8)])
def test_what_the_kernels_cannot_take_stays_as_written(weight_zero: int, act_dtype):
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    model = _matmul_model(x, 8, weight_zero=weight_zero, act_dtype=act_dtype)
    compiled = compile_native(model)
    assert "QGemm" not in _ops(compiled)
    _assert_close(compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0])


def test_dynamic_matmul_integer_chain_becomes_one_qgemm(isa: str):
    x = RNG.standard_normal((1, 12, 32)).astype(np.float32)
    model = dynamic_int8_matmul(x, 24)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["DynamicQuantizeLinear", "QGemm"]
    _assert_close(compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0])


def test_wrong_channel_count_at_run_time_names_the_node():
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    model = _conv_net(x)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "c"  # any channels accepted
    compiled = compile_native(model)
    assert "QConv" in _ops(compiled)
    bad = RNG.standard_normal((1, 5, 8, 8)).astype(np.float32)
    with pytest.raises(kiln.KilnError, match="conv1"):
        compiled.run({"x": bad})


def test_unnamed_nodes_keep_their_own_weights():
    """Constants the lowering makes are keyed per node, not per (empty) node name."""
    x = RNG.standard_normal((1, 3, 10, 10)).astype(np.float32)
    model = _conv_net(x)
    for node in model.graph.node:
        node.name = ""
    compiled = compile_native(model)
    assert _ops(compiled).count("QConv") == 3
    _assert_close(compiled.run({"x": x})["out"], run_reference(model, {"x": x})[0])


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 0, 0]])
def test_max_pool_on_bytes_from_a_quantize_node(isa: str, pads: list):
    """DQ -> MaxPool -> Q straight after a QuantizeLinear (NCHW bytes), read by a QConv and
    wanted by the caller: the pool keeps NCHW and equals onnxruntime exactly."""
    x = RNG.standard_normal((2, 6, 11, 9)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.02, 131, inits)
    nodes += [helper.make_node("MaxPool", ["x_dq"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                               pads=pads, name="pool")]
    nodes += _qdq("p", 0.03, 120, inits) + _weights("c", (4, 6, 1, 1), 0, inits)
    nodes += [helper.make_node("Conv", ["p_dq", "c_wdq"], ["out"], name="conv")]
    model = model_from_arrays(nodes, {"x": x}, ["out", "p_q"], opset=21, initializers=inits)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QMaxPool", "QConv"]
    pool = _plan_nodes(compiled)[1]
    assert "kiln_layout_in" not in pool.attrs and "kiln_layout_out" not in pool.attrs
    got = compiled.run({"x": x})
    want = run_reference(model, {"x": x})
    np.testing.assert_array_equal(got["p_q"], want[1])  # max and requantize: exact
    _assert_close(got["out"], want[0])


def test_max_pool_with_a_negative_scale_is_not_pooled_on_bytes():
    """Dequantizing with a negative scale reverses the order of the bytes: the pool must run
    on the float values, as written."""
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", -0.02, 128, inits)
    nodes += [helper.make_node("MaxPool", ["x_dq"], ["p"], kernel_shape=[2, 2], strides=[2, 2])]
    nodes += _qdq("p", 0.02, 128, inits)
    model = model_from_arrays(nodes, {"x": x}, ["p_q"], opset=21, initializers=inits)
    compiled = compile_native(model)
    assert "QMaxPool" not in _ops(compiled)
    np.testing.assert_array_equal(compiled.run({"x": x})["p_q"], run_reference(model, {"x": x})[0])


def test_bias_with_a_computed_zero_point_stays_as_written():
    """A bias DequantizeLinear whose zero point is not a constant cannot be folded. (onnxruntime's
    own QDQ fusion drops that zero point, so the check is the graph's arithmetic in float64.)"""
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.04, 128, inits) + _weights("g", (5, 8), 0, inits)
    nodes += _int32_bias("g", 5, 0.04, inits)
    nodes[-1].input[2] = "bz"  # the bias zero point comes from the caller
    del inits["g_bz"]
    nodes += [helper.make_node("Gemm", ["x_dq", "g_wdq", "g_bdq"], ["y"], transB=1)]
    bz = np.array([7, 0, -3, 2, 1], np.int32)
    model = model_from_arrays(nodes, {"x": x, "bz": bz}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model)
    assert "QGemm" not in _ops(compiled)
    xd = (np.clip(np.round(x / np.float32(0.04)) + 128, 0, 255) - 128) * np.float32(0.04)
    w = inits["g_w"].astype(np.float64) * inits["g_ws"][:, None]
    want = xd.astype(np.float64) @ w.T + (inits["g_b"] - bz) * inits["g_bs"].astype(np.float64)
    _assert_close(compiled.run({"x": x, "bz": bz})["y"], want)


@pytest.mark.parametrize(("kernel", "attrs"), [
    ((5, 5), {"dilations": [2, 2], "pads": [4, 3, 4, 3]}),   # 25 segments of Cp bytes
    ((1, 1), {"strides": [2, 2]}),                           # strided pointwise
    ((7, 3), {"pads": [3, 1, 3, 1], "strides": [1, 2]}),     # tall kernel, odd channels
])
def test_every_convolution_reads_its_input_in_place(isa: str, kernel: tuple, attrs: dict):
    x = RNG.standard_normal((2, 6, 13, 12)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.03, 125, inits) + _weights("c", (5, 6, *kernel), 0, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "c_wdq"], ["y"], name="conv", **attrs)]
    model = model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConv"]
    _assert_close(compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0])


@pytest.mark.parametrize(("channels", "mid", "out"), [(24, 24, 1), (6, 20, 3), (40, 72, 5)])
def test_conv_transpose_with_kernel_equal_to_stride_runs_on_bytes(isa: str, channels: int,
                                                                  mid: int, out: int):
    """Both ConvTransposes become kiln::QConvTranspose: the first writes its Relu'd bytes
    NHWC (a run of 2 x mid per pixel and kernel row), the second reads them in place (AMX
    from K = 16, a copy to whole k quads below) and writes float NCHW (one channel: runs;
    more: one value at a time). Equal to onnxruntime, and the VNNI plan gives the same floats."""
    x = RNG.standard_normal((2, channels, 7, 9)).astype(np.float32)
    model = qdq_upsampling_head(x, mid, out)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConvTranspose", "QConvTranspose"]
    first, second = _plan_nodes(compiled)[1:]
    assert first.attrs.get("kiln_layout_out") == "NHWC" == second.attrs.get("kiln_layout_in")
    assert first.attrs.get("activation") == "Relu"
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    # one step (0.3) of one u8 input moves an output by at most 0.3 * max |w| (127 * 0.025);
    # a step of any of a pixel's `mid` bytes (float summation order at a rounding boundary)
    # moves all its outputs, so a few percent may differ at all
    diff = np.abs(got - want)
    assert got.shape == want.shape == (2, out, 28, 36)
    assert diff.max() <= 2 * 0.3 * 127 * 0.025
    assert np.mean(diff > 1e-4 * np.abs(want).max()) < 0.05
    _assert_vnni_and_amx_plans_give(got, model, x, isa)


@pytest.mark.parametrize("auto_pad", ["VALID", "SAME_UPPER", "SAME_LOWER"])
def test_conv_transpose_with_kernel_equal_to_stride_takes_any_auto_pad(auto_pad: str):
    """Auto padding of a ConvTranspose whose kernel equals its stride pads nothing."""
    x = RNG.standard_normal((1, 8, 5, 6)).astype(np.float32)
    model = qdq_upsampling_head(x, 8, 2)
    for node in model.graph.node:
        if node.op_type == "ConvTranspose":
            node.attribute.append(helper.make_attribute("auto_pad", auto_pad))
    compiled = compile_native(model, threads=2)
    assert _ops(compiled).count("QConvTranspose") == 2
    got, want = compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0]
    assert got.shape == want.shape and np.abs(got - want).max() <= 2 * 0.3 * 127 * 0.025


def test_conv_transpose_whose_taps_overlap_stays_as_written():
    x = RNG.standard_normal((1, 8, 5, 6)).astype(np.float32)
    model = qdq_upsampling_head(x, 8, 2, kernel=3)  # 3x3 at stride 2: neighbours' taps add up
    compiled = compile_native(model, threads=2)
    assert _ops(compiled).count("QConvTranspose") == 1  # the 2x2 one
    assert "ConvTranspose" in _ops(compiled)
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2 * 0.3 * 127 * 0.025


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_an_image_of_few_channels_is_laid_out_as_pixel_words(isa: str, channels: int):
    """NCHW u8 of up to 4 channels padded into NHWC pixels of 4 bytes (one word each, the
    missing channels the zero point), then a 3x3 stride-2 conv: equal to onnxruntime."""
    x = RNG.standard_normal((2, channels, 15, 22)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.03, 125, inits) + _weights("c", (16, channels, 3, 3), 0, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "c_wdq"], ["y"], pads=[1] * 4, strides=[2, 2])]
    model = model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConv"]
    _assert_close(compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0])


@pytest.mark.parametrize(("stride", "size"), [(1, (13, 11)), (2, (17, 40)), (1, (5, 37))])
def test_wide_convs_equal_onnxruntime_and_the_vnni_plan(isa: str, stride: int, size: tuple):
    """A 3x3 conv of 40 channels (K = 360), then a 1x1 of 72 reading its u8 NHWC result in
    place: with AMX, tiles of 16 output pixels load straight from the padded input (rows of
    11, 20 or 37 pixels: tiles run past a row's end) and the 1x1's last tile, which would
    read past its input, is copied. The result equals onnxruntime, and the VNNI plan gives
    the same bytes and floats (the integer sums are exact either way)."""
    x = RNG.standard_normal((2, 40, *size)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.03, 125, inits) + _weights("a", (72, 40, 3, 3), 0, inits)
    nodes += _int32_bias("a", 72, 0.03, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "a_wdq", "a_bdq"], ["a"], pads=[1] * 4,
                               strides=[stride] * 2)]
    nodes += _qdq("a", 0.5, 120, inits) + _weights("b", (24, 72, 1, 1), 0, inits)
    nodes += [helper.make_node("Conv", ["a_dq", "b_wdq"], ["y"])]
    model = model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConv", "QConv"]
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    # one step (0.5) of one u8 input moves an output by at most 0.5 * max |w| (127 * 0.025)
    one_step = 0.5 * 127 * 0.025
    diff = np.abs(got - want)
    assert got.shape == want.shape and diff.max() <= 2 * one_step
    assert np.mean(diff > 1e-4 * np.abs(want).max()) < 0.02
    _assert_vnni_and_amx_plans_give(got, model, x, isa)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels", [37, 133])  # VNNI takes 64 channels a vector
def test_depthwise_conv_runs_on_the_integer_kernel(isa: str, kernel: int, stride: int,
                                                   channels: int):
    x = RNG.standard_normal((2, channels, 13, 11)).astype(np.float32)
    model = qdq_depthwise(x, kernel, stride)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled)[:2] == ["QuantizeLinear", "QConv"]
    _assert_close(compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0])


@pytest.mark.parametrize("stride", [1, 2])
def test_activation_chain_between_quantizations_becomes_a_byte_table(isa: str, stride: int):
    x = RNG.standard_normal((1, 21, 12, 9)).astype(np.float32)
    model = qdq_depthwise(x, 3, stride, hard_swish=True)
    compiled = compile_native(model, threads=2)
    ops = _ops(compiled)
    assert ops[:2] == ["QuantizeLinear", "QConv"]
    for gone in ("HardSigmoid", "Mul", "Add"):
        assert gone not in ops
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    # Both round twice (the conv result, then the activation): float summation order may move
    # a value across a rounding boundary, never by more than one step of the output scale.
    steps = np.abs(got - want) / np.float32(0.04)
    assert steps.max() <= 1.0 + 1e-4
    assert np.mean(steps > 0.5) < 0.01


def test_grouped_conv_that_is_not_depthwise_stays_as_written():
    x = RNG.standard_normal((1, 8, 7, 7)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.03, 125, inits) + _weights("g", (8, 4, 3, 3), 0, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "g_wdq"], ["y"], group=2, pads=[1] * 4)]
    model = model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model, threads=2)
    assert "QConv" not in _ops(compiled)
    _assert_close(compiled.run({"x": x})["y"], run_reference(model, {"x": x})[0])


def test_activation_chain_read_from_outside_keeps_its_float_ops():
    """The hard-swish value is also a graph output: the chain cannot collapse into a table."""
    x = RNG.standard_normal((1, 16, 8, 8)).astype(np.float32)
    model = qdq_depthwise(x, 3, 1, hard_swish=True)
    model.graph.output.append(helper.make_tensor_value_info("hsw", 1, None))
    compiled = compile_native(model, threads=2)
    assert "HardSigmoid" in _ops(compiled)
    want = run_reference(model, {"x": x})
    got = compiled.run({"x": x})
    np.testing.assert_allclose(got["hsw"], want[1], atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_hands_nhwc_bytes_to_a_pointwise_conv(isa: str, stride: int):
    """depthwise -> hard-swish chain as a table -> 1x1 conv: the depthwise result stays u8 NHWC
    (one epilogue run per output row) and the pointwise conv reads it in place."""
    x = RNG.standard_normal((2, 24, 11, 10)).astype(np.float32)
    model = qdq_depthwise(x, 5, stride, hard_swish=True, pointwise=20)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConv", "QConv"]
    dw, pw = _plan_nodes(compiled)[1:]
    assert dw.attrs.get("kiln_layout_out") == "NHWC" == pw.attrs.get("kiln_layout_in")
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    # The byte table and onnxruntime may round an activation at a boundary differently: one
    # step (0.04) of one input moves an output by at most 0.04 * max |w| (127 * 0.025).
    assert got.shape == want.shape
    one_step = 0.04 * 127 * 0.025
    diff = np.abs(got - want)
    assert diff.max() <= 2 * one_step
    assert np.mean(diff > 1e-4 * np.abs(want).max()) < 0.05


def test_depthwise_layers_of_one_shape_keep_their_own_weights(isa: str):
    """Two depthwise models of the same shape and different weights, run in turn on one
    thread: each equals onnxruntime (the VNNI loop keeps laid-out taps between calls)."""
    x = RNG.standard_normal((1, 48, 9, 10)).astype(np.float32)
    models = [qdq_depthwise(x, 3, 1), qdq_depthwise(x, 3, 1)]
    compiled = [compile_native(m) for m in models]
    for k in (0, 1, 0, 1):
        _assert_close(compiled[k].run({"x": x})["y"], run_reference(models[k], {"x": x})[0])


@pytest.mark.parametrize(("channels", "out", "size"), [(20, 70, (19, 21)), (96, 24, (16, 33))])
def test_bytes_in_and_out_in_nchw_equal_onnxruntime(isa: str, channels: int, out: int,
                                                    size: tuple):
    """A 3x3 conv reading the NCHW bytes of a QuantizeLinear and writing NCHW bytes the caller
    wants: both go through the byte transpose (16 rows x 64 columns at a time on AVX-512), with
    ragged edges in rows and columns on both sides."""
    x = RNG.standard_normal((2, channels, *size)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.03, 125, inits) + _weights("a", (out, channels, 3, 3), 0, inits)
    nodes += _int32_bias("a", out, 0.03, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "a_wdq", "a_bdq"], ["a"], pads=[1] * 4)]
    inits["y_s"], inits["y_z"] = np.array(0.5, np.float32), np.array(120, np.uint8)
    # the u8 result is the graph's output
    nodes += [helper.make_node("QuantizeLinear", ["a", "y_s", "y_z"], ["y"])]
    model = model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConv"]
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    # a value on a rounding tie may land one step away (float summation order)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert got.shape == want.shape and diff.max() <= 1 and np.mean(diff) < 0.01
    _assert_vnni_and_amx_plans_give(got, model, x, isa)


@pytest.mark.parametrize(("kernel", "stride", "dilation", "pads", "size"), [
    (3, 1, 1, [1, 1, 1, 1], (13, 11)),
    (5, 2, 1, [2, 2, 2, 2], (13, 11)),
    (3, 2, 1, [1, 0, 0, 1], (12, 9)),    # asymmetric padding
    (3, 1, 2, [2, 2, 2, 2], (9, 10)),    # dilated
    (5, 1, 1, [0, 0, 0, 0], (8, 7)),     # no padding: every pixel inside
    (5, 2, 1, [2, 2, 2, 2], (4, 3)),     # narrower than the kernel: every pixel on a border
])
def test_depthwise_reading_nhwc_bytes_pads_its_own_border(isa: str, kernel: int, stride: int,
                                                          dilation: int, pads: list,
                                                          size: tuple):
    """A 1x1 conv hands NHWC bytes to a depthwise conv, which reads them in place: its inner
    pixels straight from the input rows, its border pixels from columns copied next to the zero
    point, rows above or below the image from a row of the zero point. The result equals
    onnxruntime's up to a rounding step of the u8 value between the two layers."""
    x = RNG.standard_normal((2, 24, *size)).astype(np.float32)
    inits: dict = {}
    nodes = _qdq("x", 0.03, 125, inits) + _weights("p", (40, 24, 1, 1), 0, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "p_wdq"], ["p"])]
    nodes += _qdq("p", 0.5, 117, inits) + _weights("d", (40, 1, kernel, kernel), 0, inits)
    nodes += _int32_bias("d", 40, 0.5, inits)
    nodes += [helper.make_node("Conv", ["p_dq", "d_wdq", "d_bdq"], ["y"], group=40,
                               kernel_shape=[kernel] * 2, pads=pads, strides=[stride] * 2,
                               dilations=[dilation] * 2)]
    model = model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)
    compiled = compile_native(model, threads=2)
    assert _ops(compiled) == ["QuantizeLinear", "QConv", "QConv"]
    pw, dw = _plan_nodes(compiled)[1:]
    assert pw.attrs.get("kiln_layout_out") == "NHWC" == dw.attrs.get("kiln_layout_in")
    got = compiled.run({"x": x})["y"]
    want = run_reference(model, {"x": x})[0]
    # one step (0.5) of one u8 input moves an output by at most 0.5 * max |w| (127 * 0.025)
    one_step = 0.5 * 127 * 0.025
    diff = np.abs(got - want)
    assert got.shape == want.shape and diff.max() <= 2 * one_step
    assert np.mean(diff > 1e-4 * np.abs(want).max()) < 0.05
    _assert_vnni_and_amx_plans_give(got, model, x, isa)
