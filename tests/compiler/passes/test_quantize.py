"""Static and dynamic int8 Q/DQ insertion: structure, numbers, and what onnxruntime fuses."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from compiler_cases import ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler import accuracy, calibrate
from kiln.compiler.passes import quantize
from kiln.compiler.target import Target
from kiln.errors import InputError


def small_cnn(opset: int = 17) -> ir.Model:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r2", "p1"], ["s"], name="residual"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc"),
    ]
    inits = {"w1": rand(8, 3, 3, 3, seed=1) * 0.5, "b1": rand(8, seed=2) * 0.1,
             "w2": rand(8, 8, 3, 3, seed=3) * 0.3, "b2": rand(8, seed=4) * 0.1,
             "wf": rand(5, 8, seed=5), "bf": rand(5, seed=6)}
    return float_model(nodes, {"x": [1, 3, 16, 16]}, {"y": [1, 5]}, inits, opset=opset)


def feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(n)]


def quantized(model: ir.Model, **kwargs) -> tuple[ir.Model, quantize.QuantizeStaticPass]:
    ranges = calibrate.collect_ranges(model, feeds(8), method="minmax")
    copy = ir.from_proto(ir.to_proto(model))
    step = quantize.QuantizeStaticPass(ranges, **kwargs)
    assert step(copy).modified
    return copy, step


def _dq_of(model: ir.Model, node_name: str, index: int) -> ir.Node:
    node = next(n for n in model.graph if n.name == node_name)
    producer = node.inputs[index].producer()
    assert producer is not None and producer.op_type == "DequantizeLinear"
    return producer


def test_weights_per_channel_int8_and_bias_int32():
    model, step = quantized(small_cnn())
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    assert set(step.stats.nodes) == {"conv1", "conv2", "fc"}
    assert step.stats.weights == 3 and step.stats.biases == 3
    w_dq = _dq_of(model, "conv2", 1)
    assert w_dq.inputs[0].const_value.numpy().dtype == np.int8
    assert w_dq.attributes["axis"].as_int() == 0
    assert w_dq.inputs[1].const_value.numpy().shape == (8,)
    assert np.abs(w_dq.inputs[0].const_value.numpy()).max() == 127
    b_dq = _dq_of(model, "conv2", 2)
    assert b_dq.inputs[0].const_value.numpy().dtype == np.int32
    x_scale = _dq_of(model, "conv2", 0).inputs[1].const_value.numpy()
    np.testing.assert_allclose(b_dq.inputs[1].const_value.numpy(),
                               x_scale * w_dq.inputs[1].const_value.numpy(), rtol=1e-6)


def test_relu_is_fused_and_activations_are_uint8_for_vnni():
    model, _ = quantized(small_cnn(), scheme=quantize.scheme_for(Target.parse("cpu:avx512_vnni")))
    relu = next(n for n in model.graph if n.name == "relu1")
    assert relu.inputs[0].producer().op_type == "Conv"  # no Q/DQ between Conv and its Relu
    assert relu.outputs[0].consumers()[0].op_type == "QuantizeLinear"
    zps = {n.inputs[2].const_value.numpy().dtype for n in model.graph
           if n.op_type == "QuantizeLinear"}
    assert zps == {np.dtype(np.uint8)}


def test_int8_activations_are_symmetric():
    assert quantize.scheme_for(Target.parse("cpu")).activation == "int8"
    model, _ = quantized(small_cnn(), scheme=quantize.QuantScheme("int8"))
    for n in model.graph:
        if n.op_type == "QuantizeLinear":
            zp = n.inputs[2].const_value.numpy()
            assert zp.dtype == np.int8 and int(zp) == 0


def test_outputs_stay_close_to_fp32():
    model = small_cnn()
    q, _ = quantized(model)
    rep = accuracy.evaluate(accuracy.onnxruntime_runner(model), accuracy.onnxruntime_runner(q),
                            feeds(6, seed=1))
    assert rep.outputs[0].cosine_min > 0.995


def test_an_activation_that_is_also_a_graph_output_stays_float_there():
    """The second conv reads p1 through Q/DQ; p1 is also a graph output, which stays the
    MaxPool's float result (a DenseNet-style head made the rewrite fail before)."""
    model = small_cnn()
    p1 = next(v for n in model.graph for v in n.outputs if v.name == "p1")
    model.graph.outputs.append(p1)
    q, step = quantized(model)
    out = next(v for v in q.graph.outputs if v.name == "p1")
    assert out.producer().op_type == "MaxPool"
    conv2 = next(n for n in q.graph if n.name == "conv2")
    assert conv2.inputs[0].producer().op_type == "DequantizeLinear"
    x = feeds(1, seed=3)[0]
    np.testing.assert_allclose(run_reference(q, x)[1], run_reference(model, x)[1], atol=0.05)


