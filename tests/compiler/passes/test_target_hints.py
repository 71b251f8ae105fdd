"""O3 target hints: blocked layout per ISA for backends that take it, bf16 where native."""

from __future__ import annotations

import onnx_ir as ir
from compiler_cases import make_model, rand, run_ort
from onnx import helper

from kiln.compiler.capabilities import BackendCaps
from kiln.compiler.passes.target_hints import TargetHintsPass, blocked_layout
from kiln.compiler.pipeline import optimize
from kiln.compiler.target import Target

BLOCKED = BackendCaps("native", blocked_layouts=frozenset({"NCHW16c", "NCHW8c"}))


def _convs(channels: list[int]) -> ir.Model:
    nodes, inits, prev, cin = [], {}, "x", 3
    for i, cout in enumerate(channels):
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"]))
        inits[f"w{i}"] = rand(cout, cin, 1, 1, seed=i)
        prev, cin = f"c{i}", cout
    nodes.append(helper.make_node("Relu", [prev], ["y"]))
    return make_model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, cin, 4, 4]}, inits)


def test_layout_follows_the_isa_and_the_backend():
    assert blocked_layout(Target.parse("cpu:avx512f"), BLOCKED) == ("NCHW16c", 16)
    assert blocked_layout(Target.parse("cpu:avx2,fma"), BLOCKED) == ("NCHW8c", 8)
    assert blocked_layout(Target.parse("cpu"), BLOCKED) is None
    assert blocked_layout(Target.parse("cpu:avx512f"), BackendCaps("onnxruntime")) is None


def test_convs_are_marked_when_channels_fit_the_block():
    model = _convs([32, 24])
    step = TargetHintsPass(Target.parse("cpu:avx512f,avx512_bf16"), BLOCKED)
    assert step(model).modified
    marks = [n.metadata_props.get("kiln.layout") for n in model.graph if n.op_type == "Conv"]
    assert marks == ["NCHW16c", None]
    assert any("output channels 24 not a multiple of 16" in why for why in step.rejected)
    assert model.metadata_props["kiln.bf16"] == "allowed"
    assert not TargetHintsPass(Target.parse("cpu:avx512f,avx512_bf16"), BLOCKED)(model).modified


def test_o3_keeps_numbers_and_cross_compiles_for_avx2():
    model = _convs([16, 8])
    feeds = {"x": rand(1, 3, 4, 4, seed=9)}
    want = run_ort(model, feeds)
    out, report = optimize(model, 3, Target.parse("cpu:avx2,fma"), BLOCKED)
    assert report.pipeline[-1] == "target-hints"
    assert report.passes[-1].fired == {"layout NCHW8c": 2}
    assert "kiln.bf16" not in out.metadata_props
    got = run_ort(out, feeds)
    assert abs(got[0] - want[0]).max() < 1e-5
