"""fuse-int8 and int8-layout (compiler/passes/fuse_int8.py): Q/DQ and MatMulInteger regions
become kiln::QGemm / QConv / QConvTranspose / QMaxPool only for a backend whose caps list them;
each refusal is counted with its reason; the NHWC hand-over is an attribute of the ops; and the
standard-ONNX expansion of every op equals the fused op (onnxruntime on the expansion, the native
kernels on the op)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import pytest
from compiler_cases import ops
from model_builders import (
    QDQ_RNG,
    dynamic_int8_matmul,
    model_from_arrays,
    qdq_activation,
    qdq_conv_net,
    qdq_depthwise,
    qdq_int32_bias,
    qdq_upsampling_head,
    qdq_weights,
    run_reference,
)
from onnx import helper, numpy_helper

from kiln.backends.base import CompileOptions
from kiln.backends.native.backend import NativeBackend
from kiln.compiler.capabilities import STANDARD_ONNX, BackendCaps
from kiln.compiler.passes.expand_kiln_ops import ExpandKilnOpsPass
from kiln.compiler.passes.fuse_int8 import HandOverInt8Nhwc, int8_rules
from kiln.compiler.passes.rule import RulePass
from kiln.compiler.pipeline import optimize

NATIVE = NativeBackend().caps()


def _fuse(model, caps: BackendCaps = NATIVE) -> tuple[ir.Model, RulePass, RulePass]:
    graph = ir.from_proto(model)
    fuse, layout = RulePass(int8_rules(caps)), RulePass([HandOverInt8Nhwc()])
    fuse(graph)
    layout(graph)
    return graph, fuse, layout


def _native(graph: ir.Model, feeds: dict) -> dict[str, np.ndarray]:
    options = CompileOptions(threads=2, extra={"fallback": None})
    return NativeBackend().compile(graph, None, options).run(feeds)


def _expanded(graph: ir.Model, keep: frozenset[str] = frozenset()) -> ir.Model:
    copy = ir.from_proto(ir.to_proto(graph))
    ExpandKilnOpsPass(keep=keep)(copy)
    return copy


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float summation order (int32 sums scaled once vs float sums)."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4e-6 * float(np.abs(want).max()))


def _matmul(x: np.ndarray, n: int, weight_zero: int = 0):
    inits: dict = {}
    nodes = qdq_activation("x", 0.05, 128, inits)
    nodes += qdq_weights("m", (x.shape[-1], n), 1, inits, zero=weight_zero)
    inits["bias"] = QDQ_RNG.standard_normal(n).astype(np.float32)
    nodes += [helper.make_node("MatMul", ["x_dq", "m_wdq"], ["mm"], name="matmul"),
              helper.make_node("Add", ["mm", "bias"], ["a"]),
              helper.make_node("Relu", ["a"], ["r"])]
    nodes += qdq_activation("r", 0.04, 0, inits)
    return model_from_arrays(nodes, {"x": x}, ["r_q"], opset=21, initializers=inits)


def _gemm(x: np.ndarray, n: int):
    inits: dict = {}
    nodes = qdq_activation("x", 0.04, 120, inits) + qdq_weights("g", (n, x.shape[1]), 0, inits)
    nodes += qdq_int32_bias("g", n, 0.04, inits)
    nodes += [helper.make_node("Gemm", ["x_dq", "g_wdq", "g_bdq"], ["y"], transB=1,
                               name="gemm")]
    return model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)


def _conv(x: np.ndarray, group: int = 1, activation: str = "Relu"):
    inits: dict = {}
    c = x.shape[1]
    nodes = qdq_activation("x", 0.03, 128, inits) + qdq_weights("c", (6, c // group, 3, 3), 0,
                                                                inits)
    nodes += [helper.make_node("Conv", ["x_dq", "c_wdq"], ["y"], pads=[1] * 4, group=group,
                               name="conv"),
              helper.make_node(activation, ["y"], ["a"])]
    return model_from_arrays(nodes, {"x": x}, ["a"], opset=21, initializers=inits)


def test_conv_net_becomes_int8_ops_handing_u8_over_in_nhwc():
    x = QDQ_RNG.standard_normal((2, 3, 11, 9)).astype(np.float32)
    graph, fuse, layout = _fuse(qdq_conv_net(x))
    assert ops(graph) == ["QuantizeLinear", "kiln::QConv", "kiln::QConv", "kiln::QMaxPool",
                          "kiln::QConv"]  # the dequantizations went with their readers
    assert fuse.fired == {"FuseQdqIntoQConv": 3, "FuseQdqIntoQMaxPool": 1}
    assert not fuse.rejected
    conv1, conv2, pool, conv3 = (n for n in graph.graph if n.domain == "kiln")
    layouts = [(n.attributes.get("kiln_layout_in"), n.attributes.get("kiln_layout_out"))
               for n in (conv1, conv2, pool, conv3)]
    assert [(i and i.value, o and o.value) for i, o in layouts] == [
        (None, "NHWC"), ("NHWC", "NHWC"), ("NHWC", "NHWC"), ("NHWC", None)]
    assert layout.fired == {"HandOverInt8Nhwc": 3} and not layout.rejected
    assert conv1.attributes["activation"].value == "Relu"
    assert conv3.attributes["activation"].value == ""


@pytest.mark.parametrize("case", ["conv_net", "matmul", "gemm", "dynamic", "table",
                                  "upsampling"])
def test_expansion_equals_the_fused_ops(case: str):
    """The expansion on onnxruntime equals the fused ops on the native kernels, and the model
    as written on onnxruntime; the expansion has no kiln op and no leftover Transpose. The
    table case is depthwise -> byte table -> pointwise, handing u8 over in NHWC."""
    x = {"conv_net": lambda: QDQ_RNG.standard_normal((2, 3, 12, 10)),
         "matmul": lambda: QDQ_RNG.standard_normal((3, 5, 24)) * 2,
         "gemm": lambda: QDQ_RNG.standard_normal((6, 20)),
         "dynamic": lambda: QDQ_RNG.standard_normal((1, 7, 32)),
         "table": lambda: QDQ_RNG.standard_normal((2, 12, 9, 8)),
         "upsampling": lambda: QDQ_RNG.standard_normal((1, 8, 6, 5))}[case]().astype(np.float32)
    model = {"conv_net": qdq_conv_net, "matmul": lambda a: _matmul(a, 40),
             "gemm": lambda a: _gemm(a, 9),
             "dynamic": lambda a: dynamic_int8_matmul(a, 24),
             "table": lambda a: qdq_depthwise(a, 5, 2, hard_swish=True, pointwise=10),
             "upsampling": lambda a: qdq_upsampling_head(a, 12, 3)}[case](x)
    graph, fuse, _ = _fuse(model)
    assert sum(fuse.fired.values()) >= 1
    expanded = _expanded(graph)
    assert not any(n.domain == "kiln" or n.op_type == "Transpose" for n in expanded.graph)
    feeds = {"x": x}
    fused = next(iter(_native(graph, feeds).values()))
    on_ort = run_reference(expanded, feeds)[0]
    as_written = run_reference(model, feeds)[0]
    if fused.dtype == np.uint8:  # requantized: a value on a rounding tie may move one step
        assert np.abs(fused.astype(int) - on_ort.astype(int)).max() <= 1
        assert np.abs(on_ort.astype(int) - as_written.astype(int)).max() <= 1
    elif case == "upsampling":
        # onnxruntime's int8 ConvTranspose rounds the float bias to int32 (scale a_scale *
        # w_scale): a Relu'd byte that close to a rounding tie lands one step (0.3) away and
        # moves the four outputs it feeds; the native kernel adds the bias in float
        diff = np.abs(fused - on_ort)
        assert diff.max() <= 2 * 0.3 * 127 * 0.025
        assert np.mean(diff > 4e-6 * np.abs(on_ort).max() + 1e-5 * np.abs(on_ort)) < 0.02
        assert np.abs(on_ort - as_written).max() <= 2 * 0.3 * 127 * 0.025
    else:
        _close(fused, on_ort)
        if case == "table":  # the chain in float on onnxruntime may round a tie the other way
            one_step = 0.04 * 127 * 0.025
            assert np.abs(on_ort - as_written).max() <= 2 * one_step
        else:
            _close(on_ort, as_written)


def test_an_int8_op_kept_next_to_an_expanded_one_still_hands_over_nhwc():
    """A backend keeping QConv but not QMaxPool: the expanded pool reads and writes NHWC
    through Transposes, so the mixed graph equals the fused one."""
    x = QDQ_RNG.standard_normal((1, 3, 10, 10)).astype(np.float32)
    graph, _, _ = _fuse(qdq_conv_net(x))
    mixed = _expanded(graph, keep=frozenset({"QConv"}))
    assert ops(mixed).count("Transpose") == 2 and ops(mixed).count("kiln::QConv") == 3
    feeds = {"x": x}
    np.testing.assert_array_equal(_native(mixed, feeds)["out"], _native(graph, feeds)["out"])


def test_refusals_name_their_reason():
    x = QDQ_RNG.standard_normal((4, 16)).astype(np.float32)
    graph, fuse, _ = _fuse(_matmul(x, 8, weight_zero=3))
    assert not fuse.fired and "kiln::QGemm" not in ops(graph)
    assert fuse.rejected == {
        "FuseQdqIntoQGemm: the weights are asymmetric (a zero point is not 0)": 1}


def test_groups_and_activations_follow_the_caps():
    """Grouped convolutions and other epilogues wait for the backend's caps: turning them on
    is a caps change, and the op carries group and activation as attributes."""
    x = QDQ_RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    _, fuse, _ = _fuse(_conv(x, group=2))  # native: one group or depthwise
    assert fuse.rejected == {
        "FuseQdqIntoQConv: grouped (group 2, 2 channels per group, 3 filters per group): "
        "the backend's QConv runs one group or depthwise only": 1}
    wider = dataclasses.replace(NATIVE, qconv_groups="any",
                                int8_activations=frozenset({"Relu", "Sigmoid"}))
    graph, fuse, _ = _fuse(_conv(x, group=2, activation="Sigmoid"), wider)
    [qconv] = [n for n in graph.graph if n.domain == "kiln"]
    assert qconv.attributes["group"].value == 2
    assert qconv.attributes["activation"].value == "Sigmoid"
    graph, _, _ = _fuse(_conv(x, activation="Sigmoid"))  # native: Relu only
    assert ops(graph)[-1] == "Sigmoid"


def test_depthwise_follows_the_caps():
    """Native runs depthwise QConv (group == channels, one filter each); a backend whose QConv
    runs one group leaves it, and a channel multiplier is not depthwise."""
    x = QDQ_RNG.standard_normal((1, 5, 7, 7)).astype(np.float32)
    graph, fuse, _ = _fuse(qdq_depthwise(x))
    assert fuse.fired == {"FuseQdqIntoQConv": 1} and not fuse.rejected
    [qconv] = [n for n in graph.graph if n.domain == "kiln"]
    assert qconv.attributes["group"].value == 5
    _, fuse, _ = _fuse(qdq_depthwise(x), dataclasses.replace(NATIVE, qconv_groups="one"))
    assert fuse.rejected == {
        "FuseQdqIntoQConv: grouped (group > 1): the backend's QConv runs one group only": 1}
    x2 = QDQ_RNG.standard_normal((1, 6, 7, 7)).astype(np.float32)
    _, fuse, _ = _fuse(_conv(x2, group=6))  # 6 filters of one channel each, 1 per group: ok
    assert fuse.fired == {"FuseQdqIntoQConv": 1}
    _, fuse, _ = _fuse(_conv(QDQ_RNG.standard_normal((1, 3, 7, 7)).astype(np.float32),
                             group=3))  # 6 filters over 3 channels: 2 per group
    assert list(fuse.rejected) == [
        "FuseQdqIntoQConv: grouped (group 3, 1 channels per group, 2 filters per group): "
        "the backend's QConv runs one group or depthwise only"]


def _chain_on_bytes(model) -> np.ndarray:
    """onnxruntime running the model's DQ -> hard-swish chain -> Q on the 256 bytes."""
    graph = ir.from_proto(model)
    dq = next(n for n in graph.graph if n.outputs[0].name == "d_y_dq")
    q = next(n for n in graph.graph if n.outputs[0].name == "act_q")
    nodes = [n for n in graph.graph if n.outputs[0].name in ("hs", "hsw", "scaled", "act")]
    sub = helper.make_graph(
        [ir.serde.serialize_node(n) for n in (dq, *nodes, q)], "chain",
        [helper.make_tensor_value_info("d_y_q", 2, [256])],
        [helper.make_tensor_value_info("act_q", 2, [256])],
        [ir.serde.serialize_tensor(v.const_value) for v in graph.graph.initializers.values()])
    chain = helper.make_model(sub, opset_imports=[helper.make_opsetid("", 21)])
    return run_reference(chain, {"d_y_q": np.arange(256, dtype=np.uint8)})[0]


