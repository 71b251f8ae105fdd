"""Function ops run natively through their ONNX-defined bodies (backends/native/expand.py),
checked against onnx.reference; a body op native lacks is still refused, naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import kiln
import kiln.backend
from kiln.backends.native.expand import expand_functions

rng = np.random.default_rng(7)


def _model(node: onnx.NodeProto, inputs: list, outputs: list, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(model: onnx.ModelProto, feeds: list[np.ndarray], atol: float = 1e-5) -> None:
    names = [i.name for i in model.graph.input]
    expected = ReferenceEvaluator(model).run(None, dict(zip(names, feeds)))
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    got = rep.run(feeds)
    for out, ref in zip(got, expected):
        assert out.dtype == ref.dtype
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_softmax_cross_entropy_with_ignore_index(reduction: str):
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["loss", "logp"],
                            reduction=reduction, ignore_index=1)
    model = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5, 3]),
                          helper.make_tensor_value_info("t", TensorProto.INT64, [4, 3])],
                   [helper.make_tensor_value_info("loss", TensorProto.FLOAT,
                                                  [4, 3] if reduction == "none" else []),
                    helper.make_tensor_value_info("logp", TensorProto.FLOAT, [4, 5, 3])], 13)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    t = rng.integers(0, 5, (4, 3)).astype(np.int64)
    _check(model, [x, t])


def test_attention_causal_gqa():
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)
    model = _model(node, [helper.make_tensor_value_info("q", TensorProto.FLOAT, [2, 4, 3, 8]),
                          helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 2, 6, 8]),
                          helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 2, 6, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 3, 8])], 23)
    feeds = [rng.standard_normal(s).astype(np.float32)
             for s in ((2, 4, 3, 8), (2, 2, 6, 8), (2, 2, 6, 8))]
    _check(model, feeds)


def test_expansion_keeps_supported_nodes_and_graph_outputs():
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["loss"])
    proto = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
                          helper.make_tensor_value_info("t", TensorProto.INT64, [3])],
                   [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])], 13)
    import onnx_ir as ir

    model = expand_functions(ir.serde.deserialize_model(proto))
    ops = [n.op_type for n in model.graph]
    assert "NegativeLogLikelihoodLoss" not in ops and ops
    assert [v.name for v in model.graph.outputs] == ["loss"]


def test_out_of_range_label_names_the_node():
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["loss"], name="nll")
    model = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
                          helper.make_tensor_value_info("t", TensorProto.INT64, [3])],
                   [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])], 13)
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    with pytest.raises(kiln.KilnError, match="nll"):
        rep.run([x, np.array([0, 9, 1], dtype=np.int64)])


def test_body_op_native_lacks_is_refused():
    # float16 Attention: the body's Mul/Softmax run float32 only, so the model is refused
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, [1, 2, 3, 4])
            for n in ("q", "k", "v")]
    model = _model(node, spec, [helper.make_tensor_value_info("y", TensorProto.FLOAT16,
                                                               [1, 2, 3, 4])],
                   23)
    with pytest.raises(kiln.UnsupportedError):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
