"""Residual Adds on symbolic shapes (compiler/passes/symbolic_dims.py): a shortcut whose width
is proven equal to the conv output's runs inside the native FusedConv; one that may broadcast
stays a separate Add. Both checked against onnxruntime at several widths, odd ones included."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.backends.native.backend import NativeBackend
from kiln.compiler.pipeline import optimize
from kiln.compiler.reference import reference_session

C = 8


def _block(shortcut: str, hw: tuple[str, str] = ("H", "W")) -> onnx.ModelProto:
    """Two residual blocks on x[1, C, H, W]: a stride-2 block whose shortcut is a 1x1 stride-2
    conv (the downsample pair), then a stride-1 block adding ``shortcut``: its own input
    ("same"), or an input r[1, C, 1, V] that broadcasts when V is 1 ("broadcast"). ``hw``
    names x's spatial dims."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.2).astype(np.float32), f"w{len(inits)}")

    inits: list[onnx.TensorProto] = []
    nodes = []

    def conv(src, out, k, stride, pad):
        inits.append(w(C, C, k, k))
        nodes.append(helper.make_node("Conv", [src, inits[-1].name], [out], strides=[stride] * 2,
                                      pads=[pad] * 4))

    conv("x", "a", 3, 2, 1)
    nodes.append(helper.make_node("Relu", ["a"], ["a_r"]))
    conv("a_r", "b", 3, 1, 1)
    conv("x", "down", 1, 2, 0)
    nodes.append(helper.make_node("Add", ["b", "down"], ["s1"]))
    nodes.append(helper.make_node("Relu", ["s1"], ["s1_r"]))
    conv("s1_r", "c", 3, 1, 1)
    nodes.append(helper.make_node("Sigmoid", ["c"], ["c_s"]))
    nodes.append(helper.make_node("Mul", ["c", "c_s"], ["c_silu"]))
    conv("c_silu", "d", 3, 1, 1)
    nodes.append(helper.make_node("Add", ["s1_r" if shortcut == "same" else "r", "d"], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, *hw])]
    if shortcut == "broadcast":
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, C, 1, "V"]))
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, None, None])]
    model = helper.make_model(helper.make_graph(nodes, "res", inputs, out, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _native_ops(model: onnx.ModelProto) -> list[str]:
    from kiln.compiler.frontend import import_model

    graph, _ = optimize(import_model(model.SerializeToString()), caps=NativeBackend().caps(),
                        shapes_inferred=True)
    return [n.op_type for n in graph.graph]


def _compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    got = kiln.Session(model.SerializeToString(), backend="native", fallback=None).run(None,
                                                                                       feeds)
    want = reference_session(ir.from_proto(model)).run(None, feeds)
    assert got[0].shape == want[0].shape
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hw", [("H", "W"), ("?", "?")])  # "?" on both: as Paddle exports
@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 11), (5, 1)])
def test_proven_residuals_run_inside_fused_conv(h, w, hw):
    model = _block("same", hw)
    assert "Add" not in _native_ops(model)
    _compare(model, {"x": np.random.default_rng(h * w).standard_normal((1, C, h, w),
                                                                       dtype=np.float32)})


@pytest.mark.parametrize("v", [1, 4, 6])
def test_a_residual_that_may_broadcast_stays_an_add(v):
    model = _block("broadcast")
    assert _native_ops(model).count("Add") == 1
    rng = np.random.default_rng(v)
    x = rng.standard_normal((1, C, 7, 11), dtype=np.float32)  # conv output width 6
    r = rng.standard_normal((1, C, 1, v), dtype=np.float32)
    if v in (1, 6):
        _compare(model, {"x": x, "r": r})
    else:  # the ONNX Add itself cannot broadcast 4 against 6
        with pytest.raises(kiln.KilnError):
            kiln.Session(model.SerializeToString(), backend="native", fallback=None).run(
                None, {"x": x, "r": r})