def test_an_activation_chain_between_quantizations_becomes_the_byte_table():
    x = QDQ_RNG.standard_normal((1, 7, 6, 6)).astype(np.float32)
    model = qdq_depthwise(x, hard_swish=True)
    graph, fuse, _ = _fuse(model)
    assert fuse.fired == {"FuseQdqIntoQConv": 1, "FuseByteTableIntoQOp": 1}
    assert not fuse.rejected
    assert ops(graph) == ["QuantizeLinear", "kiln::QConv", "DequantizeLinear", "Identity"]
    [qconv] = [n for n in graph.graph if n.domain == "kiln"]
    table = qconv.inputs[8].const_value.numpy()
    assert table.dtype == np.uint8 and table.shape == (256,)
    # the Q after the chain is what the op writes now: its scale and zero point go on
    assert qconv.outputs[0].uses()[0].node.inputs[1].name == "act_s"
    # onnxruntime's float ops on the same bytes: equal up to a value on a rounding tie
    want = _chain_on_bytes(model)
    assert np.abs(table.astype(int) - want.astype(int)).max() <= 1
    assert np.mean(table != want) < 0.01
    # without the caps field the chain stays as written
    graph, fuse, _ = _fuse(model, dataclasses.replace(NATIVE, int8_byte_table=False))
    assert fuse.fired == {"FuseQdqIntoQConv": 1} and "HardSigmoid" in ops(graph)


