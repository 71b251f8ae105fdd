"""The int8 speed gate's timer, through kiln's own backends (onnxruntime, OpenVINO, native)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.errors import InputError, KilnError
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


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "native"])
def test_measure_returns_seconds(backend):
    measure = quantize_gate.measure_with_backend(backend, {"x": np.ones((2, 8), np.float32)},
                                                 threads=1, min_time=0.01, repeats=2)
    seconds = measure(proto())
    assert 0 < seconds < 1.0


def test_time_runner_runs_the_model_and_times_it():
    compiled = kiln.compile(proto(), backend="onnxruntime", threads=1).engine
    outputs = []
    seconds = quantize_gate.time_runner(
        lambda: outputs.append(compiled.run({"x": np.ones((2, 8), np.float32)})), 0.01, 2)
    assert seconds > 0 and len(outputs) >= 4  # two warm-up runs, then two timed batches
    np.testing.assert_allclose(outputs[-1]["y"], np.full((2, 4), 8.0))


def test_unknown_backend_and_missing_feed():
    with pytest.raises(KilnError, match="unknown backend 'tensorflow'"):
        quantize_gate.measure_with_backend("tensorflow", {})
    measure = quantize_gate.measure_with_backend("openvino", {"nope": np.ones((2, 8),
                                                                            np.float32)})
    with pytest.raises(InputError, match="nope"):
        measure(proto())
