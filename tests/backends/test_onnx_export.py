"""onnx_export: IR -> ONNX bytes for the ONNX-consuming backends, and the graph's signature."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from model_builders import make_conv_model, make_two_input_model, model_from_arrays
from onnx import helper

from kiln.backends.onnx_export import signature, to_onnx_bytes, value_spec


def test_bytes_round_trip_the_graph_with_weights_inline():
    proto = make_conv_model(seed=3)
    data = to_onnx_bytes(ir.from_proto(proto))
    back = onnx.ModelProto.FromString(data)
    assert [n.op_type for n in back.graph.node] == [n.op_type for n in proto.graph.node]
    w = next(t for t in back.graph.initializer if t.name == "w")
    assert w.data_location == onnx.TensorProto.DEFAULT  # inline, no external file
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(w), onnx.numpy_helper.to_array(
        next(t for t in proto.graph.initializer if t.name == "w")))


def test_stamps_are_lowered_only_when_asked_and_only_when_no_node_changes():
    relu = model_from_arrays([helper.make_node("Relu", ["x"], ["y"])],
                             {"x": np.zeros((2,), np.float32)}, ["y"], opset=21)
    relu.ir_version = 10
    plain = onnx.ModelProto.FromString(to_onnx_bytes(ir.from_proto(relu)))
    assert plain.opset_import[0].version == 21 and plain.ir_version == 10
    lowered = onnx.ModelProto.FromString(to_onnx_bytes(ir.from_proto(relu), max_ir_version=8,
                                                       max_opset=17))
    assert lowered.opset_import[0].version == 17 and lowered.ir_version == 8
    # Celu's schema changed at opset 28: a stamp of 28 cannot be lowered to 27
    celu = model_from_arrays([helper.make_node("Celu", ["x"], ["y"])],
                             {"x": np.zeros((2,), np.float32)}, ["y"], opset=28)
    kept = onnx.ModelProto.FromString(to_onnx_bytes(ir.from_proto(celu), max_opset=27))
    assert kept.opset_import[0].version == 28


def test_signature_leaves_initializers_out_and_keeps_symbolic_dims():
    inputs, outputs = signature(ir.from_proto(make_two_input_model()))
    assert [(s.name, s.dtype, s.shape) for s in inputs] == [
        ("a", np.dtype("float32"), ("N", 4)), ("b", np.dtype("float32"), ("N", 4)),
        ("ids", np.dtype("int64"), (2,))]
    assert [(s.name, s.shape) for s in outputs] == [("y", ("N", 4)), ("ids_shape", (1,))]
    conv_inputs, _ = signature(ir.from_proto(make_conv_model()))
    assert [s.name for s in conv_inputs] == ["x"]  # w, b, fc, fcb are initializers


def test_value_spec_of_unknown_dims_and_types():
    value = ir.Value(name="v", shape=ir.Shape([ir.SymbolicDim(None), 3]))
    spec = value_spec(value)
    assert spec.shape == (None, 3) and spec.dtype == np.dtype("float32")
    assert value_spec(ir.Value(name="u")).shape is None


def test_a_graph_mapping_a_file_is_exported_with_its_references_or_with_the_bytes(tmp_path):
    from kiln.backends.onnx_export import mapped_weights_folder, to_onnx_graph_bytes

    w = np.arange(512, dtype=np.float32).reshape(16, 32)
    (tmp_path / "w.bin").write_bytes(b"\0" * 64 + w.tobytes())
    model = ir.from_proto(model_from_arrays([helper.make_node("MatMul", ["x", "w"], ["y"])],
                                            {"x": np.zeros((2, 16), np.float32)}, ["y"],
                                            initializers={"w": np.zeros_like(w)}))
    assert mapped_weights_folder(model) is None  # weights in memory
    model.graph.initializers["w"].const_value = ir.ExternalTensor(
        "w.bin", 64, w.nbytes, ir.DataType.FLOAT, shape=ir.Shape([16, 32]), name="w",
        base_dir=str(tmp_path))
    assert mapped_weights_folder(model) == str(tmp_path)
    graph_only = onnx.ModelProto.FromString(to_onnx_graph_bytes(model))
    [ref] = [t for t in graph_only.graph.initializer if t.name == "w"]
    assert ref.data_location == onnx.TensorProto.EXTERNAL and not ref.raw_data
    assert {e.key: e.value for e in ref.external_data}["offset"] == "64"
    whole = onnx.ModelProto.FromString(to_onnx_bytes(model))  # read back inline
    [inline] = [t for t in whole.graph.initializer if t.name == "w"]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(inline), w)


def test_a_stored_graph_is_serialized_as_stored_and_builds_its_ir_once_when_asked(
        monkeypatch):
    from kiln.backends.onnx_export import StoredGraph, signature

    relu = model_from_arrays([helper.make_node("Relu", ["x"], ["y"])],
                             {"x": np.zeros((2,), np.float32)}, ["y"], opset=21)
    relu.doc_string = "the stored proto"
    stored = StoredGraph(relu, "/nowhere")
    parsed: list = []
    real = ir.from_proto
    monkeypatch.setattr(ir, "from_proto", lambda *a: parsed.append(1) or real(*a))
    # the stored proto lowered for onnxruntime (compiler.reference.for_onnxruntime)
    from kiln.compiler import reference

    monkeypatch.setattr(reference, "max_opset", lambda: 17)
    lowered = onnx.ModelProto.FromString(
        reference.for_onnxruntime(stored.proto).SerializeToString())
    assert lowered.doc_string == "the stored proto" and lowered.opset_import[0].version == 17
    assert relu.opset_import[0].version == 21  # lowered on a copy: the stored proto stays
    monkeypatch.setattr(reference, "max_opset", lambda: 21)
    assert onnx.ModelProto.FromString(
        reference.for_onnxruntime(stored.proto).SerializeToString()) == relu
    assert signature(stored) == signature(ir.from_proto(relu))
    assert len(parsed) == 1  # the signature above needed no IR of the stored graph
    assert stored.model() is stored.model() and len(parsed) == 2
