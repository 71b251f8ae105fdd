"""Helpers shared by the compiler tests: tiny models, a runner on onnxruntime, the light zoo."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def run_ort(model: ir.Model | onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Every output of ``model`` on onnxruntime's CPU provider."""
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


def make_model(nodes: list[onnx.NodeProto], inputs: Mapping[str, list[int]],
               outputs: Mapping[str, list[int]], initializers: Mapping[str, np.ndarray],
               opset: int = 17) -> ir.Model:
    """A float32 model from onnx.helper pieces, as onnx_ir."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return ir.from_proto(proto)


def rand(*shape: int, seed: int = 0, positive: bool = False) -> np.ndarray:
    data = np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)
    return np.abs(data) + 0.5 if positive else data


def ops(model: ir.Model) -> list[str]:
    """Op types of the main graph, in order (kiln ops prefixed with their domain)."""
    return [n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
            for n in model.graph]


def assert_close(want: list[np.ndarray], got: list[np.ndarray], rtol: float = 1e-4,
                 atol: float = 1e-5) -> None:
    assert len(want) == len(got)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


def load_light(name: str, random_weights: bool = False) -> ir.Model:
    """A light model as kiln imports it (initializer inputs are constants)."""
    from light_models import light_model_path, randomized

    from kiln.compiler.passes.cleanup import ConstantInitializersPass

    path = light_model_path(name)
    if not path.exists():
        pytest.skip(f"{path} is not shipped by this onnx version")
    proto = onnx.load(path)
    if random_weights:
        proto = randomized(proto)
    model = ir.from_proto(proto)
    ConstantInitializersPass()(model)
    return model
