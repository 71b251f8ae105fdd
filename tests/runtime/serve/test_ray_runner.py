"""kiln serve on Ray Serve: a real local Ray (num_cpus=2, started once per test session),
the same repository on 2 replicas, backpressure from max_queued_requests."""

from __future__ import annotations

import socket

import httpx
import numpy as np
import pytest

import kiln
from kiln.errors import KilnError
from kiln.runtime.serve.config import ServeConfig
from kiln.runtime.serve.protocol import HEADER_LENGTH, decode_response, encode_request

ray = pytest.importorskip("ray")
from kiln.runtime.serve import ray_runner  # noqa: E402


@pytest.fixture(scope="session")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_autoscale_text_is_checked():
    assert ray_runner.parse_autoscale("1,3") == (1, 3)
    for bad in ("3,1", "0,2", "two"):
        with pytest.raises(KilnError, match="--autoscale"):
            ray_runner.parse_autoscale(bad)


def test_two_replicas_serve_what_session_gives(local_ray, serve_repo):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    expected = kiln.Session(str(serve_repo / "linear" / "2" / "model.onnx"))(x=x)["y"]
    ray_runner.start(ServeConfig(repository=str(serve_repo)), port=port, replicas=2,
                     num_cpus=0.5)
    try:
        assert ray_runner.replica_count() == 2
        body, headers = encode_request({"x": x})
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/v2/health/ready").status_code == 200
            assert client.get("/v2/models/linear").json()["versions"] == ["1", "2"]
            for _ in range(6):
                reply = client.post("/v2/models/linear/infer", content=body, headers=headers)
                assert reply.status_code == 200
                got = decode_response(reply.content, reply.headers.get(HEADER_LENGTH))["y"]
                np.testing.assert_array_equal(got, expected)
            bad = client.post("/v2/models/linear/infer",
                              json={"inputs": [{"name": "x", "datatype": "FP32",
                                                "shape": [1, 2], "data": [1, 2]}]})
            assert bad.status_code == 400 and "input 'x'" in bad.json()["error"]
            assert client.post("/v2/models/nope/infer", content=b"{}").status_code == 404
    finally:
        ray_runner.stop()
