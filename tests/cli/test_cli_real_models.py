"""The CLI on what real models bring: symbolic dims (sized from the model or asked for by
name), artifacts of any backend (drift against their stored graph on onnxruntime), and
terminals 100 and 80 columns wide. Run as a user runs them: subprocesses and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import onnx
import pytest
from model_builders import make_conv_model, make_stride_detector
from onnx import TensorProto, helper

from kiln.runtime.artifact import load_artifact
from kiln.runtime.session import Session

QUICK = ["--iterations", "4", "--block", "2", "--warmup", "1"]


def kiln_cli(*args, columns=200, cwd=None):
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900, env={**os.environ, "COLUMNS": str(columns)})


def _fits(text: str, columns: int) -> None:
    """Nothing cut to an ellipsis, no line past the terminal."""
    assert "…" not in text, text
    too_wide = [line for line in text.splitlines() if len(line.rstrip()) > columns]
    assert not too_wide, "\n".join(too_wide)


@pytest.fixture
def detector(tmp_path):
    path = tmp_path / "det.onnx"
    onnx.save(make_stride_detector(), path)
    return path


@pytest.fixture
def native_artifact(tmp_path):
    """The conv model compiled for native: its stored graph holds kiln::FusedConv."""
    path = Session(make_conv_model(), backend="native").save(tmp_path / "m.kiln")
    model = onnx.load_model_from_string(load_artifact(path).model_bytes)
    assert any(n.domain == "kiln" for n in model.graph.node)
    return path


@pytest.mark.parametrize("command", ["run", "bench", "compare"])
def test_symbolic_hw_names_each_dim_and_the_flag(detector, command):
    out = kiln_cli(command, str(detector), *(QUICK if command == "bench" else []),
                   *(["-b", "onnxruntime"] if command == "bench" else []))
    assert out.returncode == 1, out.stdout + out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, out.stderr
    assert "input 'x' has symbolic dims 'height', 'width'" in error[0]
    assert "--dim height=SIZE --dim width=SIZE" in error[0]
    assert "Concat" not in out.stderr and "batch" not in error[0]


def test_run_with_dims_says_how_the_batch_was_sized(detector):
    out = kiln_cli("run", str(detector), "--dim", "height=8", "--dim", "width=6")
    assert out.returncode == 0, out.stderr
    assert "batch dim 'batch' of input 'x' set to 1" in out.stdout
    assert "float32[1, 7, 8, 6]" in out.stdout
    odd = kiln_cli("run", str(detector), "-b", "onnxruntime", "--dim", "height=7",
                   "--dim", "width=7")
    assert odd.returncode == 1
    assert "height=7 (given), width=7 (given)" in odd.stderr


def test_compare_and_bench_take_dims(tmp_path, detector):
    out = kiln_cli("compare", str(detector), "--dim", "height=4", "--dim", "width=4")
    assert out.returncode == 0, out.stderr
    assert "all outputs match" in out.stdout
    report = tmp_path / "r.json"
    out = kiln_cli("bench", str(detector), "-b", "onnxruntime,native", *QUICK, "--dim",
                   "height=4", "--dim", "width=4", "--json", str(report))
    assert out.returncode == 0, out.stderr
    data = json.loads(report.read_text())
    assert data["inputs"][0]["shape"] == [1, 3, 4, 4]
    assert all(r["status"] == "ok" for r in data["results"]), data["results"]


def test_metadata_imgsz_sizes_the_image(tmp_path):
    path = tmp_path / "yolo.onnx"
    onnx.save(make_stride_detector({"imgsz": "[32, 16]"}), path)
    out = kiln_cli("run", str(path), "-b", "onnxruntime")
    assert out.returncode == 0, out.stderr
    assert "float32[1, 7, 32, 16]" in out.stdout and "metadata 'imgsz'" in out.stdout


def test_bench_native_artifact_has_drift_on_every_backend(tmp_path, native_artifact):
    report = tmp_path / "r.json"
    out = kiln_cli("bench", str(native_artifact), "-b", "onnxruntime,openvino,native", *QUICK,
                   "--json", str(report))
    assert out.returncode == 0, out.stderr
    data = json.loads(report.read_text())
    assert not any(n.startswith("no drift") for n in data["notes"]), data["notes"]
    rows = {r["backend"]: r for r in data["results"]}
    for backend in ("onnxruntime", "openvino", "native"):
        assert rows[backend]["status"] == "ok", rows[backend]["reason"]
        assert rows[backend]["max_abs_diff"] is not None
        assert rows[backend]["max_abs_diff"] < 1e-4
    # native alone: the reference is still computed, on onnxruntime
    alone = kiln_cli("bench", str(native_artifact), "-b", "native", *QUICK,
                     "--json", str(report))
    assert alone.returncode == 0, alone.stderr
    row = json.loads(report.read_text())["results"][0]
    assert row["status"] == "ok" and row["max_abs_diff"] < 1e-4


def test_compare_native_artifact_with_its_standard_graph(native_artifact):
    out = kiln_cli("compare", str(native_artifact), columns=80)
    assert out.returncode == 0, out.stderr
    assert "A = m.kiln on onnxruntime/fp32" in out.stdout
    assert "B = m.kiln on native/fp32" in out.stdout
    assert "all outputs match" in out.stdout
    _fits(out.stdout, 80)


def test_bench_table_fits_100_columns(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(make_conv_model(), path)
    out = kiln_cli("bench", str(path), "-b", "all", "--scenario", "single-stream,offline",
                   "--offline-samples", "4", *QUICK, columns=100)
    assert out.returncode == 0, out.stderr
    _fits(out.stdout, 100)
    header = next(line for line in out.stdout.splitlines() if "backend" in line)
    assert "p50 ms" in header and "p99 ms" in header and "max|diff|" in header
    assert "cosine" not in header and "--wide" in out.stdout
    wide = kiln_cli("bench", str(path), "-b", "onnxruntime,tensorrt", *QUICK, "--wide",
                    columns=100)
    assert wide.returncode == 0, wide.stderr
    assert "…" not in wide.stdout and "cosine" in wide.stdout and "compile s" in wide.stdout


def _long_names_model(path):
    """Two outputs whose names are longer than an 80-column table leaves them."""
    names = ["backbone/stage4/block3/attention/output_projection/Add_output_0",
             "head/detections/boxes_and_scores_after_decoding/Concat_output_0"]
    nodes = [helper.make_node("Relu", ["x"], [names[0]]),
             helper.make_node("Sigmoid", ["x"], [names[1]])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8400])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8400]) for n in names])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return names


@pytest.mark.parametrize("command", ["run", "compare", "inspect"])
def test_80_columns_keep_long_names_whole(tmp_path, command):
    path = tmp_path / "long.onnx"
    names = _long_names_model(path)
    extra = ["-b", "onnxruntime"] if command == "inspect" else []
    out = kiln_cli(command, str(path), *extra, columns=80)
    assert out.returncode == 0, out.stderr
    _fits(out.stdout, 80)
    for name in names:  # on a line of its own rather than cut or folded
        assert name in out.stdout.splitlines() or f" {name} " in out.stdout


def test_profile_runs_on_the_sized_inputs(tmp_path):
    """Sizes from the model's metadata reach the profile too (1x1 images fail at Concat)."""
    path = tmp_path / "yolo.onnx"
    onnx.save(make_stride_detector({"imgsz": "16"}), path)
    report = tmp_path / "r.json"
    out = kiln_cli("bench", str(path), "-b", "onnxruntime", *QUICK, "--profile",
                   "--profile-out", str(tmp_path / "t.json"), "--json", str(report))
    assert out.returncode == 0, out.stderr
    entry = json.loads(report.read_text())["profile"]["backends"][0]
    assert entry["status"] == "ok", entry["reason"]
    assert "profile onnxruntime/fp32" in out.stdout
