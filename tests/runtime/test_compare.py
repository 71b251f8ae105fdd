"""Differential testing and bisect on a real model: a few Conv/Gemm layers with random weights;
a copy with one node's weights perturbed must be caught, and bisect must name that node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import make_stride_detector
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import InputError, KilnError
from kiln.runtime.artifact import load_artifact
from kiln.runtime.compare import Side, closeness, compare, expose_intermediates
from kiln.runtime.session import Session


def make_cnn(seed: int = 0) -> onnx.ModelProto:
    """x[1,3,16,16] -> conv1 -> relu -> conv2 -> relu -> pool -> conv3 -> relu -> GAP ->
    flatten -> fc1 (Gemm) -> relu -> fc2 (Gemm) -> softmax."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32),
                                       name)

    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("b2", 8),
             w("w3", 16, 8, 3, 3), w("b3", 16), w("f1", 12, 16), w("g1", 12),
             w("f2", 5, 12), w("g2", 5)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "f1", "g1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["hr"], name="relu4"),
        helper.make_node("Gemm", ["hr", "f2", "g2"], ["logits"], name="fc2", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def perturbed(model: onnx.ModelProto, initializer: str, scale: float = 0.05,
              seed: int = 7) -> onnx.ModelProto:
    """A copy of ``model`` with noise added to one initializer."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i, tensor in enumerate(copy.graph.initializer):
        if tensor.name == initializer:
            array = numpy_helper.to_array(tensor)
            noise = np.random.default_rng(seed).standard_normal(array.shape) * scale
            copy.graph.initializer[i].CopyFrom(
                numpy_helper.from_array((array + noise).astype(array.dtype), initializer))
            return copy
    raise KeyError(initializer)


@pytest.mark.parametrize("initializer, node, op", [("w2", "conv2", "Conv"),
                                                   ("f1", "fc1", "Gemm"),
                                                   ("b3", "conv3", "Conv")])
def test_bisect_names_the_perturbed_node(initializer, node, op):
    original = make_cnn()
    edited = perturbed(original, initializer)
    result = compare(Side(original, "onnxruntime"), Side(edited, "onnxruntime"),
                     rtol=1e-4, atol=1e-5)
    assert not result.ok and not result.outputs["y"].ok
    first = result.bisect.first
    assert (first.node, first.op_type) == (node, op)
    # every node before it matched; the isolated node alone reproduces the difference
    assert result.bisect.isolated_ok is False
    assert "reproduces" in result.bisect.isolation_note
    assert result.bisect.differing_initializers[0]["name"] == initializer


@pytest.mark.parametrize("backend", ["openvino", "native"])
def test_bisect_across_backends_with_a_perturbed_copy(backend):
    original = make_cnn()
    result = compare(Side(original, "onnxruntime"), Side(perturbed(original, "w3"), backend),
                     rtol=1e-3, atol=1e-4)
    assert not result.ok and result.bisect.first.node == "conv3"
    # every node output is matched across sides even where a backend would fuse (Conv+Relu)
    assert result.bisect.nodes_unmatched == 0 and result.bisect.nodes_compared == 13
    assert result.bisect.isolated_ok is False


def test_backends_agree_on_the_original():
    original = make_cnn()
    result = compare(Side(original, "onnxruntime"), Side(original, "openvino"),
                     rtol=1e-3, atol=1e-5)
    assert result.ok, result.to_json()
    assert result.bisect is None


def test_expose_intermediates_adds_used_values_only():
    import onnx_ir as ir

    from kiln.compiler.frontend import import_model

    model = import_model(make_cnn())
    exposed, added = expose_intermediates(model)
    assert "c2" in added and "logits" in added and "y" not in added
    assert [v.name for v in model.graph.outputs] == ["y"]  # the original is untouched
    assert isinstance(exposed, ir.Model) and len(exposed.graph.outputs) == 1 + len(added)


def test_closeness_rule():
    a = np.array([1.0, 2.0, np.nan], np.float32)
    assert closeness(a, a.copy(), 0, 0).ok  # NaN on both sides agrees
    off = closeness(a, np.array([1.0, 2.1, np.nan], np.float32), rtol=0.01, atol=0.0)
    assert not off.ok and off.mismatched == 1 and off.max_abs == pytest.approx(0.1, rel=1e-5)
    assert closeness(a, np.array([1.0, 2.01, np.nan], np.float32), rtol=0.01, atol=0.0).ok
    assert not closeness(np.ones(3), np.ones(4), 1, 1).ok
    assert not closeness(np.array([1, 2]), np.array([1, 3]), 1, 1).ok  # ints compare exactly


def test_bad_tolerance_and_mismatched_inputs():
    with pytest.raises(KilnError, match="tolerances"):
        compare(Side(make_cnn(), "onnxruntime"), Side(make_cnn(), "onnxruntime"), rtol=-1)
    other = make_cnn()
    other.graph.input[0].name = "image"
    other.graph.node[0].input[0] = "image"
    with pytest.raises(KilnError, match="different inputs"):
        compare(Side(make_cnn(), "onnxruntime"), Side(other, "onnxruntime"))


def test_native_artifact_against_its_graph_on_onnxruntime(tmp_path):
    """A native .kiln stores kiln::FusedConv; side A rebuilds its graph for onnxruntime with
    those ops written back as standard ONNX, side B runs it as compiled."""
    path = Session(make_cnn(), backend="native").save(tmp_path / "cnn.kiln")
    assert any(n.domain == "kiln" for n in
               onnx.load_model_from_string(load_artifact(path).model_bytes).graph.node)
    result = compare(Side(str(path), "onnxruntime"), Side(str(path), "auto"))
    assert result.ok, result.to_json()
    assert result.a.describe() == "cnn.kiln on onnxruntime/fp32"
    assert result.b.describe() == "cnn.kiln on native/fp32"
    assert result.outputs["y"].total == 5


def test_random_feeds_size_symbolic_dims():
    detector = make_stride_detector()
    with pytest.raises(InputError, match="'height', 'width'.*--dim height=SIZE"):
        compare(Side(detector, "onnxruntime"), Side(detector, "openvino"))
    result = compare(Side(detector, "onnxruntime"), Side(detector, "openvino"),
                     dims={"height": 6, "width": 4})
    assert result.ok and result.notes == [
        "batch dim 'batch' of input 'x' set to 1 (--dim batch=SIZE for another)"]
    with pytest.raises(InputError, match=r"height=5 \(given\)"):
        compare(Side(detector, "onnxruntime"), Side(detector, "openvino"),
                dims={"height": 5, "width": 5})


def test_compare_and_bisect_a_file_parsed_a_field_at_a_time(tmp_path, monkeypatch):
    """A large model file (weights set aside while parsing) compares and bisects: both sides'
    copies of the imported graph keep reading the weights kiln's parse set aside."""
    from kiln.compiler import frontend

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    original, edited = tmp_path / "m.onnx", tmp_path / "edited.onnx"
    onnx.save(make_cnn(), original)
    onnx.save(perturbed(make_cnn(), "w3"), edited)
    assert compare(Side(str(original), "onnxruntime"), Side(str(original), "native")).ok
    result = compare(Side(str(original), "onnxruntime"), Side(str(edited), "onnxruntime"))
    assert not result.ok and result.bisect is not None
    assert result.bisect.first is not None and result.bisect.first.node == "conv3"


def test_closeness_takes_the_same_infinity_on_both_sides_as_equal():
    """T5's relative-position bucket takes log(0) = -inf on every engine (a Where drops it
    later): bisect must not name that Log as the first divergent node."""
    inf = float("inf")
    assert closeness(np.array([-inf, inf, 1.0]), np.array([-inf, inf, 1.0]), 1e-3, 1e-4).ok
    for other in ([inf, inf, 1.0], [-inf, 5.0, 1.0], [np.nan, inf, 1.0]):
        result = closeness(np.array([-inf, inf, 1.0]), np.array(other), 1e-3, 1e-4)
        assert not result.ok and result.mismatched == 1 and result.max_abs == inf
