"""Hostile inputs to the native kernels: each raises a kiln error naming the node, and the
process (and the compiled model) lives on."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import model_from_arrays
from native_cases import compile_native
from onnx import helper

import kiln

rng = np.random.default_rng(3)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _expect(compiled, feeds, error, *fragments: str) -> None:
    with pytest.raises(error) as info:
        compiled.run(feeds)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_gather_out_of_range_indices_names_the_node():
    feeds = {"x": f32(4, 3), "i": np.array([0, 4], np.int64)}
    model = model_from_arrays([helper.make_node("Gather", ["x", "i"], ["y"], name="emb")], feeds,
                              ["y"])
    compiled = compile_native(model)
    _expect(compiled, feeds, kiln.InputError, "'emb'", "Gather", "index 4 is out of range")
    _expect(compiled, {"x": feeds["x"], "i": np.array([-5], np.int64)}, kiln.InputError, "index -5")
    good = compiled.run({"x": feeds["x"], "i": np.array([3, -1], np.int64)})["y"]
    np.testing.assert_array_equal(good, feeds["x"][[3, -1]])


def test_reshape_to_wrong_element_count_names_the_node():
    feeds = {"x": f32(2, 3), "s": np.array([4, 2], np.int64)}
    model = model_from_arrays([helper.make_node("Reshape", ["x", "s"], ["y"], name="flat")],
                              feeds, ["y"])
    compiled = compile_native(model)
    _expect(compiled, feeds, kiln.KilnError, "'flat'", "cannot reshape [2, 3]", "[4, 2]")
    _expect(
        compiled,
        {"x": feeds["x"], "s": np.array([-1, -1], np.int64)},
        kiln.KilnError,
        "more than one -1",
    )
    _expect(
        compiled,
        {"x": feeds["x"], "s": np.array([-3, 2], np.int64)},
        kiln.KilnError,
        "invalid dim -3",
    )
    assert compiled.run({"x": feeds["x"], "s": np.array([3, -1], np.int64)})["y"].shape == (3, 2)


def test_conv_kernel_larger_than_padded_input_names_the_node():
    feeds = {"x": f32(1, 2, 3, 3)}
    model = model_from_arrays(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="big", pads=[1, 0, 1, 0])],
        feeds,
        ["y"],
        initializers={"w": f32(4, 2, 5, 5)},
    )
    compiled = compile_native(model)
    _expect(compiled, feeds, kiln.KilnError, "'big'", "larger than the padded input")


def test_conv_channel_mismatch_names_the_node():
    feeds = {"x": f32(1, 3, 6, 6), "w": f32(4, 2, 3, 3)}
    model = model_from_arrays([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], feeds, ["y"])
    _expect(compile_native(model), feeds, kiln.KilnError, "'c'", "input channels")


def test_concat_mismatched_dims_names_the_node():
    feeds = {"a": f32(2, 3), "b": f32(4, 5)}
    model = model_from_arrays(
        [helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=0)], feeds, ["y"]
    )
    compiled = compile_native(model)
    _expect(compiled, feeds, kiln.KilnError, "'cat'", "does not match input 0", "axis 1")
    ok = compiled.run({"a": feeds["a"], "b": f32(1, 3)})["y"]
    assert ok.shape == (3, 3)


def test_matmul_inner_mismatch_names_the_node():
    feeds = {"a": f32(2, 3), "b": f32(4, 5)}
    model = model_from_arrays([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")], feeds,
                              ["y"])
    _expect(compile_native(model), feeds, kiln.KilnError, "'mm'", "inner dimensions differ")


def _declared(dims: list) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_negative_declared_dim_is_refused_at_compile():
    model = _declared([1, -7])
    with pytest.raises(kiln.ModelError, match="input 'x' declares a negative dim -7"):
        compile_native(model)


def test_huge_declared_dim_is_refused_at_compile():
    model = _declared([1 << 20, 1 << 20, 1 << 10])
    with pytest.raises(kiln.ResourceError, match="input 'x' declares shape"):
        compile_native(model)


def test_huge_or_negative_runtime_shapes_name_the_node():
    feeds = {"s": np.array([1 << 40, 1 << 30], np.int64)}
    model = model_from_arrays(
        [helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill")], feeds, ["y"]
    )
    compiled = compile_native(model)
    _expect(compiled, feeds, kiln.ResourceError, "'fill'", "exceeds the limit")
    _expect(compiled, {"s": np.array([2, -1], np.int64)}, kiln.KilnError, "'fill'", "negative dim")
    assert compiled.run({"s": np.array([2, 2], np.int64)})["y"].shape == (2, 2)


def test_expand_tile_and_range_cannot_allocate_unbounded_memory():
    feeds = {"x": f32(1, 1), "s": np.array([1 << 31, 1 << 31], np.int64)}
    model = model_from_arrays([helper.make_node("Expand", ["x", "s"], ["y"], name="grow")], feeds,
                              ["y"])
    _expect(compile_native(model), feeds, kiln.ResourceError, "'grow'")
    rfeeds = {
        "a": np.array(0, np.int64),
        "b": np.array(1 << 62, np.int64),
        "c": np.array(1, np.int64),
    }
    model = model_from_arrays([helper.make_node("Range", ["a", "b", "c"], ["y"], name="r")],
                              rfeeds, ["y"])
    _expect(compile_native(model), rfeeds, kiln.ResourceError, "'r'")
    _expect(
        compile_native(model),
        {**rfeeds, "c": np.array(0, np.int64)},
        kiln.KilnError,
        "delta must not be 0",
    )


def test_limit_is_configurable():
    feeds = {"x": f32(4, 4)}
    model = model_from_arrays(
        [helper.make_node("Tile", ["x", "r"], ["y"], name="rep")],
        feeds,
        ["y"],
        initializers={"r": np.array([8, 8], np.int64)},
    )
    compiled = compile_native(model, max_tensor_bytes=1024, fold_constants=False)
    _expect(compiled, feeds, kiln.ResourceError, "'rep'", "exceeds the limit")


def test_slice_step_zero_and_bad_axes_name_the_node():
    feeds = {
        "x": f32(4, 4),
        "st": np.array([0], np.int64),
        "e": np.array([3], np.int64),
        "ax": np.array([0], np.int64),
        "step": np.array([0], np.int64),
    }
    model = model_from_arrays(
        [helper.make_node("Slice", ["x", "st", "e", "ax", "step"], ["y"], name="cut")], feeds, ["y"]
    )
    compiled = compile_native(model)
    _expect(compiled, feeds, kiln.KilnError, "'cut'", "steps must not be 0")
    _expect(
        compiled,
        {**feeds, "step": np.array([1], np.int64), "ax": np.array([5], np.int64)},
        kiln.KilnError,
        "'cut'",
        "out of range",
    )


def test_integer_division_by_zero_names_the_node():
    feeds = {"a": np.array([4, 5], np.int64), "b": np.array([2, 0], np.int64)}
    model = model_from_arrays([helper.make_node("Div", ["a", "b"], ["y"], name="div")], feeds,
                              ["y"])
    _expect(compile_native(model), feeds, kiln.KilnError, "'div'", "division by zero")


def test_bad_attribute_is_refused_at_compile():
    feeds = {"x": f32(1, 2, 5, 5)}
    model = model_from_arrays(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="neg", strides=[0, 1])],
        feeds,
        ["y"],
        initializers={"w": f32(2, 2, 3, 3)},
    )
    with pytest.raises(kiln.ModelError, match="'neg'.*strides must be >= 1"):
        compile_native(model)


def test_wrong_feed_type_is_an_input_error():
    feeds = {"x": f32(2, 2)}
    model = model_from_arrays([helper.make_node("Relu", ["x"], ["y"])], feeds, ["y"])
    compiled = compile_native(model)
    with pytest.raises(kiln.InputError, match="input 'x'"):
        compiled.run({"x": np.zeros((2, 2), np.int64)})
    with pytest.raises(kiln.InputError, match="missing input 'x'"):
        compiled.run({})
