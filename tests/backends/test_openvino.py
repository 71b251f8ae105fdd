import numpy as np
import pytest

import kiln


def test_fp32_sets_the_f32_precision_hint(conv_model):
    sess = kiln.Session(conv_model, backend="openvino", precision="fp32")
    compiled = sess._compiled.compiled
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")


def test_matches_onnxruntime(conv_model):
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = kiln.Session(conv_model, backend="onnxruntime")(x=x)["y"]
    got = kiln.Session(conv_model, backend="openvino", threads=1)(x=x)["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_bf16_runs_only_when_asked(conv_model):
    sess = kiln.Session(conv_model, backend="openvino", precision="bf16")
    hint = str(sess._compiled.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert "bf16" in hint or "bfloat16" in hint


def test_unknown_precision_is_refused(conv_model):
    with pytest.raises(kiln.KilnError, match="precision"):
        kiln.Session(conv_model, backend="openvino", precision="fp8")
