"""Sizes for symbolic input dims: given, from metadata, forced by the graph, batch-like -> 1,
else one error naming every dim and the flag."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import make_stride_detector
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
    return ir.from_proto(make_stride_detector(metadata))


def test_detector_hw_unresolved_names_every_dim_and_the_flag():
    model = _detector()
    with pytest.raises(InputError) as err:
        resolve_input_dims(_specs(model), model)
    text = str(err.value)
    assert "input 'x' has symbolic dims 'height', 'width'" in text
    assert "--dim height=SIZE --dim width=SIZE" in text and "\n" not in text
    assert "batch" not in text  # the batch dim is sized, not asked for


def test_a_dim_two_inputs_share_is_asked_for_once():
    """khmersm's segmenter: ids ``x`` and bool ``mask`` both [batch, seq]."""
    model = _model([helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.INT64),
                    helper.make_node("Mul", ["x", "m"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "seq"]),
                    helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"])],
                   [helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", "seq"])])
    with pytest.raises(InputError) as err:
        resolve_input_dims(_specs(model), model)
    text = str(err.value)
    assert "input 'x' has symbolic dim 'seq'; input 'mask' has symbolic dim 'seq'" in text
    assert text.endswith("give each a size with --dim seq=SIZE")


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


# ---- binding symbolic dims at compile time (``dims=``, ``kiln compile --dim``) ---------------
def test_fixed_dims_reach_every_value_that_names_them():
    from kiln.runtime.input_dims import fix_input_dims

    model = _detector()
    fix_input_dims(model, {"batch": 1, "height": 64, "width": 32})
    assert tuple(model.graph.inputs[0].shape) == (1, 3, 64, 32)
    assert tuple(model.graph.outputs[0].shape) == (1, 7, 64, 32)


@pytest.mark.parametrize("dims, message", [
    ({"depth": 4}, "no input has a symbolic dim 'depth'; symbolic dims: batch, height, width"),
    ({"height": 0}, "must be an integer >= 1"),
    ({"height": 2.5}, "must be an integer >= 1"),
])
def test_fixed_dims_refuse_what_the_model_does_not_have(dims, message):
    from kiln.runtime.input_dims import fix_input_dims

    with pytest.raises(InputError, match=message):
        fix_input_dims(_detector(), dims)


def test_an_unnamed_dim_is_bound_on_its_input_only():
    from model_builders import make_dynamic_dim_model

    from kiln.compiler.frontend import import_model
    from kiln.runtime.input_dims import fix_input_dims

    model = import_model(make_dynamic_dim_model())  # as compile sees it: -1 made unnamed
    assert _specs(model)[0].shape[0] is None
    fix_input_dims(model, {"x:0": 2})
    assert model.graph.inputs[0].shape[0] == 2


@pytest.mark.parametrize("backend", ["native", "onnxruntime"])
def test_a_session_compiled_for_fixed_dims_runs_them_and_refuses_others(backend: str):
    from kiln import Session

    x = np.random.default_rng(0).standard_normal((1, 3, 16, 8)).astype(np.float32)
    dynamic = Session(make_stride_detector(), backend=backend)
    fixed = Session(make_stride_detector(), backend=backend,
                    dims={"batch": 1, "height": 16, "width": 8})
    assert fixed.inputs[0].shape == (1, 3, 16, 8)
    np.testing.assert_allclose(fixed.run(None, {"x": x})[0], dynamic.run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
    if backend == "native":  # laid out once, at compile time
        assert fixed._compiled.segments[0].lowered.memory.dynamic_values == 0
    with pytest.raises(InputError, match="expected 16"):
        fixed.run(None, {"x": np.zeros((1, 3, 32, 8), np.float32)})


def test_kiln_compile_dim_writes_a_static_artifact(tmp_path):
    import onnx as onnx_module

    from kiln.cli import main
    from kiln.runtime.session import Session

    src = tmp_path / "det.onnx"
    onnx_module.save(make_stride_detector(), src)
    out = tmp_path / "det.kiln"
    assert main(["compile", str(src), "-b", "native", "-o", str(out), "--dim", "batch=1",
                 "--dim", "height=16", "--dim", "width=8"]) == 0
    assert Session(out).inputs[0].shape == (1, 3, 16, 8)


def test_a_dim_range_stays_symbolic_and_reaches_the_backend_options():
    from kiln.runtime.compile import compile

    compiled = compile(make_stride_detector(), backend="onnxruntime",
                       dims={"batch": (1, 2, 4), "height": 16, "width": 8})
    assert compiled.inputs[0].shape == ("batch", 3, 16, 8)
    assert compiled.options.extra["dims"] == {"batch": (1, 2, 4)}
