"""TensorRT: capability rules, profiles and cache keys here; engines only where a GPU is."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

import kiln
from kiln.backends import registry
from kiln.backends.base import CompileOptions, TensorSpec
from kiln.backends.tensorrt import (
    Profile,
    derive_profile,
    engine_key,
    opset_max,
    stale_reason,
    timing_cache_usable,
    trt_refusal,
)
from kiln.cli import main
from kiln.compiler.frontend import import_model
from kiln.compiler.reduce import precision_in_graph
from kiln.compiler.target import Target
from kiln.zoo import light_model

STATUS = registry.availability("tensorrt")
needs_gpu = pytest.mark.skipif(not STATUS.ok, reason=f"tensorrt unavailable: {STATUS.reason}")


def _node(op, inputs, outputs, *, in_types=None, inits=(), opset=17, **attrs) -> ir.Node:
    """The single node of a one-node model (the other nodes' inputs become graph inputs)."""
    in_types = in_types or {}
    init_names = {t.name for t in inits}
    graph_inputs = [oh.make_tensor_value_info(n, in_types.get(n, (TensorProto.FLOAT, None))[0],
                                              in_types.get(n, (TensorProto.FLOAT, None))[1])
                    for n in inputs if n and n not in init_names]
    graph = oh.make_graph([oh.make_node(op, inputs, outputs, name="n", **attrs)], "g",
                          graph_inputs,
                          [oh.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                           for o in outputs],
                          initializer=list(inits))
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    return model.graph.node(0)


F4 = (TensorProto.FLOAT, [1, 3, 8, 8])


# --- availability ------------------------------------------------------------------------------

def test_unavailable_here_with_the_precise_reason():
    if STATUS.ok:
        pytest.skip("a GPU and tensorrt are present")
    try:
        import tensorrt  # noqa: F401
        assert "CUDA" in STATUS.reason or "cuda-python" in STATUS.reason
    except ImportError:
        assert "tensorrt package is not installed" in STATUS.reason
        assert "pip install 'kiln[tensorrt]'" in STATUS.reason
    with pytest.raises(kiln.BackendUnavailableError, match="tensorrt is unavailable"):
        registry.get_backend("tensorrt").compile(import_model(light_model("squeezenet")),
                                                 Target.parse("gpu:sm90"), CompileOptions())


def test_kiln_targets_reports_tensorrt_and_its_reason(capsys):
    assert main(["targets", "--json"]) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)["backends"]}
    assert rows["tensorrt"]["available"] == STATUS.ok
    assert rows["tensorrt"]["reason"] == STATUS.reason


# --- capability ----------------------------------------------------------------------------------

def test_light_models_are_accepted_whole():
    model = import_model(light_model("resnet50"))
    refused = {n.op_type: trt_refusal(n) for n in model.graph if trt_refusal(n)}
    assert refused == {}


@pytest.mark.parametrize(("node", "expected"), [
    (lambda: _node("Unique", ["x"], ["y"]), "not implemented by the TensorRT ONNX parser"),
    (lambda: _node("Relu", ["x"], ["y"], in_types={"x": (TensorProto.DOUBLE, [2])}),
     "float64"),
    (lambda: _node("MaxPool", ["x"], ["y", "idx"], in_types={"x": F4}, kernel_shape=[2, 2]),
     "Indices"),
    (lambda: _node("MaxPool", ["x"], ["y"], in_types={"x": (TensorProto.FLOAT, [1, 3, 8])},
                   kernel_shape=[2]), "2D or 3D"),
    (lambda: _node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2]), "rank is unknown"),
    (lambda: _node("MaxPool", ["x"], ["y"], in_types={"x": F4}, kernel_shape=[2, 2],
                   dilations=[2, 2]), "dilations"),
    (lambda: _node("TopK", ["x", "k"], ["v", "i"], in_types={
        "x": (TensorProto.FLOAT, [10]), "k": (TensorProto.INT64, [1])}),
     "K must be a build-time constant"),
    (lambda: _node("TopK", ["x", "k"], ["v", "i"], in_types={"x": (TensorProto.FLOAT, [10])},
                   inits=[numpy_helper.from_array(np.array([3], np.int64), "k")], sorted=0),
     "sorted=0"),
    (lambda: _node("Resize", ["x", "", "scales"], ["y"], in_types={"x": F4},
                   inits=[numpy_helper.from_array(np.ones(4, np.float32), "scales")],
                   mode="cubic"), "mode='cubic'"),
    (lambda: _node("Squeeze", ["x", "axes"], ["y"], in_types={
        "x": (TensorProto.FLOAT, [1, 4]), "axes": (TensorProto.INT64, [1])}), "axes"),
    (lambda: _node("EyeLike", ["x"], ["y"], in_types={"x": (TensorProto.FLOAT, ["n", 4])}),
     "static dims"),
    (lambda: _node("Relu", ["x"], ["y"], opset=8), "opset 8"),
])
def test_refusals_name_op_dtype_attribute_or_shape(node, expected):
    reason = trt_refusal(node())
    assert reason is not None and expected in reason


