"""BitShift on signed and unsigned integers against numpy's shifts (what onnx.reference
runs), including shift counts past the type's width."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import kiln.backend

TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32]


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_matches_reference(dtype, direction):
    bits = np.dtype(dtype).itemsize * 8
    info = np.iinfo(dtype)
    x = np.array([info.min, -5 if info.min < 0 else 5, 0, 7, info.max, 3], dtype)
    s = np.array([1, 2, 3, 0, bits - 1, 1], dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("BitShift", ["x", "s"], ["y"], direction=direction)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, [6]),
                                            helper.make_tensor_value_info("s", elem, [6])],
                              [helper.make_tensor_value_info("y", elem, [6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(
        "", onnx.defs.onnx_opset_version())])
    want = ReferenceEvaluator(model).run(None, {"x": x, "s": s})[0]
    got = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run([x, s])[0]
    np.testing.assert_array_equal(got, want)
