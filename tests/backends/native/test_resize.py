"""Resize on the native engine (backends/native/src/ops/resize.cpp) against onnxruntime:
mode="cubic" over every coordinate transformation, cubic_coeff_a, exclude_outside, scales or
sizes, up and down, on one and two threads; antialias, tf_crop_and_resize (roi,
extrapolation_value), half_pixel_symmetric, axes and keep_aspect_ratio_policy for every mode
that has them; N-D and outer-axis cubic resizes (which onnxruntime's cubic refuses) against
onnx.reference; bad input fails naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import model_from_arrays, run_reference
from native_cases import compile_native
from onnx import helper
from onnx.reference import ReferenceEvaluator

import kiln
from kiln.backends.native.backend import NativeBackend

rng = np.random.default_rng(2016)
X = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)


def _resize_model(x: np.ndarray, *, scales=None, sizes=None, roi=None, opset: int = 19,
                  sizes_input: bool = False, mode: str = "cubic",
                  **attrs: object) -> tuple[onnx.ModelProto, dict]:
    inits: dict[str, np.ndarray] = {}
    feeds = {"x": x}
    names = ["x", "", "", ""]
    if roi is not None:
        inits["roi"] = np.asarray(roi, np.float32)
        names[1] = "roi"
    if scales is not None:
        inits["scales"] = np.asarray(scales, np.float32)
        names[2] = "scales"
    if sizes is not None:
        (feeds if sizes_input else inits)["sizes"] = np.asarray(sizes, np.int64)
        names[3] = "sizes"
    if opset < 13:  # roi and scales are required inputs there: empty when unused
        for i, name in ((1, "roi"), (2, "scales")):
            if names[i] == "":
                inits[name] = np.zeros(0, np.float32)
                names[i] = name
    while names[-1] == "":
        names.pop()
    node = helper.make_node("Resize", names, ["y"], name="rs", mode=mode, **attrs)
    return model_from_arrays([node], feeds, ["y"], opset=opset, initializers=inits), feeds


def _check(model: onnx.ModelProto, feeds: dict, threads: int = 1, atol: float = 1e-5,
           reference: str = "onnxruntime") -> None:
    got = compile_native(model, threads=threads).run(feeds)["y"]
    if reference == "onnxruntime":
        want = run_reference(model, feeds)[0]
    else:
        want = ReferenceEvaluator(model).run(None, feeds)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)


# Sizes (up, down, odd, one axis kept) and scales whose products are not whole numbers.
SIZES = [[2, 3, 13, 17], [2, 3, 4, 5], [2, 3, 7, 4], [2, 3, 1, 3]]
SCALES = [[1, 1, 1.7, 2.3], [1, 1, 0.6, 0.45]]
COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
          "asymmetric", "tf_half_pixel_for_nn"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("exclude", [0, 1])
@pytest.mark.parametrize("a", [-0.75, -0.5])
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_cubic_sizes_match_onnxruntime(sizes, coord, a, exclude, threads):
    model, feeds = _resize_model(X, sizes=sizes, coordinate_transformation_mode=coord,
                                 cubic_coeff_a=a, exclude_outside=exclude)
    _check(model, feeds, threads)


@pytest.mark.parametrize("exclude", [0, 1])
@pytest.mark.parametrize("coord", ["half_pixel", "half_pixel_symmetric", "asymmetric",
                                   "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("scales", SCALES, ids=lambda s: "x".join(map(str, s)))
def test_cubic_scales_match_onnxruntime(scales, coord, exclude):
    model, feeds = _resize_model(X, scales=scales, coordinate_transformation_mode=coord,
                                 exclude_outside=exclude)
    _check(model, feeds)


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_cubic_opsets(opset):
    model, feeds = _resize_model(X, sizes=[2, 3, 10, 6], opset=opset)
    _check(model, feeds)


def test_cubic_sizes_fed_at_run_time_and_two_dims():
    model, feeds = _resize_model(X, sizes=[2, 3, 12, 5], sizes_input=True)
    compiled = compile_native(model, threads=2)
    for sizes in ([2, 3, 12, 5], [2, 3, 3, 20], [2, 3, 7, 9]):
        feeds["sizes"] = np.array(sizes, np.int64)
        np.testing.assert_allclose(compiled.run(feeds)["y"], run_reference(model, feeds)[0],
                                   rtol=1e-5, atol=1e-5)
    plane = X[0, 0]
    model, feeds = _resize_model(plane, scales=[2.5, 0.5])
    _check(model, feeds)


MODES = ["nearest", "linear", "cubic"]


@pytest.mark.parametrize("extrapolation", [0.0, 10.0])
@pytest.mark.parametrize("roi", [[0, 0, 0.4, 0.6, 1, 1, 1.2, 0.9],
                                 [0, 0, -0.3, 0.1, 1, 1, 0.8, 1.5]], ids=["inside", "beyond"])
@pytest.mark.parametrize("form", ["sizes", "sizes-h-kept", "scales"])
@pytest.mark.parametrize("mode", MODES)
def test_tf_crop_and_resize(mode, form, roi, extrapolation):
    size = {"sizes": [2, 3, 6, 11], "sizes-h-kept": [2, 3, 7, 11],
            "scales": [1, 1, 2.0, 1.5]}[form]
    size = {form.split("-")[0]: size}
    model, feeds = _resize_model(X, roi=roi, coordinate_transformation_mode="tf_crop_and_resize",
                                 extrapolation_value=extrapolation, mode=mode, **size)
    _check(model, feeds)


@pytest.mark.parametrize("size", [{"scales": [1, 1, 1.7, 0.6]}, {"scales": [1, 1, 0.45, 2.3]},
                                  {"sizes": [2, 3, 5, 13]}], ids=["s1", "s2", "sizes"])
@pytest.mark.parametrize("mode", MODES)
def test_half_pixel_symmetric(mode, size):
    model, feeds = _resize_model(X, coordinate_transformation_mode="half_pixel_symmetric",
                                 mode=mode, **size)
    _check(model, feeds)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("exclude", [0, 1])
@pytest.mark.parametrize("form", [{"sizes": [2, 3, 3, 4]}, {"scales": [1, 1, 0.6, 0.3]},
                                  {"sizes": [2, 3, 14, 4]}], ids=["down", "scales", "up-down"])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_antialias(mode, form, exclude, threads):
    x = rng.standard_normal((2, 3, 17, 23)).astype(np.float32)
    model, feeds = _resize_model(x, antialias=1, exclude_outside=exclude, mode=mode, **form)
    _check(model, feeds, threads)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [[2, 3], [3, 2], [-1, 2]], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_axes_and_aspect_ratio_policy(mode, axes, policy):
    model, feeds = _resize_model(X, sizes=[5, 12], axes=axes, mode=mode,
                                 keep_aspect_ratio_policy=policy, opset=18)
    if min(axes) < 0:  # onnxruntime 1.32 applies a policy to negative axes wrongly
        same, _ = _resize_model(X, sizes=[5, 12], axes=[a % 4 for a in axes], mode=mode,
                                keep_aspect_ratio_policy=policy, opset=18)
        np.testing.assert_allclose(compile_native(model).run(feeds)["y"],
                                   run_reference(same, feeds)[0], rtol=1e-5, atol=1e-5)
    else:
        _check(model, feeds)
    model, feeds = _resize_model(X, scales=[0.6, 1.9], axes=axes, mode=mode, opset=18)
    _check(model, feeds)


@pytest.mark.parametrize("shape,sizes", [((3, 7, 5), (6, 4, 9)), ((2, 4, 5, 6), (3, 4, 2, 6)),
                                         ((1, 2, 4, 3, 5), (1, 2, 7, 6, 3))])
def test_cubic_any_axis_matches_onnx_reference(shape, sizes):
    x = rng.standard_normal(shape).astype(np.float32)
    model, feeds = _resize_model(x, sizes=list(sizes))
    _check(model, feeds, threads=2, reference="onnx")


def test_cubic_identity_resize_copies():
    model, feeds = _resize_model(X, sizes=list(X.shape))
    np.testing.assert_array_equal(compile_native(model).run(feeds)["y"], X)


def test_native_claims_every_form_and_refuses_nearest_antialias_by_name():
    backend = NativeBackend()
    for attrs in ({}, {"antialias": 1, "exclude_outside": 1}, {"axes": [3, 2]},
                  {"coordinate_transformation_mode": "tf_crop_and_resize"}):
        for mode in ("linear", "cubic"):
            model, _ = _resize_model(X, scales=[2, 2] if "axes" in attrs else [1, 1, 2, 2],
                                     mode=mode, **attrs)
            assert backend.supports(ir_node(model)), (mode, attrs)
    nearest, _ = _resize_model(X, scales=[1, 1, 0.5, 0.5], antialias=1, mode="nearest")
    assert "antialias=1 with mode='nearest'" in backend.refusal(ir_node(nearest))


def ir_node(model: onnx.ModelProto):
    import onnx_ir as ir

    return next(iter(ir.from_proto(model).graph))


@pytest.mark.parametrize("roi,fragment", [([0, 1], "roi must have 2 values per resized dim")])
def test_bad_roi_names_the_node(roi, fragment):
    model, feeds = _resize_model(X, roi=roi, sizes=[2, 3, 4, 4],
                                 coordinate_transformation_mode="tf_crop_and_resize")
    with pytest.raises(kiln.KilnError) as info:
        compile_native(model).run(feeds)
    assert "'rs'" in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("sizes,fragment", [([2, 3, 4], "one value per resized dim"),
                                            ([2, 3, -1, 4], "sizes must be >= 0")])
def test_bad_sizes_name_the_node(sizes, fragment):
    model, feeds = _resize_model(X, sizes=[2, 3, 4, 4], sizes_input=True)
    compiled = compile_native(model)
    feeds["sizes"] = np.array(sizes, np.int64)
    with pytest.raises(kiln.KilnError) as info:
        compiled.run(feeds)
    assert "'rs'" in str(info.value) and fragment in str(info.value)
    feeds["sizes"] = np.array([2, 3, 4, 4], np.int64)
    assert compiled.run(feeds)["y"].shape == (2, 3, 4, 4)


@pytest.mark.parametrize("roi_type", [np.float16, np.float64])
def test_roi_of_every_float_type(roi_type):
    """onnxruntime 1.32 fails on a roi that is not float32: the same values as float32 are
    the reference."""
    model, feeds = _resize_model(X, roi=[0, 0, 0.25, 0.5, 1, 1, 0.75, 1.25], sizes=[2, 3, 6, 8],
                                 coordinate_transformation_mode="tf_crop_and_resize")
    want = run_reference(model, feeds)[0]
    roi = model.graph.initializer[0]
    roi.CopyFrom(onnx.numpy_helper.from_array(
        onnx.numpy_helper.to_array(roi).astype(roi_type), "roi"))
    got = compile_native(model).run(feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axes,fragment", [([2, 4], "out of range"), ([2, -2], "repeats")])
def test_bad_axes_name_the_node(axes, fragment):
    model, feeds = _resize_model(X, scales=[2, 2], axes=axes, opset=18)
    with pytest.raises(kiln.KilnError) as info:
        compile_native(model).run(feeds)
    assert "'rs'" in str(info.value) and fragment in str(info.value)


def test_nan_roi_gives_the_extrapolation_value():
    model, feeds = _resize_model(X, roi=[0, 0, np.nan, 0, 1, 1, 1, 1], sizes=[2, 3, 4, 4],
                                 coordinate_transformation_mode="tf_crop_and_resize",
                                 extrapolation_value=-3.0)
    y = compile_native(model).run(feeds)["y"]
    assert np.all(y == -3.0)


@pytest.mark.parametrize("attrs", [{}, {"exclude_outside": 1},
                                   {"antialias": 1, "mode": "linear"}, {"antialias": 1}],
                         ids=["cubic", "exclude", "linear-aa", "cubic-aa"])
@pytest.mark.parametrize("sizes", [[1, 16, 150, 97], [1, 16, 40, 23]], ids=["up", "down"])
def test_large_enough_to_split_across_two_threads(sizes, attrs):
    # Each pass carries well over two chunks of the pool's minimum work (2^15 units).
    x = rng.standard_normal((1, 16, 64, 80)).astype(np.float32)
    model, feeds = _resize_model(x, sizes=sizes, **attrs)
    _check(model, feeds, threads=2)


@pytest.mark.parametrize("mode,nearest_mode", [("linear", "round_prefer_floor"),
                                               ("nearest", "ceil"),
                                               ("nearest", "round_prefer_ceil")])
def test_tf_half_pixel_for_nn_keeps_unscaled_channels(mode, nearest_mode):
    # At scale 1 the half-pixel shift once blended (linear) or picked (nearest) channel c + 1.
    model, feeds = _resize_model(X, scales=[1, 1, 3, 2], mode=mode, nearest_mode=nearest_mode,
                                 coordinate_transformation_mode="tf_half_pixel_for_nn", opset=11)
    _check(model, feeds)
