"""Session(precision=...) makes the precision in the graph instead of assuming it: int8 on a
float model quantizes it (in the form the backend runs fast), fp16 converts it, unless the
graph already carries the precision or the backend applies it itself."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from model_builders import make_conv_model
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.backends import registry
from kiln.compiler.accuracy import cosine
from kiln.compiler.calibrate import RandomCalibrationWarning


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def _mlp() -> bytes:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32) / 8, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((128, 32)).astype(np.float32) / 8, "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])], [w1, w2])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto.SerializeToString()


def _cnn() -> bytes:
    return make_conv_model().SerializeToString()


def _needs(backend: str) -> None:
    status = registry.availability(backend)
    if not status.ok:
        pytest.skip(f"{backend} unavailable: {status.reason}")


X = {"x": np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)}


@pytest.mark.parametrize(("backend", "marker"), [("onnxruntime", "MatMulInteger"),
                                                 ("openvino", "DequantizeLinear")])
def test_int8_quantizes_a_float_model_dynamically(backend: str, marker: str):
    _needs(backend)
    fp32 = kiln.Session(_mlp(), backend=backend)
    int8 = kiln.Session(_mlp(), backend=backend, precision="int8")
    assert int8.reduction is not None and int8.reduction.quantization.mode == "dynamic"
    assert marker in _ops(int8.model)
    if backend == "openvino":  # int8 weights; OpenVINO quantizes activations itself
        assert "DynamicQuantizeLinear" not in _ops(int8.model)
    assert cosine(fp32(**X)["y"], int8(**X)["y"]) > 0.99


def test_int8_on_a_conv_model_needs_calibration():
    _needs("onnxruntime")
    with pytest.raises(kiln.InputError, match="calibration"):
        kiln.Session(_cnn(), backend="onnxruntime", precision="int8")


def test_int8_with_calibration_quantizes_statically():
    _needs("onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomCalibrationWarning)
        session = kiln.Session(_cnn(), backend="onnxruntime", precision="int8",
                               calibration="random:4")
    assert session.reduction.quantization.mode == "static"
    assert "QuantizeLinear" in _ops(session.model)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_static_int8_is_placed_in_the_form_the_backend_asks_for(backend: str):
    """onnxruntime chains QLinear kernels: the Relu after the conv is quantized too. OpenVINO
    folds what follows a conv into it: Q/DQ only before the int8 ops, zero points 0."""
    _needs(backend)
    rng = np.random.default_rng(2)
    pages = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(9)]
    session = kiln.Session(_cnn(), backend=backend, precision="int8", calibration=pages[1:])
    quantized = {n.inputs[0].producer().op_type if n.inputs[0].producer() else "input":
                 int(n.inputs[2].const_value.numpy())
                 for n in session.model.graph if n.op_type == "QuantizeLinear"}
    if backend == "openvino":
        assert "Relu" not in quantized and "Conv" not in quantized
        assert set(quantized.values()) == {0}
    else:  # the conv's (Relu-fused) output
        assert quantized.keys() & {"Conv", "Relu"}
    fp32 = kiln.Session(_cnn(), backend=backend)
    assert cosine(fp32(**pages[0])["y"], session(**pages[0])["y"]) > 0.98


def test_a_graph_that_carries_int8_is_not_quantized_again():
    _needs("onnxruntime")
    first = kiln.Session(_mlp(), backend="onnxruntime", precision="int8")
    again = kiln.Session(first.model, backend="onnxruntime", precision="int8")
    assert again.reduction is None
    assert _ops(again.model).count("MatMulInteger") == _ops(first.model).count("MatMulInteger")


def test_fp16_is_converted_unless_the_backend_applies_it():
    _needs("onnxruntime")
    converted = kiln.Session(_mlp(), backend="onnxruntime", precision="fp16")
    assert converted.reduction is not None and "Cast" in _ops(converted.model)
    assert cosine(kiln.Session(_mlp(), backend="onnxruntime")(**X)["y"],
                  converted(**X)["y"]) > 0.999
    _needs("openvino")
    hinted = kiln.Session(_mlp(), backend="openvino", precision="fp16")
    assert hinted.reduction is None and hinted.options.precision == "fp16"


def test_reduce_options_do_not_apply_to_an_artifact(tmp_path: Path):
    _needs("onnxruntime")
    path = kiln.Session(_mlp(), backend="onnxruntime").save(tmp_path / "m.kiln")
    with pytest.raises(kiln.KilnError, match="already compiled"):
        kiln.Session(path, calibration="random:2")
