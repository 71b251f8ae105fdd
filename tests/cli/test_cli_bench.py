"""`kiln bench` and `kiln compare` run as a user runs them: subprocesses, exit codes, files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import onnx
import pytest

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "bench_schema.json").read_text())
QUICK = ["--iterations", "4", "--block", "2", "--warmup", "1"]


def kiln_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900, env={**os.environ, "COLUMNS": "200"})


def _rows(path):
    report = json.loads(Path(path).read_text())
    jsonschema.validate(report, SCHEMA)
    return report, {(r["backend"], r["scenario"]): r for r in report["results"]}


def test_bench_squeezenet_all_backends(tmp_path, squeezenet_path):
    out = kiln_cli("bench", str(squeezenet_path), "--backends", "all", *QUICK,
                   "--json", str(tmp_path / "out.json"))
    assert out.returncode == 0, out.stderr
    report, rows = _rows(tmp_path / "out.json")
    assert report["model"]["name"] == "light_squeezenet.onnx"
    assert rows["onnxruntime", "single-stream"]["status"] == "ok"
    assert rows["openvino", "single-stream"]["status"] == "ok"
    assert rows["native", "single-stream"]["status"] in ("ok", "error")
    trt = rows["tensorrt", "single-stream"]
    assert trt["status"] in ("unavailable", "ok") and trt["reason"]
    assert "fastest" in out.stdout and "onnxruntime" in out.stdout


@pytest.mark.slow
def test_bench_without_arguments(tmp_path):
    out = kiln_cli("bench", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "light_resnet50.onnx" in out.stdout and "tensorrt" in out.stdout


def test_bench_scenarios_and_reports(tmp_path, conv_model):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model, model)
    out = kiln_cli("bench", str(model), "--backends", "onnxruntime,openvino", "--scenario",
                   "all", *QUICK, "--latency-bound", "1000", "--probe-seconds", "0.2",
                   "--max-probes", "3", "--offline-samples", "8", "--samples-per-query", "2",
                   "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"),
                   "--plot", str(tmp_path / "r.png"))
    assert out.returncode == 0, out.stderr
    report, rows = _rows(tmp_path / "r.json")
    assert {s for _, s in rows} == {"single-stream", "multi-stream", "server", "offline"}
    server = rows["openvino", "server"]
    assert server["status"] == "ok" and server["throughput_qps"] > 0
    assert server["detail"]["p99_at_max_ms"] <= 1000
    assert "### server" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_inputs_file(tmp_path, conv_model):
    import numpy as np

    model = tmp_path / "m.onnx"
    onnx.save(conv_model, model)
    np.save(tmp_path / "x.npy", np.ones((1, 3, 8, 8), np.float32))
    out = kiln_cli("bench", str(model), "-b", "onnxruntime", *QUICK, "--inputs",
                   str(tmp_path / "x.npy"), "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r.json").read_text())["inputs"][0]["source"].endswith("x.npy")
    bad = kiln_cli("bench", str(model), "-b", "onnxruntime", "--inputs", str(tmp_path / "no.npz"))
    assert bad.returncode == 1 and "no such file" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--scenario", "burst"], "unknown scenario"),
    (["--iterations", "0"], "iterations"),
])
def test_bench_user_errors_are_one_line(args, message, squeezenet_path):
    out = kiln_cli("bench", str(squeezenet_path), *args)
    assert out.returncode == 1 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _models():
    """make_cnn/perturbed from tests/runtime/test_compare.py (one model builder, not two)."""
    import importlib.util

    path = Path(__file__).parents[1] / "runtime" / "test_compare.py"
    spec = importlib.util.spec_from_file_location("kiln_test_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_cnn, module.perturbed


def test_compare_against_names_the_perturbed_node(tmp_path):
    make_cnn, perturbed = _models()

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(make_cnn(), a)
    onnx.save(perturbed(make_cnn(), "w2"), b)
    out = kiln_cli("compare", str(a), "--backends", "onnxruntime", "--against", str(b),
                   "--json", str(tmp_path / "c.json"))
    assert out.returncode == 1
    assert "first divergent node: conv2 (Conv" in out.stdout
    assert "conv2" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["ok"] is False and data["bisect"]["first"]["node"] == "conv2"
    same = kiln_cli("compare", str(a), "--backends", "onnxruntime,openvino", "--atol", "1e-5")
    assert same.returncode == 0, same.stderr + same.stdout
    assert "all outputs match" in same.stdout


def test_bench_startup_columns(tmp_path, conv_model):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model, model)
    out = kiln_cli("bench", str(model), "--backends", "onnxruntime", *QUICK, "--startup",
                   "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    assert "cold s" in out.stdout and "warm MB" in out.stdout
    _, rows = _rows(tmp_path / "r.json")
    row = rows["onnxruntime", "single-stream"]
    assert row["first_run_cold_s"] > 0 and row["peak_warm_mb"] >= 0