def test_accepted_variants():
    pool = _node("MaxPool", ["x"], ["y", "idx"], in_types={"x": F4}, kernel_shape=[2, 2])
    pool.graph.outputs.pop()  # Indices computed but read by nobody
    assert trt_refusal(pool) is None
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    assert trt_refusal(_node("TopK", ["x", "k"], ["v", "i"],
                             in_types={"x": (TensorProto.FLOAT, [10])}, inits=[k])) is None
    assert trt_refusal(_node("MaxPool", ["x"], ["y"], in_types={"x": F4},
                             kernel_shape=[2, 2])) is None
    assert trt_refusal(_node("Relu", ["x"], ["y"], in_types={
        "x": (TensorProto.FLOAT16, ["n", 4])})) is None
    assert opset_max("10.13.0") == 24 and opset_max("11.4.1") == 25


# --- profiles ----------------------------------------------------------------------------------

SPECS = [TensorSpec("x", np.dtype("float32"), ("batch", 3, 224, 224)),
         TensorSpec("mask", np.dtype("int64"), ("batch", "seq"))]


def test_profile_from_dims_and_declared_shapes():
    profile = derive_profile(SPECS, {"batch": (1, 4, 16), "seq": 128})
    assert profile.shapes == (
        ("x", (1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224)),
        ("mask", (1, 128), (4, 128), (16, 128)))
    assert profile.dynamic
    static = derive_profile([TensorSpec("x", np.dtype("float32"), (1, 3))])
    assert not static.dynamic and static.shapes == (("x", (1, 3), (1, 3), (1, 3)),)


def test_profile_from_whole_shapes_overrides_dims():
    profile = derive_profile(SPECS[:1], {"batch": 2}, {"x": ((1, 3, 224, 224),
                                                             (2, 3, 224, 224),
                                                             (8, 3, 224, 224))})
    assert profile.shapes[0][3] == (8, 3, 224, 224)


@pytest.mark.parametrize(("dims", "shapes", "message"), [
    ({}, None, "axis 0 is 'batch' with no range"),
    ({"batch": (4, 2, 8), "seq": 1}, None, "min <= opt <= max"),
    ({"batch": "many", "seq": 1}, None, "expected an int"),
    ({"seq": 1}, {"x": ((1, 3, 224, 224),) * 2}, "(min, opt, max)"),
    ({"seq": 1, "batch": 1}, {"x": ((1, 3, 224, 224), (1, 3, 224, 224), (1, 4, 224, 224))},
     "must be 3"),
    ({"seq": 1, "batch": 1}, {"nope": ((1,), (1,), (1,))}, "unknown input"),
])
def test_profile_errors_name_the_input_and_dim(dims, shapes, message):
    with pytest.raises(kiln.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        derive_profile(SPECS, dims, shapes)


def test_profile_check_explains_out_of_range_inputs():
    profile = derive_profile(SPECS[:1], {"batch": (1, 2, 4)})
    assert profile.check("x", (3, 3, 224, 224)) is None
    message = profile.check("x", (5, 3, 224, 224))
    assert "outside the engine's profile" in message and "[4, 3, 224, 224]" in message


# --- cache keys ----------------------------------------------------------------------------------

PROFILE = Profile((("x", (1, 3), (1, 3), (1, 3)),))
KEY = engine_key("ab" * 32, "10.13.0", 89, PROFILE, "fp32")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("tensorrt_version", "11.4.1", "TensorRT version changed: engine built with 10.13.0, "
                                   "this is 11.4.1"),
    ("gpu_sm", 90, "GPU compute capability changed: engine built for sm_89, this GPU is sm_90"),
    ("model_sha256", "cd" * 32, "the model changed (sha256 abababababab -> cdcdcdcdcdcd)"),
    ("precision", "fp16", "the precision changed (fp32 -> fp16)"),
])
def test_stale_engines_say_why(field, value, message):
    current = dict(KEY, **{field: value})
    assert stale_reason(KEY, current) == message


