"""Calibration observers and calibration data loading."""

from __future__ import annotations

import numpy as np
import pytest
from model_builders import float_model
from onnx import helper

from kiln.compiler import calibrate
from kiln.errors import InputError


def _relu_model():
    nodes = [helper.make_node("Mul", ["x", "k"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    return float_model(nodes, {"x": [1, 1000]}, {"z": [1, 1000]}, {"k": np.float32(2.0)})


def _samples(n=4, outlier=None, seed=0):
    rng = np.random.default_rng(seed)
    out = [{"x": rng.standard_normal((1, 1000)).astype(np.float32)} for _ in range(n)]
    if outlier is not None:
        out[0]["x"][0, 0] = outlier
    return out


def test_minmax_is_exact():
    model, samples = _relu_model(), _samples()
    ranges = calibrate.collect_ranges(model, samples, method="minmax")
    xs = np.concatenate([s["x"] for s in samples])
    assert ranges["x"].lo == pytest.approx(xs.min())
    assert ranges["x"].hi == pytest.approx(xs.max())
    assert ranges["y"].hi == pytest.approx(2 * xs.max())
    assert ranges["z"].lo == 0.0  # ReLU output: zero stays exact


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_clipping_methods_ignore_an_outlier(method):
    model, samples = _relu_model(), _samples(outlier=1000.0)
    full = calibrate.collect_ranges(model, samples, method="minmax")
    clipped = calibrate.collect_ranges(model, samples, method=method, percentile=99.9)
    assert full["x"].hi == pytest.approx(1000.0)
    # the bulk of N(0, 1) lies within a few units; the clipped range must not chase 1000
    assert 1.0 < clipped["x"].hi < 100.0
    assert clipped["x"].lo <= 0.0 <= clipped["x"].hi


def test_mse_clips_a_heavy_tail():
    rng = np.random.default_rng(0)
    samples = [{"x": rng.laplace(size=(1, 1000)).astype(np.float32)} for _ in range(20)]
    model = _relu_model()
    full = calibrate.collect_ranges(model, samples, method="minmax")
    mse = calibrate.collect_ranges(model, samples, method="mse")
    assert 0.0 < mse["x"].hi < full["x"].hi
    assert full["x"].lo <= mse["x"].lo < 0.0  # one symmetric threshold: |lo| may fit inside


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
@pytest.mark.parametrize("base", [1.0, 1e4, 0.0])
def test_a_range_narrower_than_float32_bins_is_no_error(method, base):
    """Values a few ulps apart (a saturated or nearly constant activation) leave no room for
    2048 histogram bins: such a range is taken from min/max instead of failing in numpy."""
    step = np.spacing(np.float32(base)) if base else np.float32(1e-44)
    samples = [{"x": np.full((1, 1000), base, np.float32) + np.float32(step) * (i % 3)}
               for i in range(3)]
    ranges = calibrate.collect_ranges(_relu_model(), samples, method=method)
    assert np.isfinite(ranges["x"].hi) and np.isfinite(ranges["z"].hi)
    if method == "percentile":  # the histogram of x itself was the narrow one
        xs = np.concatenate([s["x"] for s in samples])
        assert ranges["x"].lo <= xs.min() and ranges["x"].hi >= xs.max()


def test_unknown_method_and_bad_percentile():
    with pytest.raises(InputError, match="unknown calibration method"):
        calibrate.collect_ranges(_relu_model(), _samples(), method="kl2")
    with pytest.raises(InputError, match="percentile"):
        calibrate.collect_ranges(_relu_model(), _samples(), percentile=0)
    with pytest.raises(InputError, match="at least one sample"):
        calibrate.collect_ranges(_relu_model(), [])


def test_random_calibration_warns_loudly():
    with pytest.warns(calibrate.RandomCalibrationWarning, match="smoke tests"):
        samples = calibrate.parse_calibration("random:3", _relu_model())
    assert len(samples) == 3 and samples[0]["x"].shape == (1, 1000)
    with pytest.raises(InputError, match="random:N"):
        calibrate.parse_calibration("random:zero", _relu_model())


def test_folder_of_npz_and_npy(tmp_path):
    model = _relu_model()
    x = np.ones((1, 1000), np.float32)
    np.savez(tmp_path / "a.npz", x=x)
    np.save(tmp_path / "b.npy", 2 * x)
    samples = calibrate.load_samples(tmp_path, model)
    assert [float(s["x"].max()) for s in samples] == [1.0, 2.0]


def test_folder_errors_name_the_problem(tmp_path):
    model = _relu_model()
    with pytest.raises(InputError, match="not a folder"):
        calibrate.load_samples(tmp_path / "missing", model)
    with pytest.raises(InputError, match="no .npz or .npy"):
        calibrate.load_samples(tmp_path, model)
    np.savez(tmp_path / "bad.npz", y=np.ones((1, 1000), np.float32))
    with pytest.raises(InputError, match="bad.npz: missing input"):
        calibrate.load_samples(tmp_path, model)
    (tmp_path / "bad.npz").unlink()
    np.savez(tmp_path / "shape.npz", x=np.ones((1, 999), np.float32))
    with pytest.raises(InputError, match="shape.npz: input 'x' has shape"):
        calibrate.load_samples(tmp_path, model)


def test_npz_pickles_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        calibrate.load_samples(tmp_path, _relu_model())
