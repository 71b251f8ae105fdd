"""A per-channel affine read only by a 1x1 or depthwise conv -> kiln::FusedConv's prologue:
what the rule rewrites and rejects (with the reason reported), that only a backend whose caps
take prologues gets it, and the numbers against onnxruntime on the native engine and through
the standard-ONNX expansion."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import model_from_arrays, run_reference
from onnx import helper

from kiln.backends.base import CompileOptions
from kiln.backends.native import _native as native_module
from kiln.backends.native.backend import NativeBackend
from kiln.compiler.capabilities import BackendCaps
from kiln.compiler.passes.expand_kiln_ops import ExpandKilnOpsPass
from kiln.compiler.passes.fuse_conv_prologue import FuseConvPrologue
from kiln.compiler.passes.rule import RulePass
from kiln.compiler.pipeline import optimize

C, K = 16, 24
kernels = native_module.kernels


def _model(chain: str, conv: str, extra_reader: bool = False, fused: bool = False,
           channels: int = C):
    """``chain`` ("bn", "bn-relu", "mul-add", "const-first", "const-first-mul", "mul", "add")
    feeding a ``conv`` ("pointwise", "depthwise", "full"; ``fused``: a kiln FusedConv with a
    Relu epilogue)."""
    rng = np.random.default_rng(2)
    inits = {"s": np.array(1.7, np.float32), "t": np.array(-0.3, np.float32)}
    if chain.startswith("bn"):
        nodes = [helper.make_node("BatchNormalization", ["x", "gamma", "beta", "mean", "var"],
                                  ["a"], name="bn", epsilon=1e-3)]
        inits.update(gamma=rng.uniform(0.5, 1.5, channels).astype(np.float32),
                     beta=rng.standard_normal(channels).astype(np.float32),
                     mean=rng.standard_normal(channels).astype(np.float32),
                     var=rng.uniform(0.5, 2.0, channels).astype(np.float32))
        if chain == "bn-relu":
            nodes[0].output[0] = "n"
            nodes.append(helper.make_node("Relu", ["n"], ["a"], name="relu"))
    elif chain == "mul-add":
        nodes = [helper.make_node("Mul", ["x", "s"], ["m"]),
                 helper.make_node("Add", ["m", "t"], ["a"])]
    elif chain == "const-first":  # Paddle's export order: Mul(s, x), Add(t, .)
        nodes = [helper.make_node("Mul", ["s", "x"], ["m"]),
                 helper.make_node("Add", ["t", "m"], ["a"])]
    elif chain == "const-first-mul":
        nodes = [helper.make_node("Mul", ["s", "x"], ["a"])]
    else:
        nodes = [helper.make_node("Mul" if chain == "mul" else "Add",
                                  ["x", "s" if chain == "mul" else "t"], ["a"])]
    extra = {}
    if conv == "depthwise":
        inits["w"] = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
        extra = {"group": channels, "pads": [1, 1, 1, 1]}
    elif conv == "full":
        inits["w"] = rng.standard_normal((K, channels, 3, 3)).astype(np.float32) * 0.2
        extra = {"pads": [1, 1, 1, 1]}
    else:
        inits["w"] = rng.standard_normal((K, channels, 1, 1)).astype(np.float32) * 0.2
    if fused:
        nodes.append(helper.make_node("FusedConv", ["a", "w"], ["y"], name="conv",
                                      domain="kiln", activation="Relu", **extra))
    else:
        nodes.append(helper.make_node("Conv", ["a", "w"], ["y"], name="conv", **extra))
    outputs = ["y"]
    if extra_reader:
        nodes.append(helper.make_node("Sigmoid", ["a"], ["side"], name="side"))
        outputs.append("side")
    x = rng.standard_normal((1, channels, 9, 11)).astype(np.float32)
    model = model_from_arrays(nodes, {"x": x}, outputs, initializers=inits,
                              extra_opsets={"kiln": 1} if fused else None)
    return model, {"x": x}


def _fuse(model: onnx.ModelProto) -> tuple[ir.Model, RulePass]:
    fused = ir.from_proto(model)
    rules = RulePass([FuseConvPrologue()])
    rules(fused)
    return fused, rules


def _native(model: ir.Model, feeds, threads: int = 1) -> dict[str, np.ndarray]:
    options = CompileOptions(threads=threads, extra={"fallback": None})
    return NativeBackend().compile(model, None, options).run(feeds)


def _expanded(model: ir.Model) -> onnx.ModelProto:
    copy = ir.from_proto(ir.to_proto(model))
    ExpandKilnOpsPass()(copy)
    return ir.to_proto(copy)


@pytest.mark.parametrize("conv", ["pointwise", "depthwise"])
@pytest.mark.parametrize(
    "chain", ["bn", "bn-relu", "mul-add", "const-first", "const-first-mul", "mul", "add"])
def test_affine_folds_into_pointwise_and_depthwise_convs(chain: str, conv: str):
    model, feeds = _model(chain, conv)
    fused, rules = _fuse(model)
    nodes = list(fused.graph)
    assert [n.op_type for n in nodes] == ["FusedConv"] and rules.fired["FuseConvPrologue"] == 1
    assert nodes[0].attributes["prologue"].value == ("affine_relu" if chain == "bn-relu"
                                                     else "affine")
    want = run_reference(model, feeds)[0]
    # the depthwise padding must stay zero, not become the shift, in both depthwise forms
    # (the 9 x 11 plane runs blocked, channels in lanes; a zero limit forces the plane form)
    for blocked_limit in ((None, 0) if conv == "depthwise" else (None,)):
        old = None if blocked_limit is None else kernels.set_dwconv_blocked_max_pixels(0)
        try:
            for threads in (1, 2):
                np.testing.assert_allclose(_native(fused, feeds, threads)["y"], want,
                                           rtol=1e-4, atol=1e-4)
        finally:
            if old is not None:
                kernels.set_dwconv_blocked_max_pixels(old)
    np.testing.assert_allclose(run_reference(_expanded(fused), feeds)[0], want,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels", [C, 48])  # 48 x 40 x 40: packed by rows on two threads
def test_prologue_on_maps_larger_than_one_packing_block(threads: int, channels: int):
    model, _ = _model("bn-relu", "pointwise", channels=channels)
    x = np.random.default_rng(1).standard_normal((1, channels, 40, 40)).astype(np.float32)
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], (40, 40)):
        d.dim_value = v
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    fused, _ = _fuse(model)
    np.testing.assert_allclose(_native(fused, {"x": x}, threads)["y"],
                               run_reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


_ISAS = ["generic", "avx2", "avx512"]


@pytest.mark.parametrize("isa", _ISAS)
@pytest.mark.parametrize("chain", ["bn", "bn-relu"])
@pytest.mark.parametrize("hw", [(9, 11), (33, 33), (40, 40)])  # partial, odd, whole panels
def test_prologue_packing_on_every_isa(isa: str, chain: str, hw: tuple[int, int]):
    """The ISA's affine-into-panels kernel against onnxruntime: pixel counts that leave a
    partial last panel and counts that fill every panel, with and without the ReLU."""
    best = native_module.best_isa()
    if _ISAS.index(isa) > _ISAS.index(best):
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    model, _ = _model(chain, "pointwise", channels=48)
    x = np.random.default_rng(3).standard_normal((1, 48, *hw)).astype(np.float32)
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], hw):
        d.dim_value = v
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    fused, _ = _fuse(model)
    assert any(n.op_type == "FusedConv" for n in fused.graph)
    try:
        assert native_module.set_isa_cap(isa) == isa
        got = _native(fused, {"x": x}, 2)["y"]
    finally:
        native_module.set_isa_cap(os.environ.get("KILN_NATIVE_ISA", best))
    np.testing.assert_allclose(got, run_reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_a_fused_conv_keeps_its_epilogue():
    model, feeds = _model("bn-relu", "pointwise", fused=True)
    fused, _ = _fuse(model)
    (node,) = list(fused.graph)
    assert node.attributes["activation"].value == "Relu"
    want = np.maximum(run_reference(_model("bn-relu", "pointwise")[0], feeds)[0], 0)
    np.testing.assert_allclose(_native(fused, feeds)["y"], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run_reference(_expanded(fused), feeds)[0], want,
                               rtol=1e-5, atol=1e-5)


def test_rejections_say_why():
    for model, reason in ((_model("mul-add", "full")[0], "neither 1x1"),
                          (_model("bn-relu", "pointwise", extra_reader=True)[0],
                           "output is read elsewhere")):
        fused, rules = _fuse(model)
        assert not rules.fired and "FusedConv" not in [n.op_type for n in fused.graph]
        assert any(reason in why for why in rules.rejected), rules.rejected


def test_only_backends_that_take_prologues_get_them():
    model, _ = _model("bn", "pointwise")
    plain = BackendCaps("fused-only", kiln_ops=frozenset({"FusedConv", "FusedGemm"}))
    prologue = BackendCaps("native-like", kiln_ops=plain.kiln_ops, conv_prologue=True)
    for caps, steps in ((plain, False), (prologue, True)):
        optimized, report = optimize(ir.from_proto(model), 2, None, caps)
        assert ("fuse-conv-prologue" in report.pipeline) is steps
        has = any(n.op_type == "FusedConv" and "prologue" in n.attributes
                  for n in optimized.graph)
        assert has is steps