def test_onnxruntime_fuses_to_int8_kernels(tmp_path):
    q, _ = quantized(small_cnn())
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(ir.to_proto(q).SerializeToString(), opts,
                         providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert "QLinearConv" in fused


def test_exclude_by_name_and_by_op_type():
    _, by_name = quantized(small_cnn(), exclude={"conv2"})
    assert set(by_name.stats.nodes) == {"conv1", "fc"}
    assert by_name.stats.skipped["conv2"] == "excluded"
    _, by_type = quantized(small_cnn(), exclude={"Gemm"})
    assert "fc" not in by_type.stats.nodes


def test_old_opset_is_refused():
    with pytest.raises(ir.passes.PreconditionError, match="opset >= 13"):
        quantize.QuantizeStaticPass({})(small_cnn(opset=11))


def test_scale_and_zero_point_math():
    scale, zp = quantize.activation_params(calibrate.Range(-1.0, 3.0),
                                           quantize.QuantScheme("uint8"))
    assert scale == pytest.approx(4.0 / 255.0) and int(zp) == 64
    q, s = quantize.quantize_weight(np.array([[1.0, -0.5], [0.0, 0.0]], np.float32), axis=0)
    assert q.tolist() == [[127, -64], [0, 0]] and s.tolist() == [pytest.approx(1 / 127), 1.0]


def _mlp() -> ir.Model:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1, name="gemm2")]
    return float_model(nodes, {"x": [4, 32]}, {"y": [4, 16]},
                       {"w1": rand(32, 64, seed=1), "w2": rand(16, 64, seed=2),
                       "b2": rand(16, seed=3)})


def test_dynamic_quantization():
    model = _mlp()
    q = ir.from_proto(ir.to_proto(model))
    step = quantize.QuantizeDynamicPass()
    assert step(q).modified
    assert sorted(step.stats.nodes) == ["gemm2", "mm1"]
    assert ops(q).count("MatMulInteger") == 2 and "MatMul" not in ops(q)
    onnx.checker.check_model(ir.to_proto(q), full_check=True)
    x = {"x": rand(4, 32, seed=9)}
    want, got = run_reference(model, x)[0], run_reference(q, x)[0]
    assert accuracy.cosine(want, got) > 0.999
    assert [o.name for o in q.graph.outputs] == ["y"]


def test_dynamic_weights_form_keeps_float_matmuls_on_int8_weights():
    model = _mlp()
    q = ir.from_proto(ir.to_proto(model))
    step = quantize.QuantizeDynamicPass(form="weights")
    assert step(q).modified
    assert sorted(step.stats.nodes) == ["gemm2", "mm1"]
    assert "DynamicQuantizeLinear" not in ops(q) and "MatMulInteger" not in ops(q)
    assert ops(q).count("DequantizeLinear") == 2 and ops(q).count("MatMul") == 2
    for node in q.graph:
        if node.op_type == "DequantizeLinear":
            assert node.inputs[0].const_value.dtype == ir.DataType.INT8
            assert node.attributes["axis"].as_int() == 1
    onnx.checker.check_model(ir.to_proto(q), full_check=True)
    x = {"x": rand(4, 32, seed=9)}
    want, got = run_reference(model, x)[0], run_reference(q, x)[0]
    assert accuracy.cosine(want, got) > 0.999
    assert [o.name for o in q.graph.outputs] == ["y"]


