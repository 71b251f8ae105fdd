"""The compile options for int8 / fp16 / bf16 / pruning, attached to a click command."""

from __future__ import annotations

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.errors import InputError
from kiln.reduce_options import compile_reduced, from_cli, reduce_options, split_exclude


def model_file(tmp_path) -> str:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "wf")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    return str(path)


@click.command()
@click.argument("model")
@click.option("--precision", default="fp32")
@reduce_options
def demo(model, precision, **reduce):
    compiled, result = compile_reduced(model, "onnxruntime", "auto", precision, reduce,
                                       threads=1)
    if result is None:
        click.echo("nothing to do")
        return
    for line in result.lines():
        click.echo(line)
    (y,) = kiln.Session(compiled).run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    click.echo(f"output {y.shape}")


def test_int8_with_calibration_folder_and_exclude(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        np.save(calib / f"{i}.npy", np.random.default_rng(i).random((1, 3, 8, 8), np.float32))
    result = CliRunner().invoke(demo, [model_file(tmp_path), "--precision", "int8",
                                       "--calibration", str(calib), "--calibration-method",
                                       "mse", "--exclude", "fc", "--prune", "channels:0.25"])
    assert result.exit_code == 0, result.output
    assert "int8 static" in result.output and "mse calibration on 3 sample(s)" in result.output
    assert "fp32 fc: excluded" in result.output
    assert "prune channels:0.25" in result.output
    assert "output (1, 4)" in result.output


def test_no_reduction_and_helpers(tmp_path):
    result = CliRunner().invoke(demo, [model_file(tmp_path)])
    assert result.output.strip() == "nothing to do"
    assert split_exclude(("a,b", "Conv")) == ["a", "b", "Conv"]
    assert from_cli({"prune": "channels:0.3"}).asked("fp32")
    assert not from_cli({}).asked("fp32") and from_cli({}).asked("bf16")
    with pytest.raises(InputError, match="max-accuracy-drop"):
        from_cli({"max_accuracy_drop": 2.0})


def test_kiln_compile_int8_writes_an_artifact(tmp_path):
    from kiln.cli import cli
    from kiln.runtime.session import Session

    out = tmp_path / "m.kiln"
    result = CliRunner().invoke(cli, ["compile", model_file(tmp_path), "-b", "onnxruntime",
                                      "--precision", "int8", "--calibration", "random:3",
                                      "--max-accuracy-drop", "0.05", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "int8 static" in result.output and "accuracy vs fp32" in result.output
    session = Session(str(out))
    (y,) = session.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    assert y.shape == (1, 4)
    ops = {n.op_type for n in session.model.graph}
    assert "QuantizeLinear" in ops


def test_kiln_compile_int8_without_calibration_fails_cleanly(tmp_path):
    from kiln.cli import cli

    result = CliRunner().invoke(cli, ["compile", model_file(tmp_path), "--precision", "int8",
                                      "-o", str(tmp_path / "m.kiln")])
    assert result.exit_code != 0  # kiln.cli.main prints KilnErrors as one line
    assert isinstance(result.exception, InputError)
    assert "needs calibration data" in str(result.exception)
