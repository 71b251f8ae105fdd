"""compiler/reference: the one onnxruntime session builder, and models handed to onnxruntime
with stamps it loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_builders import make_conv_model, model_from_arrays
from onnx import helper

from kiln.compiler import reference
from kiln.errors import InputError


def test_probes_find_what_this_onnxruntime_loads():
    assert 8 <= reference.max_ir_version() <= onnx.IR_VERSION
    assert 17 <= reference.max_opset() <= onnx.defs.onnx_opset_version()
    relu = model_from_arrays([helper.make_node("Relu", ["x"], ["y"])],
                             {"x": np.zeros((2,), np.float32)}, ["y"],
                             opset=reference.max_opset())
    relu.ir_version = reference.max_ir_version()
    ort.InferenceSession(relu.SerializeToString(), providers=["CPUExecutionProvider"])


def test_for_onnxruntime_lowers_stamps_on_a_copy():
    relu = model_from_arrays([helper.make_node("Relu", ["x"], ["y"])],
                             {"x": np.zeros((2,), np.float32)}, ["y"], opset=17)
    relu.ir_version = onnx.IR_VERSION + 1  # newer than any onnxruntime reads
    out = reference.for_onnxruntime(relu)
    assert out is not relu and out.ir_version == reference.max_ir_version()
    assert relu.ir_version == onnx.IR_VERSION + 1  # the caller's model is unchanged
    fine = make_conv_model()
    fine.ir_version = 8
    assert reference.for_onnxruntime(fine) is fine  # nothing to lower: no copy


def test_session_settings_are_the_ones_asked_for(tmp_path):
    data = make_conv_model().SerializeToString()
    optimized = tmp_path / "optimized.onnx"
    session = reference.onnxruntime_session(data, threads=1, optimization="basic",
                                            optimized_path=str(optimized))
    opts = session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert not opts.enable_profiling and optimized.is_file()
    spinning = reference.onnxruntime_session(data, spinning=True, profile=True)
    assert spinning.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "1"
    assert spinning.get_session_options().enable_profiling
    Path(spinning.end_profiling()).unlink()  # the profile onnxruntime wrote to the cwd
    with pytest.raises(InputError, match="unknown onnxruntime optimization level 'max'"):
        reference.onnxruntime_session(data, optimization="max")


def test_reference_session_runs_the_graph_with_or_without_rewrites():
    proto = make_conv_model(seed=1)
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    raw = reference.reference_session(proto, optimize=False)
    assert raw.get_session_options().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    np.testing.assert_allclose(raw.run(None, {"x": x})[0],
                               reference.reference_session(proto).run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)
