"""Magnitude and channel pruning: exactness against masked weights, propagation, counts."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from compiler_cases import rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes import prune
from kiln.compiler.passes.quantize import constant_array
from kiln.errors import InputError


def resnet_block() -> ir.Model:
    """stem conv -> BN -> relu -> [conv -> relu -> conv] + skip -> relu -> concat(branch) ->
    conv -> GAP -> flatten -> gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("BatchNormalization", ["c0", "g", "be", "m", "v"], ["n0"], name="bn"),
        helper.make_node("Relu", ["n0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r0"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="branch"),
        helper.make_node("Concat", ["r2", "c3"], ["cat"], axis=1, name="concat"),
        helper.make_node("Conv", ["cat", "w4", "b4"], ["c4"], name="mix"),
        helper.make_node("GlobalAveragePool", ["c4"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc"),
    ]
    inits = {"w0": rand(16, 3, 3, 3, seed=1), "b0": rand(16, seed=2),
             "g": rand(16, seed=3), "be": rand(16, seed=4), "m": rand(16, seed=5),
             "v": rand(16, seed=6, positive=True),
             "w1": rand(16, 16, 3, 3, seed=7), "b1": rand(16, seed=8),
             "w2": rand(16, 16, 3, 3, seed=9), "b2": rand(16, seed=10),
             "w3": rand(8, 16, 1, 1, seed=11),
             "w4": rand(12, 24, 1, 1, seed=12), "b4": rand(12, seed=13),
             "wf": rand(4, 12, seed=14), "bf": rand(4, seed=15)}
    return float_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4]}, inits)


def masked_copy(model: ir.Model, kept: dict[str, np.ndarray]) -> ir.Model:
    """The original with removed channels' weights and biases zeroed (not removed)."""
    out = ir.from_proto(ir.to_proto(model))
    for node in out.graph:
        if node.name in kept:
            for i in (1, 2):
                if len(node.inputs) > i and node.inputs[i] is not None:
                    a = constant_array(node.inputs[i]).copy()
                    a[np.setdiff1d(np.arange(a.shape[0]), kept[node.name])] = 0
                    node.inputs[i].const_value = ir.tensor(a)
    return out


def test_channels_match_the_masked_original():
    model = resnet_block()
    pruned = ir.from_proto(ir.to_proto(model))
    step = prune.PruneChannelsPass(0.5, multiple=1)
    assert step(pruned).modified
    onnx.checker.check_model(ir.to_proto(pruned), full_check=True)
    # stem and conv2 write the same residual stream: one choice of channels for both
    np.testing.assert_array_equal(step.kept["stem"], step.kept["conv2"])
    assert set(step.kept) == {"stem", "conv1", "conv2", "branch", "mix"}
    masked = masked_copy(model, step.kept)
    bn = next(n for n in masked.graph if n.name == "bn")
    for i in (1, 2):  # gamma = beta = 0: a removed channel leaves BN as an exact zero
        a = constant_array(bn.inputs[i]).copy()
        a[np.setdiff1d(np.arange(16), step.kept["stem"])] = 0
        bn.inputs[i].const_value = ir.tensor(a)
    x = {"x": rand(1, 3, 8, 8, seed=20)}
    np.testing.assert_allclose(run_reference(pruned, x)[0], run_reference(masked, x)[0], rtol=1e-4,
                               atol=1e-4)


def test_channels_exact_without_batchnorm():
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="a"),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="b"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Concat", ["r0", "r1"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w2", "b2"], ["y"], name="c")]
    inits = {"w0": rand(6, 2, 1, 1, seed=1), "b0": rand(6, seed=2),
             "w1": rand(10, 2, 1, 1, seed=3), "b1": rand(10, seed=4),
             "w2": rand(3, 16, 1, 1, seed=5), "b2": rand(3, seed=6)}
    model = float_model(nodes, {"x": [1, 2, 4, 4]}, {"y": [1, 3, 4, 4]}, inits)
    pruned = ir.from_proto(ir.to_proto(model))
    step = prune.PruneChannelsPass(0.5, multiple=1)
    step(pruned)
    assert set(step.kept) == {"a", "b"}  # "c" writes the graph output: frozen
    w2 = next(n for n in pruned.graph if n.name == "c").inputs[1].const_value.numpy()
    assert w2.shape == (3, 8, 1, 1)  # 3 of 6 and 5 of 10 input channels, at their offsets
    x = {"x": rand(1, 2, 4, 4, seed=9)}
    # with Relu(0) = 0 a removed channel contributes nothing: results are identical
    np.testing.assert_allclose(run_reference(pruned, x)[0],
                               run_reference(masked_copy(model, step.kept), x)[0], atol=1e-5)


def test_fewer_macs_and_params():
    model = resnet_block()
    pruned = ir.from_proto(ir.to_proto(model))
    prune.PruneChannelsPass(0.3, multiple=1)(pruned)
    assert prune.count_macs(pruned) < 0.75 * prune.count_macs(model)
    assert prune.count_params(pruned) < prune.count_params(model)


def test_grouped_conv_freezes_its_input():
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="a"),
             helper.make_node("Conv", ["c0", "w1"], ["y"], group=4, name="dw")]
    model = float_model(nodes, {"x": [1, 2, 4, 4]}, {"y": [1, 4, 4, 4]},
                        {"w0": rand(4, 2, 1, 1), "w1": rand(4, 1, 3, 3)})
    step = prune.PruneChannelsPass(0.5, multiple=1)
    assert not step(model).modified
    assert "read by a grouped Conv" in step.stats.frozen_reasons


def test_magnitude_sparsity():
    model = resnet_block()
    step = prune.PruneMagnitudePass(0.5)
    step(model)
    assert step.stats.layers == 6
    assert 0.49 <= step.stats.sparsity <= 0.55
    assert prune.weight_sparsity(model) == step.stats.sparsity


def test_parse_prune():
    assert prune.parse_prune("channels:0.3") == ("channels", 0.3)
    assert prune.parse_prune("magnitude:0.5") == ("magnitude", 0.5)
    for bad in ("channels", "channels:1.5", "rows:0.3", "magnitude:x"):
        with pytest.raises(InputError, match="--prune"):
            prune.parse_prune(bad)


@pytest.mark.slow
def test_light_resnet50_channels_on_every_cpu_backend():
    from kiln.backends import registry
    from kiln.backends.base import CompileOptions
    from kiln.compiler import frontend, pipeline
    from kiln.compiler.target import Target
    from kiln.zoo import light_model

    target = Target.detect()
    model, _ = pipeline.optimize(frontend.import_model(str(light_model("resnet50"))), 2, target)
    pruned = ir.from_proto(ir.to_proto(model))
    prune.PruneChannelsPass(0.3)(pruned)
    assert prune.count_macs(pruned) <= 0.75 * prune.count_macs(model)
    x = {model.graph.inputs[0].name: rand(1, 3, 224, 224, seed=3, positive=True)}
    want = run_reference(pruned, x)[0]
    ran = []
    for name in ("onnxruntime", "openvino", "native"):
        if not registry.availability(name).ok:
            continue
        compiled = registry.require(name).compile(pruned, target, CompileOptions())
        got = list(compiled.run(x).values())[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
        ran.append(name)
    assert {"onnxruntime", "openvino"} <= set(ran)
