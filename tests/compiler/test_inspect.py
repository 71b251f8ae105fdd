"""The data behind `kiln inspect`: signature, ops, parameters, MACs and pass changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from compiler_cases import load_light, rand
from model_builders import float_model
from onnx import helper

from kiln.compiler.inspect import inspect_model


def test_macs_of_conv_gemm_matmul_by_hand():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["h"], transB=1),
             helper.make_node("MatMul", ["h", "m"], ["y"])]
    inits = {"w": rand(8, 3, 3, 3), "g": rand(10, 8 * 4 * 4), "m": rand(10, 5)}
    model = float_model(nodes, {"x": [2, 3, 8, 8]}, {"y": [2, 5]}, inits)
    data = inspect_model(model)["model"]
    per = {n["op"]: n["macs"] for n in data["macs"]["per_node"]}
    assert per["Conv"] == 2 * 8 * 4 * 4 * 3 * 3 * 3
    assert per["Gemm"] == 2 * 10 * 128
    assert per["MatMul"] == 2 * 5 * 10
    assert data["macs"]["total"] == sum(per.values())
    assert data["parameters"] == 8 * 27 + 10 * 128 + 50
    assert data["parameter_bytes"] == 4 * data["parameters"]
    assert data["inputs"] == [{"name": "x", "dtype": "FLOAT", "shape": [2, 3, 8, 8]}]
    assert data["ops"]["Conv"] == 1
    json.dumps(data)


def test_symbolic_dims_are_uncounted_until_pinned():
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    model = float_model(nodes, {"a": ["n", 4]}, {"y": ["n", 3]}, {"b": rand(4, 3)})
    loose = inspect_model(model)["model"]["macs"]
    assert loose["total"] == 0 and loose["uncounted_nodes"] == 1
    pinned = inspect_model(model, input_shapes={"a": [6, 4]})["model"]["macs"]
    assert pinned["total"] == 6 * 3 * 4 and pinned["uncounted_nodes"] == 0
    with pytest.raises(KeyError, match="no input 'z'"):
        inspect_model(model, input_shapes={"z": [1]})


def test_resnet50_inspect_with_level_reports_passes():
    data = inspect_model(load_light("resnet50"), level=2)
    before, after = data["model"], data["optimized"]
    assert before["ops"]["ConstantOfShape"] == 239 and "ConstantOfShape" not in after["ops"]
    # the light model fills every weight with 0.02; only small twins are merged
    assert after["parameters"] == pytest.approx(25.5e6, rel=0.02)
    data = inspect_model(load_light("resnet50", random_weights=True), level=2)
    after = data["optimized"]
    # ResNet-50 is ~4.1 GMACs at 224x224
    assert 3.8e9 < after["macs"]["total"] < 4.2e9 and after["macs"]["uncounted_nodes"] == 0
    assert after["parameters"] == pytest.approx(25.5e6, rel=0.02)
    passes = {p["name"]: p for p in data["report"]["passes"]}
    assert passes["fuse-batchnorm"]["fired"] == {"FuseBatchNormIntoConv": 53}
    assert np.isfinite(data["report"]["seconds"])
    json.dumps(data)
