"""reduce_model: the CLI-shaped entry point (prune, then int8 / fp16 / bf16)."""

from __future__ import annotations

import pytest
from compiler_cases import ops, rand
from model_builders import float_model
from onnx import helper

from kiln.compiler import reduce
from kiln.compiler.target import Target
from kiln.errors import InputError


def net():
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc")]
    return float_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 10]},
                       {"w1": rand(16, 3, 3, 3), "b1": rand(16), "w2": rand(16, 16, 3, 3),
                       "b2": rand(16), "wf": rand(10, 16), "bf": rand(10)})


def samples(n=3):
    return [{"x": rand(1, 3, 8, 8, seed=s)} for s in range(n)]


def test_prune_then_int8():
    result = reduce.reduce_model(net(), Target.parse("cpu:avx512_vnni"), precision="int8",
                                 calibration=samples(), prune="channels:0.3")
    assert result.prune.macs_after < result.prune.macs_before
    assert result.prune.accuracy is not None
    assert "QuantizeLinear" in ops(result.model)
    text = "\n".join(result.lines())
    assert "prune channels:0.3" in text and "int8 static" in text


def test_fp16_and_magnitude():
    result = reduce.reduce_model(net(), Target.parse("cpu"), precision="fp16",
                                 calibration=samples(), prune="magnitude:0.5")
    assert result.prune.sparsity >= 0.5
    assert result.precision.checker == "ok"


def test_fp32_prune_only_and_bad_precision():
    result = reduce.reduce_model(net(), None, prune="channels:0.5", eval_samples=samples())
    assert result.quantization is None and result.precision is None
    with pytest.raises(InputError, match="precision"):
        reduce.reduce_model(net(), None, precision="int4")


def test_fp16_without_data_still_checks_ranges():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="big"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    model = float_model(nodes, {"x": [2, 8]}, {"y": [2, 8]}, {"w": rand(8, 8) * 1e6})
    result = reduce.reduce_model(model, None, precision="fp16")
    assert "random inputs" in result.precision.data_note
    assert result.precision.stats.fp32_nodes["big"].startswith("calibrated |x|")
    assert result.precision.accuracy.outputs[0].nonfinite == 0
