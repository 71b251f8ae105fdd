"""Weights offloaded while an engine compiles: a model over MIN_OFFLOAD_BYTES has its weights
on disk (the IR points into the file), every backend still gives onnxruntime's answer, and a
saved artifact carries the weights inline."""

from __future__ import annotations

import zipfile

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.backends import registry
from kiln.backends.onnx_export import WEIGHTS_DIR
from kiln.runtime.session import Session
from kiln.runtime.weights import MIN_OFFLOAD_BYTES, offload_weights


def _mlp(width: int = 768) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    w2 = rng.standard_normal((width, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_offload_moves_large_weights_to_a_file_and_keeps_their_values():
    model = ir.from_proto(_mlp())
    before = model.graph.initializers["w1"].const_value.numpy().copy()
    assert before.nbytes > MIN_OFFLOAD_BYTES and offload_weights(model)
    tensor = model.graph.initializers["w1"].const_value
    assert isinstance(tensor, ir.ExternalTensor) and WEIGHTS_DIR in model.meta
    np.testing.assert_array_equal(tensor.numpy(), before)
    assert not offload_weights(model)  # once


def test_a_small_model_keeps_its_weights_in_memory():
    model = ir.from_proto(_mlp(width=64))
    assert not offload_weights(model) and WEIGHTS_DIR not in model.meta


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "native"])
def test_offloaded_models_run_and_save_their_weights_in_the_weights_member(backend: str,
                                                                           tmp_path):
    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    import onnxruntime as ort

    proto = _mlp()
    x = np.random.default_rng(1).standard_normal((1, 768)).astype(np.float32)
    [expected] = ort.InferenceSession(proto.SerializeToString(),
                                      providers=["CPUExecutionProvider"]).run(None, {"x": x})
    session = Session(proto.SerializeToString(), backend=backend)
    assert WEIGHTS_DIR in session.model.meta
    np.testing.assert_allclose(session(x=x)["y"], expected, rtol=1e-4, atol=1e-4)
    path = session.save(tmp_path / "m.kiln")
    with zipfile.ZipFile(path) as zf:
        stored = onnx.load_model_from_string(zf.read("model.onnx"))
        weights = zf.getinfo("weights.bin").file_size
    # every large tensor is read back from the temporary file into the artifact's member
    external = [t for t in stored.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert external and all({e.key: e.value for e in t.external_data}["location"] ==
                            "weights.bin" for t in external)
    assert weights >= sum(w.const_value.nbytes for w in session.model.graph.initializers
                          .values() if w.const_value.nbytes >= 1024)
    np.testing.assert_allclose(Session(path)(x=x)["y"], expected, rtol=1e-4, atol=1e-4)
