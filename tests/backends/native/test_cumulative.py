"""CumSum / CumProd (src/ops/indexing.cpp) against onnx.reference: every axis, exclusive and
reverse, integer and float; an axis out of range names the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import kiln
import kiln.backend


def _model(op: str, elem: int, **attrs: int) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", "axis"], ["y"], name="running", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, [2, 3, 4]),
                                            helper.make_tensor_value_info("axis",
                                                                          TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", elem, [2, 3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(
        "", onnx.defs.onnx_opset_version())])


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_matches_reference(op, dtype, axis, exclusive, reverse):
    x = (np.arange(24).reshape(2, 3, 4) % 5 - 2).astype(dtype)
    model = _model(op, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), exclusive=exclusive,
                   reverse=reverse)
    feeds = [x, np.array(axis, np.int64)]
    want = ReferenceEvaluator(model).run(None, {"x": x, "axis": feeds[1]})[0]
    got = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run(feeds)[0]
    np.testing.assert_allclose(got, want)


def test_axis_out_of_range_names_the_node():
    model = _model("CumProd", TensorProto.FLOAT)
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.KilnError, match="running.*out of range"):
        rep.run([np.ones((2, 3, 4), np.float32), np.array(3, np.int64)])
