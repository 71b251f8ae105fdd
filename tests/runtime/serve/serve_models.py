"""Small models and a repository of them, built in code for the serve tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHT = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def linear_model(batch: int | str = "batch", scale: float = 1.0) -> onnx.ModelProto:
    """y = x @ W * scale + 1 over x: float32[batch, 4]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    w = numpy_helper.from_array(WEIGHT * scale, "w")
    one = numpy_helper.from_array(np.ones(3, np.float32), "one")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["xw"]),
                               helper.make_node("Add", ["xw", "one"], ["y"])],
                              "linear", [x], [y], [w, one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_repository(root: Path) -> Path:
    """linear v1 and v2 (dynamic batch; v2 doubles W), fixed (batch fixed at 1)."""
    for name, version, model in (("linear", 1, linear_model()),
                                 ("linear", 2, linear_model(scale=2.0)),
                                 ("fixed", 1, linear_model(batch=1))):
        folder = root / name / str(version)
        folder.mkdir(parents=True)
        onnx.save(model, folder / "model.onnx")
    return root


def reshape_model() -> onnx.ModelProto:
    """y = Reshape(x, s): a run with a shape that does not fit x fails inside the backend."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "reshape",
                              [x, s], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
