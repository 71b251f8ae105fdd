"""Timing callables for the int8 speed gate, on the real onnxruntime and OpenVINO."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import InputError
from kiln.runtime import quantize_gate


def proto():
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_measure_returns_seconds(backend):
    measure = quantize_gate.measure_on(backend, {"x": np.ones((2, 8), np.float32)}, threads=1,
                                       min_time=0.01, repeats=2)
    seconds = measure(proto())
    assert 0 < seconds < 1.0


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runner_computes_the_model(backend):
    run = quantize_gate.runner_for(backend, proto(), {"x": np.ones((2, 8), np.float32)})
    out = run()
    values = list(out.values()) if isinstance(out, dict) else out
    first = values[0] if not hasattr(out, "to_dict") else list(out.to_dict().values())[0]
    np.testing.assert_allclose(np.asarray(first), np.full((2, 4), 8.0))


def test_unknown_backend_and_missing_feed():
    with pytest.raises(InputError, match="speed gate"):
        quantize_gate.runner_for("tensorflow", proto(), {})
    with pytest.raises(InputError, match="no feed"):
        quantize_gate.runner_for("openvino", proto(), {"nope": np.ones((2, 8), np.float32)})
