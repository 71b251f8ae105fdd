"""kiln::FusedConv with its activations handed over in NHWC (kiln_layout_in / _out /
_residual, ops/conv.cpp and kernels/conv.cpp): every layout combination, on shapes that take
each conv algorithm, on every ISA path, against onnxruntime's NCHW Conv."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from model_builders import model_from_arrays, run_reference
from native_cases import compile_native
from onnx import helper

from kiln.backends.native import _native as native

rng = np.random.default_rng(15)

TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)

# name: (x NCHW shape, K, kernel, stride, pad, group); the comment names the algorithm the
# NHWC choice (choose_conv_algo) takes for it
SHAPES = {
    "1x1": ((1, 24, 7, 9), 20, 1, 1, 0, 1),              # implicit, rows = pixels
    "1x1-wide": ((2, 16, 9, 9), 80, 1, 1, 0, 1),         # implicit, A packed (> 2 panels)
    "1x1-wide-g2": ((1, 32, 7, 9), 160, 1, 1, 0, 2),     # the same per group
    "1x1-s2": ((2, 16, 9, 9), 24, 1, 2, 0, 1),           # implicit through stride phases
    "3x3-p1": ((1, 16, 10, 11), 36, 3, 1, 1, 1),         # implicit, padding columns in rows
    "3x3-s2": ((1, 20, 13, 12), 18, 3, 2, 1, 1),         # implicit, phases + padding
    "3x3-14": ((1, 8, 14, 14), 40, 3, 1, 1, 1),          # implicit, rows a tile grid (RowGrid)
    "3x3-7": ((2, 16, 7, 7), 40, 3, 1, 1, 1),            # the same, tiles shorter than mr
    "3x3-s2-28": ((1, 8, 28, 28), 24, 3, 2, 1, 1),       # the same through stride phases
    "5x5-p2": ((1, 8, 9, 9), 16, 5, 1, 2, 1),            # implicit
    "3x3-g2": ((1, 12, 8, 8), 10, 3, 1, 1, 2),           # implicit, two groups
    "stem-7x7": ((1, 3, 30, 30), 16, 7, 2, 3, 1),        # direct, transposed at the edges
    "3x3-wino": ((1, 64, 24, 24), 64, 3, 1, 1, 1),       # Winograd, transposed at the edges
    # depthwise: NHWC in or out runs the channels-in-lanes kernel (the other operands
    # transposed at their edges); NCHW in and out the plane kernels
    "depthwise": ((1, 8, 9, 9), 8, 3, 1, 1, 8),          # channels fewer than a vector
    "dw-3x3-s2": ((1, 24, 13, 12), 24, 3, 2, 1, 24),     # a whole vector and a partial one
    "dw-5x5": ((2, 32, 11, 9), 32, 5, 1, 2, 32),         # two images, rows of edge pixels
    "dw-5x5-s2": ((1, 16, 14, 14), 16, 5, 2, 2, 16),
    "dw-3x3-p0": ((1, 16, 9, 10), 16, 3, 1, 0, 16),      # no padding: every pixel inner
    "dw-7x7-narrow": ((1, 16, 6, 5), 16, 7, 1, 3, 16),   # no inner column at all
    "dw-7x7": ((1, 24, 15, 17), 24, 7, 1, 3, 24),        # 7x7 taps unrolled, inner columns
    "dw-7x7-s2": ((1, 16, 17, 15), 16, 7, 2, 3, 16),
    "dw-9x9": ((1, 16, 12, 12), 16, 9, 1, 4, 16),        # over 64 taps: the generic kernel
}

LAYOUTS = [dict(zip(("in", "out", "residual"), flags))
           for flags in itertools.product([False, True], repeat=3)]


def _layout_id(layout: dict[str, bool]) -> str:
    return "-".join(f"{k}:{'NHWC' if v else 'NCHW'}" for k, v in layout.items())


def _conv_attrs(kernel: int, stride: int, pad: int, group: int) -> dict:
    return dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
                group=group)


def _out_shape(xs, k, kernel, stride, pad):
    oh = (xs[2] + 2 * pad - kernel) // stride + 1
    ow = (xs[3] + 2 * pad - kernel) // stride + 1
    return (xs[0], k, oh, ow)


def _reference(x, w, b, r, attrs, act):
    """y = act(Conv(x, w, b) + r) by onnxruntime, all NCHW (act: "", Relu or Sigmoid)."""
    feeds = {"x": x} | ({"r": r} if r is not None else {})
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    last = "c"
    if r is not None:
        nodes.append(helper.make_node("Add", [last, "r"], ["s"]))
        last = "s"
    nodes.append(helper.make_node(act or "Identity", [last], ["y"]))
    model = model_from_arrays(nodes, feeds, ["y"], initializers={"w": w, "b": b}, opset=17)
    return run_reference(model, feeds)[0]


def _fused(xs, ys, w, b, attrs, act, layout, residual, threads):
    attributes = dict(attrs, activation=act)
    for key in ("in", "out", "residual"):
        if layout[key]:
            attributes[f"kiln_layout_{key}"] = "NHWC"
    x_shape = tuple(xs[i] for i in TO_NHWC) if layout["in"] else xs
    r_shape = tuple(ys[i] for i in TO_NHWC) if layout["residual"] else ys
    feeds = {"x": np.zeros(x_shape, np.float32)}
    if residual:
        feeds["r"] = np.zeros(r_shape, np.float32)
    fused = helper.make_node("FusedConv", ["x", "w", "b"] + (["r"] if residual else []), ["y"],
                             domain="kiln", **attributes)
    model = model_from_arrays([fused], feeds, ["y"], initializers={"w": w, "b": b},
                              extra_opsets={"kiln": 1}, opset=20)
    return compile_native(model, threads=threads)


@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fused_conv_layouts_match_nchw(isa, shape, layout):
    xs, k, kernel, stride, pad, group = SHAPES[shape]
    ys = _out_shape(xs, k, kernel, stride, pad)
    attrs = _conv_attrs(kernel, stride, pad, group)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal((k, xs[1] // group, kernel, kernel)) * 0.2).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    for residual, act, threads in ((False, "Relu", 1), (False, "Sigmoid", 2), (True, "", 2),
                                   (True, "Relu", 1), (True, "Sigmoid", 2)):
        if layout["residual"] and not residual:
            continue
        r = rng.standard_normal(ys).astype(np.float32) if residual else None
        want = _reference(x, w, b, r, attrs, act)
        compiled = _fused(xs, ys, w, b, attrs, act, layout, residual, threads)
        feeds = {"x": x.transpose(TO_NHWC).copy() if layout["in"] else x}
        if residual:
            feeds["r"] = r.transpose(TO_NHWC).copy() if layout["residual"] else r
        got = compiled.run(feeds)["y"]
        if layout["out"]:
            assert got.shape == tuple(ys[i] for i in TO_NHWC)
            got = got.transpose(TO_NCHW)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4,
                                   err_msg=f"residual={residual} act={act!r}")


def test_nhwc_keeps_or_leaves_winograd():
    """With the NHWC Winograd choice off, the Winograd shape runs the implicit GEMM on its NHWC
    operands and still matches."""
    xs, k, kernel, stride, pad, group = SHAPES["3x3-wino"]
    ys = _out_shape(xs, k, kernel, stride, pad)
    attrs = _conv_attrs(kernel, stride, pad, group)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal((k, xs[1], kernel, kernel)) * 0.1).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    layout = {"in": True, "out": True, "residual": False}
    want = _reference(x, w, b, None, attrs, "Relu")
    native.kernels.set_winograd_nhwc(False)
    try:
        compiled = _fused(xs, ys, w, b, attrs, "Relu", layout, False, 2)
        got = compiled.run({"x": x.transpose(TO_NHWC).copy()})["y"].transpose(TO_NCHW)
    finally:
        native.kernels.set_winograd_nhwc(True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4)


def test_nhwc_layout_needs_a_2d_conv():
    from kiln import KilnError

    x = np.zeros((1, 4, 10), np.float32)
    w = np.zeros((4, 4, 3), np.float32)
    fused = helper.make_node("FusedConv", ["x", "w"], ["y"], domain="kiln",
                             kiln_layout_in="NHWC", pads=[1, 1])
    model = model_from_arrays([fused], {"x": x}, ["y"], initializers={"w": w},
                              extra_opsets={"kiln": 1}, opset=20)
    with pytest.raises(KilnError, match="NHWC layout"):
        compile_native(model).run({"x": x})


def test_bad_layout_value_is_named():
    from kiln import KilnError

    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((4, 4, 1, 1), np.float32)
    fused = helper.make_node("FusedConv", ["x", "w"], ["y"], domain="kiln",
                             kiln_layout_out="NCWH")
    model = model_from_arrays([fused], {"x": x}, ["y"], initializers={"w": w},
                              extra_opsets={"kiln": 1}, opset=20)
    with pytest.raises(KilnError, match="kiln_layout_out must be NCHW or NHWC"):
        compile_native(model).run({"x": x})
