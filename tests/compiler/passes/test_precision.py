"""fp16 / bf16 conversion: boundary Casts, fp32 islands, verification, the bf16 target gate."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from compiler_cases import rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler import calibrate
from kiln.compiler.passes import precision
from kiln.compiler.target import Target
from kiln.errors import UnsupportedError


def mlp(scale: float = 1.0) -> ir.Model:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["a"], name="add1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2"),
             helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1)]
    inits = {"w1": rand(16, 32, seed=1) * scale, "b1": rand(32, seed=2),
             "w2": rand(32, 8, seed=3)}
    return float_model(nodes, {"x": [4, 16]}, {"y": [4, 8]}, inits)


def _types(model: ir.Model) -> dict[str, ir.DataType]:
    return {n.name: n.outputs[0].dtype for n in model.graph}


def test_fp16_keeps_io_and_softmax_in_fp32():
    model = mlp()
    step = precision.ConvertPrecisionPass("fp16")
    out = ir.from_proto(ir.to_proto(model))
    assert step(out).modified
    types = _types(out)
    assert types["mm1"] == ir.DataType.FLOAT16 and types["mm2"] == ir.DataType.FLOAT16
    assert types["softmax"] == ir.DataType.FLOAT
    assert step.stats.fp32_nodes["softmax"] == "overflow- or precision-prone op"
    assert out.graph.inputs[0].dtype == ir.DataType.FLOAT
    assert out.graph.outputs[0].dtype == ir.DataType.FLOAT
    casts = [n for n in out.graph if n.op_type == "Cast"]
    assert len(casts) == step.stats.casts == 2  # x down, z up
    onnx.checker.check_model(ir.to_proto(out), full_check=True)
    x = {"x": rand(4, 16, seed=7)}
    np.testing.assert_allclose(run_reference(out, x)[0], run_reference(model, x)[0], atol=5e-3)


def test_range_analysis_keeps_overflowing_nodes_in_fp32():
    model = mlp(scale=20000.0)  # h reaches far beyond 65504
    ranges = calibrate.collect_ranges(model, [{"x": rand(4, 16, seed=s)} for s in range(3)],
                                      method="minmax")
    assert ranges["h"].amax > precision.FP16_MAX
    step = precision.ConvertPrecisionPass("fp16", ranges=ranges)
    step(model)
    assert _types(model)["mm1"] == ir.DataType.FLOAT
    assert "beyond" in step.stats.fp32_nodes["mm1"]


def test_keep_fp32_by_name():
    model = mlp()
    step = precision.ConvertPrecisionPass("fp16", keep_fp32={"mm2"})
    step(model)
    assert _types(model)["mm2"] == ir.DataType.FLOAT
    assert _types(model)["mm1"] == ir.DataType.FLOAT16


def test_convert_precision_verifies_and_reports():
    model = mlp()
    samples = [{"x": rand(4, 16, seed=s)} for s in range(3)]
    result = precision.convert_precision(model, Target.parse("cpu"), "fp16", samples)
    assert result.report.checker == "ok"
    acc = result.report.accuracy.outputs[0]
    assert acc.nonfinite == 0 and acc.cosine_min > 0.999
    assert any("fp16" in line for line in result.report.lines())


def test_bf16_needs_the_target_feature():
    with pytest.raises(UnsupportedError, match="avx512_bf16 or AMX"):
        precision.convert_precision(mlp(), Target.parse("cpu:avx2,fma"), "bf16")


def test_bf16_on_a_bf16_target_is_valid_in_onnxruntime():
    model = mlp()
    samples = [{"x": rand(4, 16, seed=s)} for s in range(2)]
    result = precision.convert_precision(model, Target.parse("cpu:avx512f,avx512_bf16"),
                                         "bf16", samples)
    # onnxruntime's CPU provider lacks bf16 MatMul: those stay fp32 with bf16-stored weights
    reasons = set(result.report.stats.fp32_nodes.values())
    assert any("onnxruntime has no bf16 kernel" in r for r in reasons)
    assert result.report.stats.stored_weights == 2
    assert result.report.accuracy.outputs[0].cosine_min > 0.999


def test_schema_allows():
    model = mlp()
    mm = next(n for n in model.graph if n.op_type == "MatMul")
    assert precision.schema_allows(mm, 17, ir.DataType.FLOAT16)
    assert precision.schema_allows(mm, 17, ir.DataType.BFLOAT16)
    conv = ir.Node("", "Conv", [ir.Value(name="a", type=ir.TensorType(ir.DataType.FLOAT)),
                                ir.Value(name="b", type=ir.TensorType(ir.DataType.FLOAT))])
    conv.outputs[0].dtype = ir.DataType.FLOAT
    assert not precision.schema_allows(conv, 13, ir.DataType.BFLOAT16)


def test_bf16_moves_old_opsets_up():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    model = float_model(nodes, {"x": [2, 4]}, {"y": [2, 3]}, {"w": rand(4, 3)}, opset=9)
    result = precision.convert_precision(model, Target.parse("cpu:avx512_bf16"), "bf16",
                                         [{"x": rand(2, 4, seed=1)}])
    assert result.model.opset_imports[""] >= 13
    assert result.report.stats.stored_weights == 1
