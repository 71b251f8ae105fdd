"""symbolic_dims: what it proves equal is equal at every width onnxruntime runs, and what it
cannot model stays unproven."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common
import pytest
from compiler_cases import rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.symbolic_dims import same_shape, symbolic_dims

C = 4


def _two_branches(a: dict, b: dict, extra_inputs: dict | None = None,
                  a_source: str = "x", b_source: str = "x") -> ir.Model:
    """Conv ``a`` and Conv ``b`` (attribute dicts plus "k") read x; outputs ya, yb."""
    nodes, inits = [], {}
    for name, spec, src in (("a", a, a_source), ("b", b, b_source)):
        attrs = {k: v for k, v in spec.items() if k != "k"}
        k = spec["k"]
        nodes.append(helper.make_node("Conv", [src, f"w{name}"], [f"y{name}"], **attrs))
        inits[f"w{name}"] = rand(C, C, k, k)
    inputs = {"x": [1, C, "H", "W"], **(extra_inputs or {})}
    model = float_model(nodes, inputs, {"ya": [1, C, None, None], "yb": [1, C, None, None]},
                        inits)
    ir.passes.common.ShapeInferencePass()(model)
    return model


def _outputs(model: ir.Model) -> tuple[ir.Value, ir.Value]:
    return model.graph.outputs[0], model.graph.outputs[1]


def _shapes_at(model: ir.Model, h: int, w: int, **other: tuple[int, ...]) -> list[tuple]:
    feeds = {"x": np.zeros((1, C, h, w), np.float32)}
    feeds.update({k: np.zeros(v, np.float32) for k, v in other.items()})
    return [o.shape for o in run_reference(model, feeds)]


# (conv a, conv b, proven the same): the ResNet downsample pair, "same" padding two ways, and
# pairs that differ by one at some widths
PAIRS = [
    ({"k": 3, "pads": [1, 1, 1, 1], "strides": [2, 2]}, {"k": 1, "strides": [2, 2]}, True),
    ({"k": 3, "pads": [1, 1, 1, 1]}, {"k": 5, "pads": [2, 2, 2, 2]}, True),
    ({"k": 3, "auto_pad": "SAME_UPPER", "strides": [2, 2]},
     {"k": 1, "pads": [0, 0, 0, 0], "strides": [2, 2]}, True),
    ({"k": 3, "pads": [1, 1, 1, 1], "strides": [2, 2]},
     {"k": 2, "strides": [2, 2]}, False),                       # W odd: (W+1)/2 vs (W-1)/2
    ({"k": 3, "pads": [1, 1, 1, 1]}, {"k": 3}, False),
    ({"k": 3, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, {"k": 1}, True),
]


@pytest.mark.parametrize(("a", "b", "proven"), PAIRS)
def test_a_proof_holds_at_every_width(a, b, proven):
    model = _two_branches(a, b)
    ya, yb = _outputs(model)
    assert same_shape(ya, yb) is proven
    if proven:
        for h, w in [(5, 5), (6, 7), (8, 9), (11, 4)]:
            sa, sb = _shapes_at(model, h, w)
            assert sa == sb, (h, w, sa, sb)
    else:  # not proven because some width tells them apart
        assert any(len(set(_shapes_at(model, h, w))) == 2 for h, w in [(5, 5), (6, 7), (8, 9)])


def test_a_conv_keeping_size_matches_its_input_through_elementwise_ops():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["silu"]),
             helper.make_node("Mul", ["silu", "scale"], ["y"])]   # per-channel broadcast
    model = float_model(nodes, {"x": [1, C, "H", "W"]}, {"y": [1, C, None, None]},
                        {"w": rand(C, C, 3, 3), "scale": rand(1, C, 1, 1)})
    ir.passes.common.ShapeInferencePass()(model)
    assert same_shape(model.graph.outputs[0], model.graph.inputs[0])


def test_two_input_symbols_are_not_assumed_equal():
    model = _two_branches({"k": 1}, {"k": 1}, {"z": [1, C, "H", "V"]}, b_source="z")
    assert not same_shape(*_outputs(model))


def test_inputs_sharing_a_dim_name_are_not_assumed_equal():
    """kiln does not make two inputs' "H" agree (and exporters write "?" for every axis), so a
    broadcast of them stays unknown, and so does a transposed residual."""
    nodes = [helper.make_node("Add", ["x", "z"], ["y"]),
             helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2])]
    model = float_model(nodes, {"x": [1, C, "?", "?"], "z": [1, C, "?", "?"]},
                        {"y": [1, C, None, None], "t": [1, C, None, None]}, {})
    ir.passes.common.ShapeInferencePass()(model)
    x, z = model.graph.inputs
    y, t = model.graph.outputs
    assert not same_shape(x, z)
    assert not same_shape(y, x) and not same_shape(y, z)
    assert not same_shape(t, x)
    assert same_shape(x, x)


def test_a_symbol_beside_a_size_is_that_size():
    nodes = [helper.make_node("Add", ["x", "z"], ["y"])]
    model = float_model(nodes, {"x": [1, C, "H", "W"], "z": [1, C, "H", 7]},
                        {"y": [1, C, None, None]}, {})
    assert symbolic_dims(model.graph.outputs[0])[3] == 7


def test_an_op_it_does_not_model_is_opaque_whatever_names_inference_gave():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[0, 1, 3, 2])]
    model = float_model(nodes, {"x": [1, C, "H", "W"]}, {"y": [1, C, None, None]}, {})
    ir.passes.common.ShapeInferencePass()(model)
    y = model.graph.outputs[0]
    assert not same_shape(y, model.graph.inputs[0])
    assert same_shape(y, y)


def test_ceil_mode_pooling_is_not_modelled():
    nodes = [helper.make_node("MaxPool", ["x"], ["ya"], kernel_shape=[2, 2], strides=[2, 2],
                              ceil_mode=1),
             helper.make_node("MaxPool", ["x"], ["yb"], kernel_shape=[2, 2], strides=[2, 2])]
    model = float_model(nodes, {"x": [1, C, "H", "W"]},
                        {"ya": [1, C, None, None], "yb": [1, C, None, None]}, {})
    ir.passes.common.ShapeInferencePass()(model)
    assert not same_shape(*_outputs(model))
    assert symbolic_dims(model.graph.outputs[0])[2][0][0] == "axis"


def test_a_network_deeper_than_the_recursion_limit_is_walked():
    depth = 3000
    nodes = [helper.make_node("Relu", [f"v{i}"], [f"v{i + 1}"]) for i in range(depth)]
    model = float_model(nodes, {"v0": [1, C, "H", "W"]}, {f"v{depth}": [1, C, None, None]}, {})
    assert same_shape(model.graph.outputs[0], model.graph.inputs[0])
