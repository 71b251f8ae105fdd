"""Smoothing: exact in fp32, folds into LayerNorm, and helps int8 on outlier channels."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from compiler_cases import ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler import accuracy, quantization
from kiln.compiler.passes import smooth


def ln_block(outlier: float = 50.0):
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], axis=-1,
                              name="ln"),
             helper.make_node("MatMul", ["n", "wq"], ["q"], name="q"),
             helper.make_node("MatMul", ["n", "wk"], ["k"], name="k"),
             helper.make_node("Add", ["q", "k"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("MatMul", ["r", "wo"], ["y"], name="out")]
    g = np.ones(32, np.float32)
    g[3] = outlier  # one channel far larger than the rest, as in real transformers
    inits = {"g": g, "b": rand(32, seed=1) * 0.1, "wq": rand(32, 32, seed=2) * 0.2,
             "wk": rand(32, 32, seed=3) * 0.2, "wo": rand(32, 16, seed=4) * 0.2}
    return float_model(nodes, {"x": [8, 32]}, {"y": [8, 16]}, inits)


def test_smoothing_is_exact_and_folds_into_layernorm():
    model = ln_block()
    x = {"x": rand(8, 32, seed=7)}
    names = smooth.smoothable(model)
    assert set(names) == {"n", "r"} and len(names["n"]) == 2
    absmax = {"n": np.abs(run_reference(model, x)[0]).max() * np.ones(32, np.float32),
              "r": np.ones(32, np.float32)}
    out = ir.from_proto(ir.to_proto(model))
    step = smooth.SmoothActivationsPass(absmax, alpha=0.5)
    assert step(out).modified
    assert sorted(step.smoothed) == ["k", "out", "q"]
    assert ops(out).count("Mul") == 1  # "n" folded into the LayerNorm, "r" got a Mul
    np.testing.assert_allclose(run_reference(out, x)[0], run_reference(model, x)[0], rtol=1e-4,
                               atol=1e-4)


def test_smoothing_helps_int8_with_an_outlier_channel():
    model = ln_block(outlier=200.0)
    calib = [{"x": rand(8, 32, seed=s)} for s in range(4)]
    evals = [{"x": rand(8, 32, seed=20 + s)} for s in range(4)]
    plain = quantization.quantize_model(model, None, calib, method="minmax",
                                        eval_samples=evals, classifier=False)
    smoothed = quantization.quantize_model(model, None, calib, method="minmax",
                                           eval_samples=evals, classifier=False, smooth=0.5)
    assert smoothed.report.smoothed
    assert smoothed.report.accuracy.worst_cosine() > plain.report.accuracy.worst_cosine()
    got = accuracy.onnxruntime_runner(smoothed.model)(evals[0])["y"]
    assert np.isfinite(got).all()
