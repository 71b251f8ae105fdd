"""Helpers shared by the compiler tests: random data, op lists, closeness, the light zoo (the
models themselves come from tests/model_builders.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


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