def test_dynamic_weights_form_runs_on_openvino():
    ov = pytest.importorskip("openvino")
    model = _mlp()
    x = rand(4, 32, seed=9)
    want = run_reference(model, {"x": x})[0]
    quantize.QuantizeDynamicPass(form="weights")(model)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(ir.to_proto(model).SerializeToString(), b""),
                                  "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    # OpenVINO also quantizes the activations (per group of 32): compare with fp32 overall
    assert accuracy.cosine(want, compiled({"x": x})[0]) > 0.995


def test_unknown_dynamic_form_is_refused():
    with pytest.raises(ValueError, match="dynamic quantization form"):
        quantize.QuantizeDynamicPass(form="float")


def test_dynamic_skips_activation_matmuls():
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")]
    model = float_model(nodes, {"a": [2, 3], "b": [3, 2]}, {"y": [2, 2]}, {})
    step = quantize.QuantizeDynamicPass()
    assert not step(model).modified
    assert "constant" in step.stats.skipped["mm"]


def test_int32_bias_saturates_with_the_right_sign():
    from kiln.compiler.passes.quantize import int32_bias

    bias = np.array([3e9, -3e9, 5.0, 2147483000.0], np.float32)
    q = int32_bias(bias, np.ones(4, np.float32))
    assert q.tolist() == [2**31 - 1, -(2**31), 5, 2147483008]


def mobile_block() -> ir.Model:
    """conv -> per-channel affine -> hard-swish written as x*clip(x+3, 0, 6)/6 -> depthwise conv
    -> relu -> conv, a residual Add, a head conv: the shape of a PP-OCR det backbone block."""
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Mul", ["c1", "gamma"], ["m1"]),
        helper.make_node("Add", ["m1", "beta"], ["a1"], name="affine"),
        helper.make_node("Add", ["a1", "three"], ["a3"], name="plus3"),
        helper.make_node("Clip", ["a3", "zero", "six"], ["r6"]),
        helper.make_node("Mul", ["a1", "r6"], ["m6"]),
        helper.make_node("Div", ["m6", "six"], ["hs"]),
        helper.make_node("Conv", ["hs", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=c,
                         name="dwconv"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pwconv"),
        helper.make_node("Add", ["c3", "hs"], ["s"], name="residual"),
        helper.make_node("Conv", ["s", "w4"], ["y"], name="head"),
    ]
    inits = {"w1": rand(c, 3, 3, 3, seed=1) * 0.5, "b1": rand(c, seed=2) * 0.1,
             "gamma": rand(1, c, 1, 1, seed=7) + 1.0, "beta": rand(1, c, 1, 1, seed=8) * 0.2,
             "three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32),
             "six": np.array(6.0, np.float32),
             "w2": rand(c, 1, 3, 3, seed=3) * 0.5, "b2": rand(c, seed=4) * 0.1,
             "w3": rand(c, c, 1, 1, seed=5) * 0.3, "b3": rand(c, seed=6) * 0.1,
             "w4": rand(c, c, 1, 1, seed=9) * 0.3}
    return float_model(nodes, {"x": [1, 3, 16, 16]}, {"y": [1, c, 16, 16]}, inits)


def mobile_feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 16, 16), dtype=np.float32) * 2}
            for _ in range(n)]


def quantized_inputs_form(model: ir.Model, form: str = "inputs") -> ir.Model:
    ranges = calibrate.collect_ranges(model, mobile_feeds(8), method="minmax")
    copy = ir.from_proto(ir.to_proto(model))
    step = quantize.QuantizeStaticPass(ranges, quantize.scheme_for(None, form), form=form)
    assert step(copy).modified
    assert set(step.stats.nodes) == {"conv1", "dwconv", "pwconv", "head"}
    return copy


def _reads_dq(model: ir.Model, node_name: str) -> list[bool]:
    node = next(n for n in model.graph if n.name == node_name)
    return [v is not None and v.producer() is not None
            and v.producer().op_type == "DequantizeLinear" for v in node.inputs]


