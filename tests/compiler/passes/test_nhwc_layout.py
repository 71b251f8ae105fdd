"""HandOverF32Nhwc: float activations handed from conv to conv in NHWC, kept NCHW at every
other reader; the native engine's result and the expansion's (Transposes) equal the model's."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from model_builders import model_from_arrays, run_reference
from onnx import helper

from kiln.backends.base import CompileOptions
from kiln.backends.native.backend import NativeBackend
from kiln.compiler.passes.expand_kiln_ops import ExpandKilnOpsPass
from kiln.compiler.passes.nhwc_layout import HandOverF32Nhwc, hands_over_nhwc
from kiln.compiler.passes.rule import RulePass
from kiln.compiler.pipeline import build_pipeline, optimize

NATIVE = NativeBackend().caps()
rng = np.random.default_rng(7)


def _w(k: int, c: int, kernel: int) -> np.ndarray:
    return (rng.standard_normal((k, c, kernel, kernel)) * (1.0 / np.sqrt(c * kernel))).astype(
        np.float32)


def _bottleneck_net() -> tuple:
    """stem 1x1 -> [reduce 1x1 -> 3x3 s1 -> expand 1x1 + residual] -> 3x3 s2 -> 1x1 s2 (plain
    Conv, no epilogue) -> MaxPool, with the expand's result also a graph output."""
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
    inits = {"w_stem": _w(64, 8, 1), "w_red": _w(64, 64, 1), "w_3x3": _w(64, 64, 3),
             "w_exp": _w(64, 64, 1), "w_s2": _w(72, 64, 3), "w_down": _w(80, 72, 1)}
    for name in ("stem", "red", "3x3", "exp", "s2"):
        inits[f"b_{name}"] = rng.standard_normal(inits[f"w_{name}"].shape[0]).astype(np.float32)
    conv = helper.make_node
    nodes = [
        conv("Conv", ["x", "w_stem", "b_stem"], ["stem_c"], name="stem"),
        conv("Relu", ["stem_c"], ["stem"]),
        conv("Conv", ["stem", "w_red", "b_red"], ["red_c"], name="reduce"),
        conv("Relu", ["red_c"], ["red"]),
        conv("Conv", ["red", "w_3x3", "b_3x3"], ["mid_c"], pads=[1, 1, 1, 1], name="conv3x3"),
        conv("Relu", ["mid_c"], ["mid"]),
        conv("Conv", ["mid", "w_exp", "b_exp"], ["exp_c"], name="expand"),
        conv("Add", ["exp_c", "stem"], ["sum"]),
        conv("Relu", ["sum"], ["block"]),
        conv("Conv", ["block", "w_s2", "b_s2"], ["s2_c"], strides=[2, 2], pads=[1, 1, 1, 1],
             name="conv_s2"),
        conv("Relu", ["s2_c"], ["s2"]),
        conv("Conv", ["s2", "w_down"], ["down"], strides=[2, 2], name="down"),
        conv("MaxPool", ["down"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model = model_from_arrays(nodes, {"x": x}, ["y", "block"], initializers=inits)
    return model, {"x": x}


def _native_graph(model) -> ir.Model:
    """``model`` through the default pipeline for the native engine."""
    graph = optimize(ir.from_proto(model), caps=NATIVE)
    return graph[0] if isinstance(graph, tuple) else graph


def _layouts(graph: ir.Model) -> dict[str, tuple[str, str, str]]:
    def get(node: ir.Node, key: str) -> str:
        found = node.attributes.get(key)
        return found.value if found is not None else "NCHW"

    return {n.name: (get(n, "kiln_layout_in"), get(n, "kiln_layout_out"),
                     get(n, "kiln_layout_residual"))
            for n in graph.graph if n.op_type in ("FusedConv", "Conv")}


def test_convs_hand_over_nhwc_and_keep_nchw_elsewhere():
    model, _ = _bottleneck_net()
    graph = _native_graph(model)
    assert _layouts(graph) == {
        # its result is read by reduce (1x1) and as expand's residual: NHWC
        "stem": ("NCHW", "NHWC", "NCHW"),
        # read by a 3x3 stride-1 conv, which stays NCHW
        "reduce": ("NHWC", "NCHW", "NCHW"),
        "conv3x3": ("NCHW", "NCHW", "NCHW"),
        # a graph output: NCHW, its residual NHWC
        "expand": ("NCHW", "NCHW", "NHWC"),
        # the plain Conv it feeds became a FusedConv to read NHWC
        "conv_s2": ("NCHW", "NHWC", "NCHW"),
        # read by MaxPool
        "down": ("NHWC", "NCHW", "NCHW"),
    }
    assert all(n.domain == "kiln" for n in graph.graph if n.name == "down")


def test_rule_explains_its_refusals():
    model, _ = _bottleneck_net()
    graph = _native_graph(model)
    for node in graph.graph:  # undo: the rule alone, from NCHW
        for key in ("kiln_layout_in", "kiln_layout_out", "kiln_layout_residual"):
            node.attributes.pop(key, None)
    layout = RulePass([HandOverF32Nhwc()])
    layout(graph)
    reasons = " | ".join(layout.rejected)
    assert "MaxPool" in reasons and "graph output" in reasons and "reads NCHW" in reasons
    assert layout.fired == {"HandOverF32Nhwc": 2}


def test_only_for_a_backend_that_reads_nhwc():
    names = [name for name, _ in build_pipeline(2, caps=NATIVE)]
    assert "f32-layout" in names
    plain = dataclasses.replace(NATIVE, f32_nhwc=False)
    assert "f32-layout" not in [name for name, _ in build_pipeline(2, caps=plain)]


def test_native_and_expansion_equal_the_model():
    model, feeds = _bottleneck_net()
    want = run_reference(model, feeds)
    graph = _native_graph(model)
    assert any(v[1] == "NHWC" for v in _layouts(graph).values())
    options = CompileOptions(threads=2, extra={"fallback": None})
    got = NativeBackend().compile(graph, None, options).run(feeds)
    for name, ref in zip(("y", "block"), want):
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4)
    expanded = ir.from_proto(ir.to_proto(graph))
    ExpandKilnOpsPass()(expanded)
    assert not any(n.domain == "kiln" for n in expanded.graph)
    for got_e, ref in zip(run_reference(expanded, feeds), want):
        np.testing.assert_allclose(got_e, ref, rtol=1e-4, atol=1e-4)


def test_grouped_narrow_and_3x3_convs_stay_nchw():
    w3 = ir.Value(name="w", const_value=ir.tensor(_w(64, 4, 3)))
    w1 = ir.Value(name="w1", const_value=ir.tensor(_w(64, 2, 1)))
    x = ir.Value(name="x")
    three = ir.node("FusedConv", [x, w3], domain="kiln")
    strided = ir.node("FusedConv", [x, w3], domain="kiln",
                      attributes={"strides": ir.AttrInt64s("strides", [2, 2])})
    grouped = ir.node("FusedConv", [x, w1], domain="kiln",
                      attributes={"group": ir.AttrInt64("group", 2)})
    pointwise = ir.node("Conv", [x, ir.Value(name="w2", const_value=ir.tensor(_w(64, 4, 1)))])
    narrow = ir.node("Conv", [x, ir.Value(name="w4", const_value=ir.tensor(_w(32, 4, 1)))])
    assert not hands_over_nhwc(three) and hands_over_nhwc(strided)
    assert not hands_over_nhwc(grouped) and hands_over_nhwc(pointwise)
    assert not hands_over_nhwc(narrow)  # fewer output channels than the tile's lanes fill


def test_a_conv_reading_large_nchw_planes_keeps_nchw():
    """Above MAX_PIXELS_FROM_NCHW input pixels read from NCHW planes, NHWC out does not pay."""
    x = rng.standard_normal((1, 8, 32, 32)).astype(np.float32)
    inits = {"w1": _w(64, 8, 1), "w2": _w(64, 64, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="second"),
             helper.make_node("Relu", ["c"], ["y"])]
    model = model_from_arrays(nodes, {"x": x}, ["y"], initializers=inits)
    graph = ir.from_proto(model)
    for step in build_pipeline(2, caps=NATIVE):
        graph = step[1](graph).model
    assert _layouts(graph)["first"] == ("NCHW", "NCHW", "NCHW")


def test_a_symbolic_batch_does_not_hide_the_planes_size():
    """The pixel count is height x width: a symbolic batch dim leaves it known."""
    x = rng.standard_normal((1, 8, 32, 32)).astype(np.float32)
    inits = {"w1": _w(64, 8, 1), "w2": _w(64, 64, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="first"),
             helper.make_node("Conv", ["a", "w2"], ["y"], name="second")]
    model = model_from_arrays(nodes, {"x": x}, ["y"], initializers=inits)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph = ir.from_proto(model)
    for step in build_pipeline(2, caps=NATIVE):
        graph = step[1](graph).model
    assert _layouts(graph)["first"] == ("NCHW", "NCHW", "NCHW")


def _dw(c: int, kernel: int) -> np.ndarray:
    return (rng.standard_normal((c, 1, kernel, kernel)) / kernel).astype(np.float32)


def _mobile_net() -> tuple:
    """stem 1x1 -> [dw 3x3 -> 1x1] -> [dw 5x5 s2 -> 1x1] -> GlobalAveragePool, hard-swish
    after each conv (a mobile net's separable blocks), plus a depthwise conv on the graph
    input and one whose reader is a second depthwise conv."""
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
    inits = {"w_stem": _w(64, 8, 1), "w_dw1": _dw(64, 3), "w_pw1": _w(64, 64, 1),
             "w_dw2": _dw(64, 5), "w_pw2": _w(96, 64, 1), "w_in": _dw(8, 3),
             "w_dwa": _dw(96, 3), "w_dwb": _dw(96, 3)}
    for name in ("stem", "dw1", "pw1", "dw2", "pw2", "dwa", "dwb"):
        inits[f"b_{name}"] = rng.standard_normal(inits[f"w_{name}"].shape[0]).astype(np.float32)
    node = helper.make_node
    nodes = [node("Conv", ["x", "w_in"], ["xin"], group=8, pads=[1] * 4, name="dw_input"),
             node("Conv", ["xin", "w_stem", "b_stem"], ["s"], name="stem"),
             node("HardSwish", ["s"], ["sa"]),
             node("Conv", ["sa", "w_dw1", "b_dw1"], ["d1"], group=64, pads=[1] * 4, name="dw1"),
             node("HardSwish", ["d1"], ["d1a"]),
             node("Conv", ["d1a", "w_pw1", "b_pw1"], ["p1"], name="pw1"),
             node("HardSwish", ["p1"], ["p1a"]),
             node("Conv", ["p1a", "w_dw2", "b_dw2"], ["d2"], group=64, pads=[2] * 4,
                  strides=[2, 2], name="dw2"),
             node("HardSwish", ["d2"], ["d2a"]),
             node("Conv", ["d2a", "w_pw2", "b_pw2"], ["p2"], name="pw2"),
             node("Relu", ["p2"], ["p2a"]),
             node("Conv", ["p2a", "w_dwa", "b_dwa"], ["da"], group=96, pads=[1] * 4, name="dwa"),
             node("Conv", ["da", "w_dwb", "b_dwb"], ["db"], group=96, pads=[1] * 4, name="dwb"),
             node("GlobalAveragePool", ["db"], ["y"])]
    model = model_from_arrays(nodes, {"x": x}, ["y"], initializers=inits, opset=17)
    return model, {"x": x}


def test_depthwise_convs_stay_nhwc_inside_a_chain():
    model, feeds = _mobile_net()
    graph = _native_graph(model)
    assert _layouts(graph) == {
        # reads the graph input: a depthwise conv never starts a chain
        "dw_input": ("NCHW", "NCHW", "NCHW"),
        "stem": ("NCHW", "NHWC", "NCHW"),
        "dw1": ("NHWC", "NHWC", "NCHW"),
        "pw1": ("NHWC", "NHWC", "NCHW"),
        "dw2": ("NHWC", "NHWC", "NCHW"),
        # read by a depthwise conv whose reader is another depthwise conv: not a member
        "pw2": ("NHWC", "NCHW", "NCHW"),
        "dwa": ("NCHW", "NCHW", "NCHW"),
        "dwb": ("NCHW", "NCHW", "NCHW"),
    }
    want = run_reference(model, feeds)
    options = CompileOptions(threads=2, extra={"fallback": None})
    got = NativeBackend().compile(graph, None, options).run(feeds)
    np.testing.assert_allclose(got["y"], want[0], rtol=1e-4, atol=1e-4)
    expanded = ir.from_proto(ir.to_proto(graph))  # what a non-native engine is handed
    ExpandKilnOpsPass()(expanded)
    np.testing.assert_allclose(run_reference(expanded, feeds)[0], want[0], rtol=1e-4,
                               atol=1e-4)


def test_narrow_depthwise_convs_stay_nchw():
    x = ir.Value(name="x")
    reader = ir.node("Conv", [None, ir.Value(name="w1", const_value=ir.tensor(_w(64, 8, 1)))])
    narrow = ir.node("Conv", [x, ir.Value(name="w", const_value=ir.tensor(_dw(8, 3)))],
                     attributes={"group": ir.AttrInt64("group", 8)})
    reader.replace_input_with(0, narrow.outputs[0])
    assert hands_over_nhwc(reader) and not hands_over_nhwc(narrow)


def test_a_separable_block_starts_a_chain_from_large_planes():
    """A pointwise conv whose result a depthwise member reads starts the chain from NCHW planes
    above MAX_PIXELS_FROM_NCHW (a mobile net's separable block)."""
    x = rng.standard_normal((1, 8, 32, 32)).astype(np.float32)
    inits = {"w1": _w(64, 8, 1), "wd": _dw(64, 3), "w2": _w(64, 64, 1)}
    node = helper.make_node
    nodes = [node("Conv", ["x", "w1"], ["a"], name="first"),
             node("Conv", ["a", "wd"], ["b"], group=64, pads=[1] * 4, name="dw"),
             node("Conv", ["b", "w2"], ["c"], name="second"),
             node("GlobalAveragePool", ["c"], ["y"])]
    model = model_from_arrays(nodes, {"x": x}, ["y"], initializers=inits)
    graph = _native_graph(model)
    assert _layouts(graph) == {"first": ("NCHW", "NHWC", "NCHW"), "dw": ("NHWC", "NHWC", "NCHW"),
                               "second": ("NHWC", "NCHW", "NCHW")}
    got = NativeBackend().compile(graph, None, CompileOptions(threads=2)).run({"x": x})
    np.testing.assert_allclose(got["y"], run_reference(model, {"x": x})[0], rtol=1e-4,
                               atol=1e-4)
