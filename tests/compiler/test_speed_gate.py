"""Speed gate: regions, and decisions taken from a real measurement on onnxruntime."""

from __future__ import annotations

import onnx_ir as ir
from compiler_cases import rand
from model_builders import float_model
from onnx import helper

from kiln.compiler import calibrate, quantization, speed_gate
from kiln.compiler.passes import quantize
from kiln.runtime.quantize_gate import measure_with_backend


def mixed():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Conv", ["c1", "wd"], ["c2"], pads=[1, 1, 1, 1], group=8,
                              name="depthwise"),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["h"], name="fc"),
             helper.make_node("MatMul", ["h", "h2"], ["y"], name="outer")]
    return float_model(nodes, {"x": [1, 3, 16, 16], "h2": [4, 4]}, {"y": [1, 4]},
                       {"w1": rand(8, 3, 3, 3), "wd": rand(8, 1, 3, 3), "wm": rand(8, 4)})


def test_regions_by_kind_and_per_layer():
    model = mixed()
    layers = ["conv", "depthwise", "fc", "outer"]
    assert speed_gate.regions(model, layers) == {
        "Conv": ["conv"], "Conv(grouped)": ["depthwise"], "MatMul(weights)": ["fc"],
        "MatMul(activations)": ["outer"]}
    assert list(speed_gate.regions(model, layers, per_layer=True)) == layers


def test_gate_decides_every_region_with_measured_numbers():
    model = mixed()
    feeds = {"x": rand(1, 3, 16, 16, seed=1), "h2": rand(4, 4, seed=2)}
    samples = [feeds]
    ranges = calibrate.collect_ranges(model, samples, method="minmax")

    def build(excluded):
        m = quantization.copy_model(model)
        quantize.QuantizeStaticPass(ranges, exclude=excluded)(m)
        return m

    groups = speed_gate.regions(model, ["conv", "depthwise", "fc"])
    result = speed_gate.gate(model, build, groups, measure_with_backend("onnxruntime", feeds,
                                                                        threads=1,
                                                                        min_time=0.02,
                                                                        repeats=1),
                             rounds=1)
    assert [d.region for d in result.decisions] == list(groups)
    for d in result.decisions:
        assert d.quantized_s > 0 and d.fp32_s > 0
        assert d.kept == (d.quantized_s < d.fp32_s * 0.97)
        assert all((n in result.excluded) != d.kept for n in d.nodes)
    assert result.fp32_s > 0 and result.final_s > 0
    assert len(result.lines()) == len(groups) + 1
    # the excluded set builds a valid model
    assert isinstance(build(result.excluded), ir.Model)
