"""reduced_session: int8 / fp16 / pruned models behind a real Session, speed gate included."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler.calibrate import RandomCalibrationWarning
from kiln.runtime.reduced import reduced_session


def cnn_file(tmp_path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (16, 3, 3, 3)), ("b1", (16,)), ("w2", (16, 16, 3, 3)), ("b2", (16,)),
              ("wf", (10, 16)), ("bf", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "cnn.onnx"
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_with_speed_gate(tmp_path, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomCalibrationWarning)
        session, result = reduced_session(cnn_file(tmp_path), backend=backend,
                                          precision="int8", calibration="random:4",
                                          speed_gate=True, threads=1)
    gate = result.quantization.gate
    assert gate is not None and gate.decisions
    assert all(d.quantized_s > 0 and d.fp32_s > 0 for d in gate.decisions)
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == (1, 10) and np.isfinite(y).all()


def test_prune_and_fp16_on_onnxruntime(tmp_path):
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    session, result = reduced_session(cnn_file(tmp_path), backend="onnxruntime",
                                      precision="fp16", prune="channels:0.25",
                                      eval_samples=[{"x": x}])
    assert result.prune.macs_after < result.prune.macs_before
    assert result.precision.checker == "ok"
    (y,) = session.run(None, {"x": x})
    assert y.shape == (1, 10)
