"""BatchNormalization folded into Conv / ConvTranspose / Gemm: structure and numbers."""

from __future__ import annotations

import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.fuse_batchnorm import FuseBatchNormPass


def _bn_inits(c: int) -> dict:
    return {"g": rand(c, seed=10), "be": rand(c, seed=11), "m": rand(c, seed=12),
            "v": rand(c, seed=13, positive=True)}


@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn(bias):
    conv_in = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [helper.make_node("Conv", conv_in, ["c"], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"],
                              epsilon=1e-3)]
    inits = {"w": rand(6, 3, 3, 3), **_bn_inits(6)}
    if bias:
        inits["b"] = rand(6, seed=5)
    model = float_model(nodes, {"x": [2, 3, 9, 9]}, {"y": [2, 6, 4, 4]}, inits)
    feeds = {"x": rand(2, 3, 9, 9, seed=1)}
    want = run_reference(model, feeds)
    step = FuseBatchNormPass()
    assert step(model).modified
    assert ops(model) == ["Conv"]
    assert step.fired == {"FuseBatchNormIntoConv": 1}
    assert_close(want, run_reference(model, feeds))


def test_conv_transpose_bn_with_groups():
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], group=2, strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"])]
    model = float_model(nodes, {"x": [1, 4, 5, 5]}, {"y": [1, 6, 11, 11]},
                        {"w": rand(4, 3, 3, 3), **_bn_inits(6)})
    feeds = {"x": rand(1, 4, 5, 5, seed=1)}
    want = run_reference(model, feeds)
    FuseBatchNormPass()(model)
    assert ops(model) == ["ConvTranspose"]
    assert_close(want, run_reference(model, feeds))


def test_gemm_bn():
    nodes = [helper.make_node("Gemm", ["a", "w", "c"], ["g"], transB=1, beta=0.5),
             helper.make_node("BatchNormalization", ["g", "s", "be", "m", "v"], ["y"])]
    inits = {"w": rand(5, 7), "c": rand(5), **_bn_inits(5)}
    inits["s"] = inits.pop("g")
    model = float_model(nodes, {"a": [3, 7]}, {"y": [3, 5]}, inits)
    feeds = {"a": rand(3, 7, seed=1)}
    want = run_reference(model, feeds)
    FuseBatchNormPass()(model)
    assert ops(model) == ["Gemm"]
    assert_close(want, run_reference(model, feeds))


def test_bn_fed_by_a_graph_input_weight_is_left_alone():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"])]
    model = float_model(nodes, {"x": [1, 3, 4, 4], "w": [2, 3, 1, 1]}, {"y": [1, 2, 4, 4]},
                        _bn_inits(2))
    assert not FuseBatchNormPass()(model).modified
    assert ops(model) == ["Conv", "BatchNormalization"]


def test_after_conv_false_leaves_conv_pairs_and_folds_the_others():
    """For an engine that folds Conv -> BatchNormalization itself: that pair stays, a Gemm's
    BatchNormalization is still folded."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"]),
             helper.make_node("Gemm", ["a", "w2"], ["h"], transB=1),
             helper.make_node("BatchNormalization", ["h", "s", "be2", "m2", "v2"], ["z"])]
    inits = {"w": rand(6, 3, 3, 3), **_bn_inits(6), "w2": rand(5, 7), "s": rand(5, seed=20),
             "be2": rand(5, seed=21), "m2": rand(5, seed=22),
             "v2": rand(5, seed=23, positive=True)}
    model = float_model(nodes, {"x": [1, 3, 5, 5], "a": [3, 7]},
                        {"y": [1, 6, 3, 3], "z": [3, 5]}, inits)
    feeds = {"x": rand(1, 3, 5, 5, seed=1), "a": rand(3, 7, seed=2)}
    want = run_reference(model, feeds)
    step = FuseBatchNormPass(after_conv=False)
    assert step(model).modified
    assert sorted(ops(model)) == ["BatchNormalization", "Conv", "Gemm"]
    assert step.fired == {"FuseBatchNormIntoGemm": 1}
    assert_close(want, run_reference(model, feeds))


def test_folded_weights_are_computed_when_read_and_written_once_to_the_weights_file():
    """The fold makes W * s an ir.LazyTensor (nothing computed at the fold); the compile's
    weights offload writes its values to the file, from which the IR then reads them."""
    import numpy as np
    import onnx_ir as ir

    from kiln.runtime.weights import MIN_OFFLOAD_BYTES, offload_weights

    channels = 64  # W: 64 x 64 x 8 x 8 floats, 1 MiB: large enough to be offloaded
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[4, 4, 3, 3]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"])]
    inits = {"w": rand(channels, channels, 8, 8), **_bn_inits(channels)}
    model = float_model(nodes, {"x": [1, channels, 4, 4]}, {"y": [1, channels, 4, 4]}, inits)
    feeds = {"x": rand(1, channels, 4, 4, seed=1)}
    want = run_reference(model, feeds)
    FuseBatchNormPass()(model)
    weight = next(iter(model.graph)).inputs[1]
    assert isinstance(weight.const_value, ir.LazyTensor)
    assert_close(want, run_reference(model, feeds))
    folded = inits["w"] * (inits["g"] / np.sqrt(inits["v"] + 1e-5))[:, None, None, None]
    assert weight.const_value.nbytes >= MIN_OFFLOAD_BYTES
    assert offload_weights(model)
    assert isinstance(weight.const_value, ir.ExternalTensor)
    np.testing.assert_allclose(weight.const_value.numpy(), folded, rtol=1e-6)


def test_folded_weights_keep_the_conv_weight_type():
    """BatchNormalization-15 lets its parameters be wider than the Conv (float32 scale on
    float16 weights): the folded weights stay float16, bytes and label alike."""
    import numpy as np

    from kiln.compiler.passes.fuse_batchnorm import FuseBatchNormIntoConv

    w = rand(4, 2, 3, 3).astype(np.float16)
    s = rand(4, seed=3)  # float32
    folded = FuseBatchNormIntoConv()._scale_weights(w, s, {})
    values = folded.numpy()
    assert values.dtype == np.float16 and folded.dtype.numpy() == np.float16
    assert values.nbytes == folded.nbytes == w.nbytes
    np.testing.assert_allclose(values, (w * s[:, None, None, None]).astype(np.float16))
