"""Sizes for symbolic input dims: given, from metadata, forced by the graph, batch-like -> 1,
else one error naming every dim and the flag."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.backends.base import TensorSpec
from kiln.errors import InputError
from kiln.runtime.input_dims import is_batch_like, resolve_input_dims


def _model(nodes, inputs, outputs, inits=(), metadata=None) -> ir.Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    return ir.from_proto(proto)


def _specs(model: ir.Model) -> list[TensorSpec]:
    return [TensorSpec(v.name, np.dtype(v.dtype.numpy()),
                       tuple(d if isinstance(d, int) else d.value for d in v.shape))
            for v in model.graph.inputs]


def _detector(metadata=None) -> ir.Model:
    """Conv stride 2, Resize x2 back, Concat with the input: H/W must be even, nothing says
    which size."""
    w = numpy_helper.from_array(np.ones((3, 3, 3, 3), np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("Concat", ["x", "r"], ["y"], axis=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return _model(nodes, [x], [y], [w, scales], metadata)


def test_detector_hw_unresolved_names_every_dim_and_the_flag():
    model = _detector()
    with pytest.raises(InputError) as err:
        resolve_input_dims(_specs(model), model)
    text = str(err.value)
    assert "input 'x' has symbolic dims 'height', 'width'" in text
    assert "--dim height=SIZE --dim width=SIZE" in text and "\n" not in text
    assert "batch" not in text  # the batch dim is sized, not asked for


def test_given_dims_and_batch_note():
    model = _detector()
    got = resolve_input_dims(_specs(model), model, {"height": 64, "width": 32})
    assert got.shapes == {"x": (1, 3, 64, 32)}
    assert got.notes == ["batch dim 'batch' of input 'x' set to 1 (--dim batch=SIZE for "
                         "another)"]
    assert resolve_input_dims(_specs(model), model, {"height": 8, "width": 8, "batch": 4}
                              ).shapes == {"x": (4, 3, 8, 8)}


def test_metadata_imgsz_and_named_keys():
    model = _detector({"imgsz": "[640, 320]"})
    got = resolve_input_dims(_specs(model), model)
    assert got.shapes == {"x": (1, 3, 640, 320)}
    assert any("metadata 'imgsz'" in n for n in got.notes)
    named = _detector({"height": "96", "width": "128"})
    assert resolve_input_dims(_specs(named), named).shapes == {"x": (1, 3, 96, 128)}


def test_unknown_dim_flag_is_refused():
    model = _detector()
    with pytest.raises(InputError, match="no such symbolic dim.*height"):
        resolve_input_dims(_specs(model), model, {"height": 8, "width": 8, "hieght": 8})


def test_matmul_contraction_and_broadcast_force_dims():
    w = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    b = numpy_helper.from_array(np.ones((7, 1), np.float32), "b")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Add", ["r", "b"], ["a"]),
             helper.make_node("MatMul", ["a", "w"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "seq", "hidden"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(nodes, [x], [y], [w, b])
    got = resolve_input_dims(_specs(model), model)
    assert got.shapes == {"x": (1, 7, 16)}
    assert any("'hidden'" in n and "MatMul" in n for n in got.notes)


def test_reshape_to_a_constant_shape_forces_the_count():
    shape = numpy_helper.from_array(np.array([1, 2, 30], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "feat"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 30])
    model = _model(nodes, [x], [y], [shape])
    assert resolve_input_dims(_specs(model), model).shapes == {"x": (1, 60)}


def test_unnamed_dims_are_addressed_by_input_and_axis():
    spec = TensorSpec("img", np.dtype(np.float32), (None, 3, 48, None))
    with pytest.raises(InputError, match=r"'img:3'.*--dim img:3=SIZE"):
        resolve_input_dims([spec])
    assert resolve_input_dims([spec], None, {"img:3": 320}).shapes == {"img": (1, 3, 48, 320)}
    assert is_batch_like(spec, 0) and not is_batch_like(spec, 3)


def test_resolved_shapes_run_on_onnxruntime():
    """The sizes the resolver forces are ones the model accepts."""
    from kiln.runtime.session import Session, random_feeds

    w = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "hidden"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    proto = ir.to_proto(_model(nodes, [x], [y], [w]))
    session = Session(onnx.ModelProto.FromString(proto.SerializeToString()),
                      backend="onnxruntime")
    got = resolve_input_dims(session.inputs, session.model)
    out = session(**random_feeds(got.specs(session.inputs)))
    assert out["y"].shape == (1, 4)
