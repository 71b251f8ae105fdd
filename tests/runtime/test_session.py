import numpy as np
import pytest

import kiln


def test_specs_show_symbolic_dims(two_input_model):
    sess = kiln.Session(two_input_model, backend="onnxruntime")
    assert [(i.name, i.shape) for i in sess.inputs] == [("a", ("N", 4)), ("b", ("N", 4)),
                                                        ("ids", (2,))]
    assert sess.outputs[0].dtype == np.float32


def test_auto_records_why(conv_model):
    sess = kiln.Session(conv_model)
    assert sess.backend in ("openvino", "onnxruntime")
    assert "auto" in sess.backend_reason


def test_run_returns_requested_outputs_in_order(two_input_model):
    sess = kiln.Session(two_input_model, backend="onnxruntime")
    feeds = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32),
             "ids": np.zeros(2, np.int64)}
    shape, y = sess.run(["ids_shape", "y"], feeds)
    assert shape.tolist() == [2] and y.shape == (1, 4)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"precision": "fp64"}, "precision"), ({"threads": 0}, "threads"),
    ({"backend": "nope"}, "unknown backend"),
])
def test_bad_options_are_kiln_errors(conv_model, kwargs, pattern):
    with pytest.raises(kiln.KilnError, match=pattern):
        kiln.Session(conv_model, **kwargs)


def test_tensorrt_without_gpu_is_backend_unavailable(conv_model):
    from kiln.compiler.target import detect_cuda_sm

    if detect_cuda_sm() is not None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(kiln.BackendUnavailableError, match="tensorrt"):
        kiln.Session(conv_model, backend="tensorrt")