def test_a_matching_key_is_fresh_and_a_missing_one_is_not():
    assert stale_reason(KEY, json.loads(json.dumps(KEY))) is None
    assert stale_reason(None, KEY) == "no saved engine"
    wider = engine_key("ab" * 32, "10.13.0", 89, Profile((("x", (1, 3), (2, 3), (4, 3)),)),
                       "fp32")
    assert stale_reason(KEY, wider).startswith("the optimization profile changed")
    # The version is checked first: an engine from another TensorRT cannot even load.
    both = dict(KEY, tensorrt_version="11.0.0", gpu_sm=90)
    assert stale_reason(KEY, both).startswith("TensorRT version changed")


def test_timing_cache_is_reused_only_within_one_tensorrt_version():
    assert timing_cache_usable(KEY, "10.13.0")
    assert not timing_cache_usable(KEY, "10.14.1")
    assert not timing_cache_usable(None, "10.13.0")


def test_precision_comes_from_the_graph():
    cast = _node("Cast", ["x"], ["y"], in_types={"x": (TensorProto.FLOAT, [2])},
                 to=TensorProto.FLOAT16)
    model = ir.Model(cast.graph, ir_version=8)
    assert precision_in_graph(model) == {"fp16"}
    plain = import_model(light_model("squeezenet"))
    assert precision_in_graph(plain) == set()


# --- GPU ---------------------------------------------------------------------------------------

@needs_gpu
def test_engine_matches_onnxruntime_and_reloads_without_rebuilding(tmp_path, conv_model):
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = kiln.Session(conv_model, backend="onnxruntime")(x=x)["y"]
    session = kiln.Session(conv_model, backend="tensorrt")
    np.testing.assert_allclose(session(x=x)["y"], want, rtol=1e-3, atol=1e-4)
    compiled = session._compiled
    assert set(compiled.save(tmp_path)) == {"engine.plan", "timing.cache", "tensorrt.json"}
    backend = registry.get_backend("tensorrt")
    def saved():
        return {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    loaded = backend.load(saved(), session.model, session.target, session.options)
    assert loaded.rebuild_reason is None
    np.testing.assert_allclose(loaded.run({"x": x})["y"], want, rtol=1e-3, atol=1e-4)
    manifest = json.loads((tmp_path / "tensorrt.json").read_text())
    manifest["tensorrt_version"] = "0.0.0"
    (tmp_path / "tensorrt.json").write_text(json.dumps(manifest))
    rebuilt = backend.load(saved(), session.model, session.target, session.options)
    assert rebuilt.rebuild_reason.startswith("rebuilt: TensorRT version changed")


@needs_gpu
def test_dynamic_batch_uses_the_profile():
    from model_builders import make_conv_model

    model = make_conv_model(batch="N")
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    want = kiln.Session(model, backend="onnxruntime")(x=x)["y"]
    session = kiln.Session(model, backend="tensorrt", dims={"N": (1, 2, 4)})
    np.testing.assert_allclose(session(x=x)["y"], want, rtol=1e-3, atol=1e-4)
    with pytest.raises(kiln.InputError, match="outside the engine's profile"):
        session(x=np.zeros((5, 3, 8, 8), np.float32))
    with pytest.raises(kiln.InputError, match="'N' with no range"):
        kiln.Session(model, backend="tensorrt")
