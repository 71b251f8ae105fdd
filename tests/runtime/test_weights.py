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


def _conv_bn(channels: int = 32) -> onnx.ModelProto:
    """A Conv whose BatchNormalization the optimizer folds into new weights."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3))
                                     .astype(np.float32) * 0.1, "w")]
    for name, low in (("scale", 0.5), ("bias", -1.0), ("mean", -1.0), ("var", 0.5)):
        inits.append(numpy_helper.from_array(
            rng.uniform(low, 1.5, channels).astype(np.float32), name))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"],
                              ["y"])]
    graph = helper.make_graph(
        nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         [1, channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("slow", [False, True], ids=["copied", "still-copying"])
@pytest.mark.parametrize("listed", [False, True], ids=["one", "partitioned"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "native"])
def test_weights_set_aside_while_parsing_run_and_save(backend: str, listed: bool, slow: bool,
                                                      tmp_path, monkeypatch):
    """A file parsed a field at a time: its weights went aside, the folded ones join them; a
    backend list (the partitioner, which cuts pieces through protos) reads them too. The
    import does not wait for the copies: whatever reads the file first (a pass, the engine,
    the save) waits for them, or it would read zeros."""
    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    import time

    import onnxruntime as ort

    from kiln.compiler import frontend, onnx_stream

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    if slow:
        copy = onnx_stream._copy_range
        monkeypatch.setattr(onnx_stream, "_copy_range",
                            lambda *job: time.sleep(0.2) or copy(*job))
    proto = _conv_bn()
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    x = np.random.default_rng(3).standard_normal((1, 32, 8, 8)).astype(np.float32)
    [expected] = ort.InferenceSession(proto.SerializeToString(),
                                      providers=["CPUExecutionProvider"]).run(None, {"x": x})
    session = Session(str(path), backend=list(dict.fromkeys([backend, "onnxruntime"])) if listed
                      else backend)
    assert listed or WEIGHTS_DIR in session.model.meta
    np.testing.assert_allclose(session(x=x)["y"], expected, rtol=1e-4, atol=1e-4)
    saved = session.save(tmp_path / "m.kiln")
    np.testing.assert_allclose(Session(saved)(x=x)["y"], expected, rtol=1e-4, atol=1e-4)


def test_weights_computed_after_the_parse_go_beside_those_set_aside(tmp_path, monkeypatch):
    from kiln.compiler import frontend

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    path = tmp_path / "m.onnx"
    onnx.save(_mlp(), path)
    model = frontend.import_model(path)
    folder = model.meta[WEIGHTS_DIR]
    assert isinstance(model.graph.initializers["w1"].const_value, ir.ExternalTensor)
    computed = np.ones((64, 64), np.float32)
    model.graph.initializers["w2"].const_value = ir.tensor(computed, name="w2")
    assert offload_weights(model) and not offload_weights(model)
    tensor = model.graph.initializers["w2"].const_value
    assert isinstance(tensor, ir.ExternalTensor) and str(tensor.base_dir) == folder
    np.testing.assert_array_equal(tensor.numpy(), computed)


def test_small_tensors_the_parse_kept_in_memory_stay_there(tmp_path, monkeypatch):
    """A tensor the parse did not set aside (at most ASIDE_TENSOR_BYTES) is not worth a
    second file and a collection before the engine builds: nothing moves."""
    from kiln.compiler import frontend
    from kiln.compiler.onnx_stream import ASIDE_TENSOR_BYTES

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    path = tmp_path / "m.onnx"
    onnx.save(_mlp(), path)
    model = frontend.import_model(path)
    kept = np.ones(ASIDE_TENSOR_BYTES // 4, np.float32)  # over INLINE_TENSOR_BYTES
    model.graph.initializers["w2"].const_value = ir.tensor(kept, name="w2")
    assert not offload_weights(model)
    assert not isinstance(model.graph.initializers["w2"].const_value, ir.ExternalTensor)


def test_tensor_nbytes_is_nbytes_for_parsed_and_computed_tensors():
    """From the proto's dims for a tensor viewing its protobuf (packed int4 included), else
    the tensor's own ``nbytes``."""
    from kiln.runtime.weights import tensor_nbytes

    protos = [numpy_helper.from_array(np.zeros((3, 5), np.float32), "f"),
              numpy_helper.from_array(np.zeros((7,), np.int64), "i"),
              helper.make_tensor("q", TensorProto.INT4, [5], [1, 2, 3, 4, 5])]
    for proto in protos:
        tensor = ir.serde.deserialize_tensor(proto)
        assert isinstance(tensor, ir.TensorProtoTensor)
        assert tensor_nbytes(tensor) == tensor.nbytes
    computed = ir.Tensor(np.ones((4, 4), np.float16))
    assert tensor_nbytes(computed) == computed.nbytes == 32
