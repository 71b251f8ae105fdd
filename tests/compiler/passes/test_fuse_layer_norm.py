"""Decomposed layer norm (as the opset-14 exporters write it) -> LayerNormalization."""

from __future__ import annotations

import numpy as np
from compiler_cases import assert_close, ops, rand
from model_builders import exported_layer_norm, float_model, run_reference
from onnx import helper

from kiln.compiler.capabilities import BackendCaps
from kiln.compiler.pipeline import optimize


def test_opset14_layer_norm_is_upgraded_and_fused():
    nodes, inits = exported_layer_norm("x", "y", 8)
    model = float_model(nodes, {"x": [2, 3, 8]}, {"y": [2, 3, 8]}, inits, opset=14)
    feeds = {"x": rand(2, 3, 8, seed=2)}
    want = run_reference(model, feeds)
    out, report = optimize(model, 2, None, BackendCaps("onnxruntime", max_opset=23))
    assert ops(out) == ["LayerNormalization"]
    assert out.opset_imports[""] == 20
    node = next(iter(out.graph))
    assert node.attributes["epsilon"].value == np.float32(1e-12)
    assert report.fired()["LayerNormFusion"] == 1
    assert_close(want, run_reference(out, feeds))


def test_cnn_opset_is_left_alone():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = float_model(nodes, {"x": [2]}, {"y": [2]}, {}, opset=9)
    out, report = optimize(model, 2, None, BackendCaps(max_opset=23, standard_attention=True))
    assert out.opset_imports[""] == 9
    upgrade = next(p for p in report.passes if p.name == "upgrade-opset")
    assert upgrade.rejected == {"no transformer pattern to fuse": 1}


def test_no_layer_norm_below_opset_17():
    from kiln.compiler.passes.fuse_layer_norm import FuseLayerNormPass

    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
             helper.make_node("Sub", ["x", "mu"], ["y"])]
    model = float_model(nodes, {"x": [2, 8]}, {"y": [2, 8]}, {}, opset=14)
    step = FuseLayerNormPass()
    assert not step(model).modified
    assert step.rejected == {"the model imports opset 14; LayerNormalization needs 17": 1}
