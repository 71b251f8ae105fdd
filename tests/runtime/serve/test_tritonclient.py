"""A v2 client kiln did not write (tritonclient, binary tensors) against kiln serve."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _client(url: str):
    return httpclient.InferenceServerClient(url.removeprefix("http://"))


def test_ready_metadata_infer_match_session(serve_repo, start_server):
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    expected = kiln.Session(str(serve_repo / "linear" / "2" / "model.onnx"))(x=x)["y"]
    with start_server(serve_repo) as url:
        client = _client(url)
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("linear") and client.is_model_ready("linear", "1")
        meta = client.get_model_metadata("linear")
        assert meta["versions"] == ["1", "2"]
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
        for binary in (True, False):
            feed = httpclient.InferInput("x", list(x.shape), "FP32")
            feed.set_data_from_numpy(x, binary_data=binary)
            wanted = httpclient.InferRequestedOutput("y", binary_data=binary)
            result = client.infer("linear", [feed], outputs=[wanted])
            np.testing.assert_array_equal(result.as_numpy("y"), expected)
        # no outputs named: every output comes back binary
        feed = httpclient.InferInput("x", list(x.shape), "FP32")
        feed.set_data_from_numpy(x)
        v1 = client.infer("linear", [feed], model_version="1").as_numpy("y")
        np.testing.assert_allclose(v1 * 2 - 1, expected - 0, rtol=1e-5, atol=1e-5)


def test_wrong_shape_is_a_400_naming_the_input(serve_repo, start_server):
    with start_server(serve_repo) as url:
        client = _client(url)
        feed = httpclient.InferInput("x", [2, 5], "FP32")
        feed.set_data_from_numpy(np.zeros((2, 5), np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("linear", [feed])
        assert info.value.status() == "400"
        assert "input 'x' has size 5 at axis 1, expected 4" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("nope")
        assert info.value.status() == "404"
