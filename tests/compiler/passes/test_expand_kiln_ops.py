"""kiln::FusedConv/FusedGemm written back as standard ONNX, per activation and opset."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest
from compiler_cases import ops, rand
from model_builders import float_model, run_reference
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler.passes.expand_kiln_ops import ExpandKilnOpsPass

_ERF = np.vectorize(math.erf)


def _sigmoid(y):
    return 1 / (1 + np.exp(-y))


REFERENCE = {
    "": lambda y, a, b: y,
    "Relu": lambda y, a, b: np.maximum(y, 0),
    "LeakyRelu": lambda y, a, b: np.where(y >= 0, y, a * y),
    "Clip": lambda y, a, b: np.clip(y, a, b),
    "Sigmoid": lambda y, a, b: _sigmoid(y),
    "SiLU": lambda y, a, b: y * _sigmoid(y),
    "HardSigmoid": lambda y, a, b: np.clip(a * y + b, 0, 1),
    "HardSwish": lambda y, a, b: y * np.clip(y / 6 + 0.5, 0, 1),
    "Gelu": lambda y, a, b: 0.5 * y * (1 + _ERF(y / math.sqrt(2))),
    "GeluTanh": lambda y, a, b: 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                       * (y + 0.044715 * y ** 3))),
    "Tanh": lambda y, a, b: np.tanh(y),
}


def _fused(act: str, alpha: float, beta: float, opset: int) -> ir.Model:
    """y = FusedConv(x, w, b, r) in a model importing ``opset`` and the kiln domain."""
    node = helper.make_node("FusedConv", ["x", "w", "b", "r"], ["y"], domain="kiln",
                            activation=act, alpha=alpha, beta=beta, pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "k",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])],
        [numpy_helper.from_array(rand(3, 2, 3, 3), "w"),
         numpy_helper.from_array(rand(3, seed=1), "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("kiln", 1)])
    proto.ir_version = 8
    return ir.from_proto(proto)


@pytest.mark.parametrize("opset", [9, 13, 20])
@pytest.mark.parametrize("act", sorted(REFERENCE))
def test_every_activation_expands_for_every_opset(act, opset):
    alpha, beta = {"LeakyRelu": (0.1, 0.0), "Clip": (-0.4, 0.6),
                   "HardSigmoid": (0.3, 0.4)}.get(act, (0.0, 0.0))
    model = _fused(act, alpha, beta, opset)
    step = ExpandKilnOpsPass()
    assert step(model).modified
    assert step.fired == {"expand FusedConv": 1}
    assert "kiln" not in model.opset_imports and not any(o.startswith("kiln::") for o in ops(model))
    feeds = {"x": rand(1, 2, 5, 5, seed=2), "r": rand(1, 3, 5, 5, seed=3)}
    conv = float_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                       helper.make_node("Add", ["c", "r"], ["y"])],
                       {"x": [1, 2, 5, 5], "r": [1, 3, 5, 5]}, {"y": [1, 3, 5, 5]},
                       {"w": rand(3, 2, 3, 3), "b": rand(3, seed=1)})
    y = run_reference(conv, feeds)[0].astype(np.float64)
    want = REFERENCE[act](y, alpha, beta)
    np.testing.assert_allclose(run_reference(model, feeds)[0], want, rtol=1e-4, atol=1e-5)


def test_kept_ops_stay():
    model = _fused("Relu", 0.0, 0.0, 17)
    assert not ExpandKilnOpsPass(keep=frozenset({"FusedConv"}))(model).modified
    assert ops(model) == ["kiln::FusedConv"]


def test_unknown_kiln_op_is_an_error():
    model = _fused("Relu", 0.0, 0.0, 17)
    next(iter(model.graph)).op_type = "Mystery"
    with pytest.raises(ValueError, match="no standard-ONNX expansion for kiln op 'Mystery'"):
        ExpandKilnOpsPass()(model)