def test_inputs_form_quantizes_only_what_int8_ops_read():
    q = quantized_inputs_form(mobile_block())
    onnx.checker.check_model(ir.to_proto(q), full_check=True)
    for conv in ("conv1", "dwconv", "pwconv", "head"):
        assert _reads_dq(q, conv)[:2] == [True, True]
    for conv in ("conv1", "dwconv", "head"):  # pwconv feeds the int8 residual Add
        out = next(n for n in q.graph if n.name == conv).outputs[0]
        assert "QuantizeLinear" not in {u.op_type for u, _ in out.uses()}
    # the float tail after conv1 and the Relu after the depthwise conv stay unquantized
    assert next(n for n in q.graph if n.name == "affine").inputs[0].producer().op_type == "Mul"
    assert next(n for n in q.graph if n.name == "relu2").inputs[0].producer().name == "dwconv"
    # the residual Add reads both inputs through Q/DQ (the plugin adds them in int8)
    assert _reads_dq(q, "residual") == [True, True]
    assert [v.name for v in q.graph.outputs] == ["y"]


def test_inputs_form_quantizes_pool_inputs_but_not_relu_inputs():
    """OpenVINO runs MaxPool on int8 and folds a Relu into the conv before it."""
    model, _ = quantized(small_cnn(), scheme=quantize.QuantScheme("symmetric"), form="inputs")
    relu = next(n for n in model.graph if n.name == "relu1")
    assert relu.inputs[0].producer().name == "conv1"
    pool = next(n for n in model.graph if n.op_type == "MaxPool")
    assert pool.inputs[0].producer().op_type == "DequantizeLinear"


def test_inputs_form_activations_are_symmetric_and_signed_by_range():
    q = quantized_inputs_form(mobile_block())
    types = {}
    for n in q.graph:
        if n.op_type == "QuantizeLinear":
            zp = n.inputs[2].const_value.numpy()
            assert int(zp) == 0
            types[n.inputs[0].name] = zp.dtype
    assert types["x"] == np.int8 and types["hs"] == np.int8  # both reach below zero
    assert types["r2"] == np.uint8  # a Relu output: the whole u8 range for [0, hi]
    scale, zp = quantize.activation_params(calibrate.Range(0.0, 5.1),
                                           quantize.QuantScheme("symmetric"))
    assert scale == pytest.approx(0.02) and zp.dtype == np.uint8 and int(zp) == 0
    scale, zp = quantize.activation_params(calibrate.Range(-1.0, 2.54),
                                           quantize.QuantScheme("symmetric"))
    assert scale == pytest.approx(0.02) and zp.dtype == np.int8 and int(zp) == 0


def test_inputs_form_agrees_with_fp32():
    model = mobile_block()
    q = quantized_inputs_form(model)
    rep = accuracy.evaluate(accuracy.onnxruntime_runner(model), accuracy.onnxruntime_runner(q),
                            mobile_feeds(4, seed=5))
    assert rep.outputs[0].cosine_min > 0.995


def _openvino_convs(model: ir.Model, kind: str = "Convolution") -> tuple[dict[str, str], object]:
    """Runtime precision of each layer of type ``kind`` OpenVINO's CPU plugin compiled, and
    the compiled model."""
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(ir.to_proto(model).SerializeToString(), b""),
                                  "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    convs = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == kind:
            convs[op.get_friendly_name()] = info["runtimePrecision"].astype(str)
    return convs, compiled


def test_inputs_form_runs_int8_convs_on_openvino_and_agrees_with_fp32():
    model = mobile_block()
    q = quantized_inputs_form(model)
    convs, compiled = _openvino_convs(q)
    assert len(convs) == 4 and set(convs.values()) <= {"u8", "i8"}
    for x in mobile_feeds(3, seed=11):
        want = run_reference(model, x)[0]
        assert accuracy.cosine(want, compiled(x)[0]) > 0.995


