"""quantize_model end to end: modes, report, and the real digits CNN and MiniLM (slow)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from compiler_cases import ops, rand
from model_builders import float_model
from onnx import helper

from kiln.compiler import accuracy, calibrate, quantization
from kiln.compiler.target import Target
from kiln.errors import InputError


def cnn():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc")]
    return float_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 10]},
                       {"w": rand(8, 3, 3, 3), "b": rand(8), "wf": rand(8, 10)}, opset=11)


def test_static_with_random_calibration_warns_and_upgrades_opset():
    with pytest.warns(calibrate.RandomCalibrationWarning):
        result = quantization.quantize_model(cnn(), Target.parse("cpu:avx512_vnni"), "random:4")
    assert "QuantizeLinear" in ops(result.model)
    assert result.model.opset_imports[""] >= 13
    assert sorted(result.report.quantized) == ["conv", "fc"]
    assert result.report.scheme == "uint8"
    assert result.report.accuracy.outputs[0].cosine_min > 0.99
    assert result.report.lines()[0].startswith("int8 static")


def test_static_needs_calibration():
    with pytest.raises(InputError, match="calibration"):
        quantization.quantize_model(cnn(), None, None)
    with pytest.raises(InputError, match="mode"):
        quantization.quantize_model(cnn(), None, "random:1", mode="weird")


def test_dynamic_without_calibration():
    result = quantization.quantize_model(cnn(), None, mode="dynamic")
    assert result.report.quantized == ["fc"]
    assert result.report.accuracy is None
    assert "MatMulInteger" in ops(result.model)


@pytest.mark.slow
def test_digits_cnn_int8_within_one_point():
    import models

    model, x, y = models.digits()
    calib = [{"image": x[i:i + 1]} for i in range(0, 64)]
    evals = [{"image": x[i:i + 64]} for i in range(64, len(x), 64)]
    labels = [y[i:i + 64] for i in range(64, len(x), 64)]
    for method in calibrate.METHODS:
        result = quantization.quantize_model(model, Target.detect(), calib, method=method,
                                             eval_samples=evals, labels=labels)
        out = result.report.accuracy.outputs[0]
        assert out.reference_top1 - out.candidate_top1 <= 0.01, (method, out)


@pytest.mark.slow
def test_minilm_int8_embeddings_cosine():
    import models

    model = models.minilm()
    sentences = models.SENTENCES
    assert len(sentences) >= 50
    calib = [models.minilm_tokenize(sentences[i:i + 1]) for i in range(16)]
    evals = [models.minilm_tokenize(sentences)]
    for mode in ("dynamic", "static"):
        result = quantization.quantize_model(
            model, Target.detect(), calib if mode == "static" else None, mode=mode,
            method="minmax", eval_samples=[models.minilm_tokenize(sentences[16:32])],
            classifier=False, max_accuracy_drop=0.005,
            smooth=0.8 if mode == "static" else None)
        got = accuracy.onnxruntime_runner(result.model)(evals[0])["embedding"]
        want = accuracy.onnxruntime_runner(model)(evals[0])["embedding"]
        assert np.min(accuracy.row_cosines(want, got)) >= 0.99, mode



@pytest.mark.slow
def test_ensure_opset_moves_the_ppocr_detector_to_13():
    # The shapes kiln records on this opset-12 detector after its O2 passes once made the
    # opset converter refuse it.
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.real_model_corpus import DEFAULT_CACHE, by_name, fetch
    from kiln.compiler import frontend, pipeline
    from kiln.compiler.capabilities import STANDARD_ONNX

    model = frontend.import_model(str(fetch(by_name("ppocrv4_det"), DEFAULT_CACHE)))
    # a backend capped below opset 14 keeps the detector at 12 through O2 (otherwise its
    # hard-swish takes it to 14), which is the case the converter met
    caps = dataclasses.replace(STANDARD_ONNX, max_opset=13)
    model, _ = pipeline.optimize(model, 2, Target.detect(), caps)
    assert quantization.quantize.opset_version(model) == 12
    upgraded = quantization.ensure_opset(model, 13)
    assert quantization.quantize.opset_version(upgraded) == 13
