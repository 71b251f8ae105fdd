"""The kiln CLI run as a user runs it: a subprocess, checking exit codes and output."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from kiln import __version__


def kiln_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_version():
    out = kiln_cli("--version")
    assert out.returncode == 0 and __version__ in out.stdout


def test_targets_lists_all_four_backends():
    out = kiln_cli("targets", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [b["backend"] for b in data["backends"]] == ["onnxruntime", "openvino", "native",
                                                          "tensorrt"]
    assert all(b["reason"] for b in data["backends"])


def test_run_saves_outputs(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, path)
    x = np.ones((1, 3, 8, 8), np.float32)
    np.save(tmp_path / "x.npy", x)
    out = kiln_cli("run", str(path), "--backend", "onnxruntime", "--input", f"x={tmp_path}/x.npy",
                   "--output-dir", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "out" / "y.npy").shape == (1, 4)


def test_bench_json(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, path)
    out = kiln_cli("bench", str(path), "--backends", "onnxruntime,openvino,tensorrt",
                   "--iterations", "5", "--warmup", "1", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    rows = {r["backend"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert rows["onnxruntime"]["status"] == "ok" and rows["onnxruntime"]["max_abs_diff"] == 0
    assert rows["openvino"]["status"] == "ok" and rows["openvino"]["max_abs_diff"] < 1e-4
    assert rows["tensorrt"]["status"] in ("unavailable", "ok")
    assert rows["onnxruntime"]["latency_ms"]["p50"] > 0


@pytest.mark.parametrize("args, message", [
    (["run", "/nonexistent/model.onnx"], "no such file"),
    (["run", "--backend", "nope"], "unknown backend"),
    (["bench", "--backends", "nope"], "unknown backend"),
])
def test_user_errors_print_one_line_and_exit_non_zero(args, message):
    out = kiln_cli(*args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_truncated_model_one_line(tmp_path, squeezenet_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(squeezenet_path.read_bytes()[:5000])
    out = kiln_cli("run", str(cut))
    assert out.returncode == 1 and "cut.onnx" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_wrong_feed_one_line(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, path)
    np.save(tmp_path / "x.npy", np.ones((1, 3, 9, 8), np.float32))
    out = kiln_cli("run", str(path), "-b", "onnxruntime", "-i", f"x={tmp_path}/x.npy")
    assert out.returncode == 1 and "input 'x' has size 9 at axis 2" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    out = kiln_cli("--debug", "run", "/nonexistent/model.onnx")
    assert out.returncode != 0 and "Traceback" in out.stderr
