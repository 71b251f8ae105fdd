import numpy as np
import pytest

import kiln


@pytest.fixture
def sess(two_input_model):
    return kiln.Session(two_input_model, backend="onnxruntime")


def good():
    return {"a": np.ones((2, 4), np.float32), "b": np.ones((2, 4), np.float32),
            "ids": np.zeros(2, np.int64)}


def test_good_feeds_run(sess):
    assert sess.run(["y"], good())[0].shape == (2, 4)


@pytest.mark.parametrize("mutate, pattern", [
    (lambda f: f.pop("b"), r"missing input\(s\) \['b'\]"),
    (lambda f: f.update(c=np.ones(1, np.float32)), r"unknown input\(s\) \['c'\]"),
    (lambda f: f.update(a=np.ones((2, 4), np.float64)),
     "input 'a' has dtype float64, expected float32"),
    (lambda f: f.update(a=np.ones((2, 4, 1), np.float32)), "input 'a' has rank 3"),
    (lambda f: f.update(a=np.ones((2, 5), np.float32), b=np.ones((2, 5), np.float32)),
     "input 'a' has size 5 at axis 1, expected 4"),
    (lambda f: f.update(b=np.ones((3, 4), np.float32)), "'N' = 3, but input 'a' already bound"),
    (lambda f: f.update(ids=[0, 0]), "input 'ids' must be a numpy.ndarray"),
])
def test_wrong_feeds_raise_input_error_naming_the_input(sess, mutate, pattern):
    feeds = good()
    mutate(feeds)
    with pytest.raises(kiln.InputError, match=pattern):
        sess.run(None, feeds)


def test_unknown_output_name(sess):
    with pytest.raises(kiln.InputError, match="unknown output"):
        sess.run(["nope"], good())


def test_non_contiguous_and_big_endian_feeds_are_accepted(sess):
    feeds = good()
    feeds["a"] = np.ones((4, 2), np.float32).T
    feeds["b"] = np.ones((2, 4), ">f4")
    np.testing.assert_array_equal(sess.run(["y"], feeds)[0], np.full((2, 4), 2, np.float32))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "native"])
def test_rank0_input_runs_on_every_backend(backend):
    """A sample rate fed as np.array(16000): the feed stays rank 0 all the way to the engine
    (OpenVINO refused the rank-1 copy np.ascontiguousarray made of it)."""
    from model_builders import make_scalar_input_model

    session = kiln.Session(make_scalar_input_model(), backend=backend)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(session(x=x, rate=np.array(16000))["y"], x * 16000)


def test_checked_feeds_keep_their_rank():
    from kiln.backends.base import TensorSpec
    from kiln.runtime.feeds import check_feeds

    specs = [TensorSpec("rate", np.dtype(np.int64), ())]
    checked = check_feeds(specs, {"rate": np.array(16000)})
    assert checked["rate"].shape == () and checked["rate"].flags.c_contiguous
