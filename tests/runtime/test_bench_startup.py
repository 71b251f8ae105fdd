"""Start-up in fresh processes (``kiln bench --startup``): cold from the model, warm from the
.kiln the cold process saved, each with its time to first inference and peak RSS; failures
come back as errors, not figures."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest

from kiln.runtime.bench import BenchConfig, run_bench
from kiln.runtime.bench_report import to_markdown
from kiln.runtime.bench_startup import json_options, measure_startup

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "bench_schema.json").read_text())


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    [x] = model.graph.input
    shape = [d.dim_value or 1 for d in x.type.tensor_type.shape.dim]
    return {x.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def test_cold_then_warm_from_the_saved_artifact(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, path)
    figures = measure_startup(str(path), "onnxruntime", "fp32", 1, {}, _feeds(conv_model))
    for kind in ("cold", "warm"):
        got = figures[kind]
        assert "error" not in got, got
        assert got["first_run_s"] > 0 and got["peak_mb"] >= 0
    assert figures["cold"]["artifact_bytes"] > 0


def test_a_kiln_artifact_is_only_opened_warm(tmp_path, conv_model):
    import kiln

    artifact = kiln.compile(conv_model, backend="onnxruntime").save(tmp_path / "m.kiln")
    figures = measure_startup(str(artifact), "onnxruntime", None, 1, {}, _feeds(conv_model))
    assert figures["cold"] is None and figures["warm"]["first_run_s"] > 0


def test_failures_are_errors_not_figures(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, path)
    figures = measure_startup(str(path), "onnxruntime", "fp32", 1, {"no_such_option": 1},
                              _feeds(conv_model))
    assert "error" in figures["cold"] and "error" in figures["warm"]
    assert json_options({"calibration": object()}) is None
    figures = measure_startup(str(path), "onnxruntime", "fp32", 1, {"x": object()},
                              _feeds(conv_model))
    assert "JSON" in figures["cold"]["error"]


def test_run_bench_reports_startup_per_engine(conv_model):
    pytest.importorskip("openvino")
    config = BenchConfig(backends=["onnxruntime", "openvino"], iterations=2, block=1,
                         warmup=1, startup=True)
    report = run_bench(conv_model.SerializeToString(), config)
    jsonschema.validate(json.loads(json.dumps(report)), SCHEMA)
    assert report["schema_version"] == "1.2" and report["config"]["startup"] is True
    for row in report["results"]:
        assert row["status"] == "ok", row["reason"]
        assert row["first_run_cold_s"] > 0 and row["first_run_warm_s"] > 0
        assert row["peak_cold_mb"] >= 0 and row["peak_warm_mb"] >= 0
    assert "peak MB cold" in to_markdown(report)