def test_openvino_folds_the_conv_tails_of_the_inputs_form():
    """The float ops between convs become Conv post-ops: fewer kernels of their own (eltwise
    subgraphs, reorders) than with Q/DQ also on every conv output."""
    model = mobile_block()
    _, chained = _openvino_convs(quantized_inputs_form(model, "chained"))
    _, inputs = _openvino_convs(quantized_inputs_form(model))

    def extra_kernels(compiled) -> int:
        kinds = [op.get_rt_info()["layerType"].astype(str)
                 for op in compiled.get_runtime_model().get_ordered_ops()]
        return sum(k not in ("Const", "Convolution", "Reshape", "Input", "Output")
                   for k in kinds)

    assert extra_kernels(inputs) < extra_kernels(chained)


def upsampling_head(kernel: int = 2) -> ir.Model:
    """conv -> relu -> ConvTranspose kernel x kernel, stride 2 (2: the PP-OCR det head's
    upsampling, each output pixel one tap; 3: neighbouring taps overlap)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["y"],
                         kernel_shape=[kernel] * 2, strides=[2, 2], name="up"),
    ]
    inits = {"w1": rand(8, 3, 3, 3, seed=1) * 0.5, "b1": rand(8, seed=2) * 0.1,
             "wt": rand(8, 4, kernel, kernel, seed=3) * 0.5, "bt": rand(4, seed=4) * 0.1}
    side = 30 + kernel  # (16 - 1) * 2 + kernel
    return float_model(nodes, {"x": [1, 3, 16, 16]}, {"y": [1, 4, side, side]}, inits)


@pytest.mark.parametrize("form", quantize.STATIC_FORMS)
def test_conv_transpose_is_int8_in_the_inputs_form_and_chained_with_one_tap(form):
    """The inputs form quantizes every ConvTranspose (OpenVINO runs them on int8); the chained
    form one whose kernel equals its stride (kiln's native QConvTranspose), its Relu'd input
    quantized once, after the Relu."""
    model = upsampling_head()
    ranges = calibrate.collect_ranges(model, mobile_feeds(4), method="minmax")
    q = ir.from_proto(ir.to_proto(model))
    step = quantize.QuantizeStaticPass(ranges, quantize.scheme_for(None, form), form=form)
    step(q)
    onnx.checker.check_model(ir.to_proto(q), full_check=True)
    assert "up" in step.stats.nodes and _reads_dq(q, "up") == [True, True, False]
    w_dq = _dq_of(q, "up", 1)
    assert w_dq.attributes["axis"].as_int() == 1  # per output channel of [C_in, C_out, kh, kw]
    assert w_dq.inputs[1].const_value.numpy().shape == (4,)
    if form == "chained":  # conv1 -> Relu -> Q, the Relu fused; the float result stays float
        quantized = {n.inputs[0].name for n in q.graph if n.op_type == "QuantizeLinear"}
        assert "r1" in quantized and "c1" not in quantized and "y" not in quantized
        return
    deconvs, compiled = _openvino_convs(q, "Deconvolution")
    assert len(deconvs) == 1 and set(deconvs.values()) <= {"u8", "i8"}
    for x in mobile_feeds(2, seed=12):
        assert accuracy.cosine(run_reference(model, x)[0], compiled(x)[0]) > 0.995


def test_conv_transpose_whose_taps_overlap_stays_float_in_the_chained_form():
    model = upsampling_head(kernel=3)
    ranges = calibrate.collect_ranges(model, mobile_feeds(4), method="minmax")
    step = quantize.QuantizeStaticPass(ranges, quantize.scheme_for(None, "chained"))
    step(model)
    assert "up" not in step.stats.nodes and _reads_dq(model, "up") == [False, False, False]
    assert "kernel [3, 3] is not its strides [2, 2]" in step.stats.skipped["up"]


def test_unknown_static_form_is_refused():
    with pytest.raises(InputError, match="static int8 form"):
        quantize.QuantizeStaticPass({}, form="outputs")
    with pytest.raises(InputError, match="activation type"):
        quantize.QuantScheme("int4")
