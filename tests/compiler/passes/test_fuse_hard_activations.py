"""Hard-sigmoid and hard-swish written with ReLU6 arithmetic -> the ONNX ops."""

from __future__ import annotations

import numpy as np
import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.fuse_hard_activations import FuseHardActivationsPass


def _c(v: float) -> np.ndarray:
    return np.array(v, np.float32)


def _n(op: str, inputs: list[str], out: str, **attrs: object):
    return helper.make_node(op, inputs, [out], **attrs)


RELU6 = [_n("Add", ["x", "three"], "t"), _n("Clip", ["t", "zero", "six"], "r")]
CONSTS = {"three": _c(3.0), "zero": _c(0.0), "six": _c(6.0), "sixth": _c(1 / 6)}

FORMS = {
    # x * relu6(x + 3) / 6 (Paddle, Keras)
    "mul-then-div": (RELU6 + [_n("Mul", ["x", "r"], "m"), _n("Div", ["m", "six"], "y")],
                     ["HardSwish"]),
    # (relu6(x + 3) * x) * (1/6)
    "mul-then-scale": (RELU6 + [_n("Mul", ["r", "x"], "m"), _n("Mul", ["sixth", "m"], "y")],
                       ["HardSwish"]),
    # x * (relu6(x + 3) / 6)
    "div-then-mul": (RELU6 + [_n("Div", ["r", "six"], "h"), _n("Mul", ["x", "h"], "y")],
                     ["HardSwish"]),
    # x * HardSigmoid(x, 1/6, 1/2) (torch below opset 14, some Paddle exports)
    "hardsigmoid-mul": ([_n("HardSigmoid", ["x"], "h", alpha=1 / 6, beta=0.5),
                         _n("Mul", ["h", "x"], "y")], ["HardSwish"]),
    # relu6(x + 3) / 6 alone: the squeeze-excitation gate
    "hard-sigmoid": (RELU6 + [_n("Div", ["r", "six"], "y")], ["HardSigmoid"]),
    "hard-sigmoid-scale": (RELU6 + [_n("Mul", ["r", "sixth"], "y")], ["HardSigmoid"]),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_exported_forms_become_onnx_ops(form: str) -> None:
    nodes, want_ops = FORMS[form]
    model = float_model(nodes, {"x": [2, 3, 5]}, {"y": [2, 3, 5]}, CONSTS, opset=17)
    feeds = {"x": rand(2, 3, 5) * 5}
    want = run_reference(model, feeds)
    FuseHardActivationsPass()(model)
    assert ops(model) == want_ops
    assert_close(want, run_reference(model, feeds), rtol=1e-5, atol=1e-6)


def test_below_opset_14_hard_swish_is_x_times_hard_sigmoid() -> None:
    nodes, _ = FORMS["mul-then-div"]
    model = float_model(nodes, {"x": [8]}, {"y": [8]}, CONSTS, opset=13)
    feeds = {"x": rand(8) * 5}
    want = run_reference(model, feeds)
    FuseHardActivationsPass()(model)
    assert sorted(ops(model)) == ["HardSigmoid", "Mul"]
    assert_close(want, run_reference(model, feeds), rtol=1e-5, atol=1e-6)


def test_other_relu6_constants_give_a_general_hard_sigmoid() -> None:
    nodes = [_n("Add", ["x", "two"], "t"), _n("Clip", ["t", "zero", "four"], "r"),
             _n("Div", ["r", "four"], "y")]
    model = float_model(nodes, {"x": [9]}, {"y": [9]},
                       {"two": _c(2.0), "zero": _c(0.0), "four": _c(4.0)}, opset=17)
    feeds = {"x": rand(9) * 5}
    want = run_reference(model, feeds)
    FuseHardActivationsPass()(model)
    node = next(iter(model.graph))
    assert node.op_type == "HardSigmoid"
    assert node.attributes["alpha"].value == pytest.approx(0.25)
    assert node.attributes["beta"].value == pytest.approx(0.5)
    assert_close(want, run_reference(model, feeds), rtol=1e-5, atol=1e-6)


def test_wrong_scale_is_rejected_with_the_value_named() -> None:
    nodes = RELU6 + [_n("Mul", ["x", "r"], "m"), _n("Div", ["m", "five"], "y")]
    model = float_model(nodes, {"x": [4]}, {"y": [4]}, {**CONSTS, "five": _c(5.0)}, opset=17)
    step = FuseHardActivationsPass()
    step(model)
    assert "HardSwish" not in ops(model)
    assert any("scale 0.2 is not 1 / 6" in why for why in step.rejected)


def test_intermediate_used_elsewhere_is_rejected() -> None:
    nodes, _ = FORMS["mul-then-div"]
    model = float_model(nodes, {"x": [4]}, {"y": [4], "r": [4]}, CONSTS, opset=17)
    step = FuseHardActivationsPass()
    step(model)
    assert "HardSwish" not in ops(model)
    assert any("used outside the pattern" in why for why in step.rejected)


def test_a_hard_swish_below_opset_14_asks_for_the_upgrade() -> None:
    from kiln.compiler.passes.fuse_hard_activations import needs_hard_swish_opset

    for opset, want in ((12, True), (14, False)):
        model = float_model(FORMS["mul-then-div"][0], {"x": [8]}, {"y": [8]}, CONSTS,
                            opset=opset)
        assert needs_hard_swish_opset(model) is want
    for form, want in (("hardsigmoid-mul", True), ("hard-sigmoid", False)):
        model = float_model(FORMS[form][0], {"x": [8]}, {"y": [8]}, CONSTS, opset=12)
        assert needs_hard_swish_opset(model) is want
