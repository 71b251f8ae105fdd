"""`kiln compile` and `kiln inspect` run as a user runs them."""

import json
import subprocess
import sys
import zipfile

import onnx
import pytest


def kiln_cli(*args):
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True,
                          timeout=600)


def test_compile_writes_an_artifact_that_runs(tmp_path, conv_model):
    src = tmp_path / "m.onnx"
    onnx.save(conv_model, src)
    out = tmp_path / "m.kiln"
    done = kiln_cli("compile", str(src), "-b", "onnxruntime", "-t", "cpu:avx2,fma", "-O", "2",
                    "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["target"] == "cpu:avx2,fma" and report["report"]["level"] == 2
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["backend"]["name"] == "onnxruntime" and manifest["target"] == "cpu:avx2,fma"
    assert manifest["pipeline"]["level"] == 2
    ran = kiln_cli("run", str(out), "-o", str(tmp_path / "outs"))
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "outs" / "y.npy").exists()


def test_compile_refuses_a_wrong_suffix(tmp_path, conv_model):
    src = tmp_path / "m.onnx"
    onnx.save(conv_model, src)
    done = kiln_cli("compile", str(src), "-o", str(tmp_path / "m.zip"))
    assert done.returncode == 1 and "must end in .kiln" in done.stderr


def test_inspect_json_with_opt_level(tmp_path, conv_model):
    src = tmp_path / "m.onnx"
    onnx.save(conv_model, src)
    done = kiln_cli("inspect", str(src), "-O", "2", "-b", "onnxruntime", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    summary = data["summary"]
    assert summary["imported"]["ops"]["Conv"] == 1
    assert summary["imported"]["macs"]["total"] == 8 * 8 * 8 * 27 + 8 * 4
    assert summary["compile"]["passes"][0]["name"] == "constant-initializers"
    assert data["plan"]["backends"][0] == "onnxruntime"  # the placement report is still there


def test_inspect_binds_symbolic_dims_for_macs(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from kiln.compiler.inspect import node_macs  # noqa: F401  (the counting under test)

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                              [w])
    src = tmp_path / "sym.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    loose = json.loads(kiln_cli("inspect", str(src), "-b", "onnxruntime", "--json").stdout)
    assert loose["summary"]["imported"]["macs"]["uncounted_nodes"] == 1
    pinned = kiln_cli("inspect", str(src), "-b", "onnxruntime", "--dim", "n=6", "--json")
    assert json.loads(pinned.stdout)["summary"]["imported"]["macs"]["total"] == 6 * 4 * 3


def test_inspect_table(tmp_path, conv_model):
    src = tmp_path / "m.onnx"
    onnx.save(conv_model, src)
    done = kiln_cli("inspect", str(src), "-b", "onnxruntime")
    assert done.returncode == 0 and "GMACs" in done.stdout and "O2 for onnxruntime" in \
        done.stdout


@pytest.mark.parametrize("args", [("inspect", "missing.onnx"), ("compile", "missing.onnx",
                                                                  "-o", "x.kiln")])
def test_missing_model_is_one_line(args):
    done = kiln_cli(*args)
    assert done.returncode != 0 and "Traceback" not in done.stderr