def test_a_chain_that_cannot_be_a_table_says_why():
    x = QDQ_RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    model = qdq_depthwise(x, hard_swish=True)
    model.graph.output.append(helper.make_tensor_value_info("hsw", 1, None))
    graph, fuse, _ = _fuse(model)
    assert fuse.rejected == {"FuseByteTableIntoQOp: a value of the chain is a graph output": 1}
    assert "HardSigmoid" in ops(graph)
    model = qdq_depthwise(x, hard_swish=True)
    scale = next(t for t in model.graph.initializer if t.name == "sc")
    scale.CopyFrom(numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "sc"))
    _, fuse, _ = _fuse(model)  # a per-channel scale: not a function of one byte
    assert fuse.rejected == {"FuseByteTableIntoQOp: Mul has an input that is neither the "
                             "chain's value nor a scalar float32 constant": 1}


def test_a_u8_result_the_caller_reads_stays_nchw():
    x = QDQ_RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    model = qdq_conv_net(x)
    model.graph.output.append(helper.make_value_info("r1_q", helper.make_tensor_type_proto(
        2, None)))
    graph, _, layout = _fuse(model)
    conv1 = next(n for n in graph.graph if n.op_type == "QConv")
    assert "kiln_layout_out" not in conv1.attributes
    assert layout.rejected == {"HandOverInt8Nhwc: the u8 result is a graph output": 1}


def test_only_a_backend_listing_the_ops_gets_them():
    x = QDQ_RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    plain, report = optimize(ir.from_proto(qdq_conv_net(x)), 2, None, STANDARD_ONNX)
    assert not any(n.domain == "kiln" for n in plain.graph)
    assert "fuse-int8" not in report.pipeline
    native, report = optimize(ir.from_proto(qdq_conv_net(x)), 2, None, NATIVE)
    assert ops(native).count("kiln::QConv") == 3
    fuse = next(p for p in report.passes if p.name == "fuse-int8")
    assert fuse.fired == {"FuseQdqIntoQConv": 3, "FuseQdqIntoQMaxPool": 1}
    # before the epilogue fusion, which would otherwise take Conv -> Relu out of the region
    assert report.pipeline.index("fuse-int8") < report.pipeline.index("fuse-epilogue")
