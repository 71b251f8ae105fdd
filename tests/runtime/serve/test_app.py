"""The v2 app over real HTTP (httpx against uvicorn on 127.0.0.1): JSON tensors, errors,
backpressure, metrics, repository load/unload."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnx
from serve_models import WEIGHT, linear_model, reshape_model

from kiln.runtime.serve.loadgen import scrape
from kiln.runtime.serve.protocol import decode_response, encode_request


def _json_request(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}


def _expected(x: np.ndarray, scale: float = 2.0) -> np.ndarray:
    return x @ (WEIGHT * scale) + 1


def test_json_infer_and_versions(serve_repo, start_server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with start_server(serve_repo) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2").json()["extensions"] == ["binary_tensor_data",
                                                          "model_repository"]
        reply = client.post("/v2/models/linear/infer", json={**_json_request(x), "id": "a7"})
        assert reply.status_code == 200
        body = reply.json()
        assert body["model_version"] == "2" and body["id"] == "a7"
        [out] = body["outputs"]
        assert out["name"] == "y" and out["shape"] == [2, 3] and out["datatype"] == "FP32"
        np.testing.assert_allclose(np.reshape(out["data"], (2, 3)), _expected(x), rtol=1e-5)
        reply = client.post("/v2/models/linear/versions/1/infer", json=_json_request(x))
        np.testing.assert_allclose(np.reshape(reply.json()["outputs"][0]["data"], (2, 3)),
                                   _expected(x, 1.0), rtol=1e-5)


def test_errors_are_400_404_with_a_message(serve_repo, start_server):
    with start_server(serve_repo) as url, httpx.Client(base_url=url) as client:
        bad = [
            (b"{not json", "not valid JSON"),
            (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
             b'"data": [1, 2]}]}', "4 elements) but 2 data elements"),
            (b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], '
             b'"data": [1, 2, 3, 4]}]}', "input 'x' has dtype float64, expected float32"),
            (b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1], "data": [1]}]}',
             "unknown input(s) ['z']"),
            (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
             b'"data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}', "unknown output"),
        ]
        for body, message in bad:
            reply = client.post("/v2/models/linear/infer", content=body)
            assert reply.status_code == 400, body
            assert message in reply.json()["error"]
        # binary body shorter than its header claims
        body, headers = encode_request({"x": np.ones((1, 4), np.float32)})
        reply = client.post("/v2/models/linear/infer", content=body[:-4], headers=headers)
        assert reply.status_code == 400 and "binary bytes" in reply.json()["error"]
        assert client.post("/v2/models/nope/infer", content=b"{}").status_code == 404
        reply = client.get("/v2/models/linear/versions/9")
        assert reply.status_code == 404 and "no version '9'" in reply.json()["error"]
        assert client.get("/v2/health/ready").status_code == 200


def test_dynamic_batching_concatenates_and_splits(serve_repo, start_server):
    rng = np.random.default_rng(3)
    feeds = [rng.standard_normal((rows, 4)).astype(np.float32) for rows in (1, 2, 1, 3, 1)]
    with start_server(serve_repo, max_batch=8, max_queue_delay_ms=300) as url, \
            httpx.Client(base_url=url, timeout=30) as client:

        def infer(x: np.ndarray) -> np.ndarray:
            body, headers = encode_request({"x": x})
            reply = client.post("/v2/models/linear/infer", content=body, headers=headers)
            assert reply.status_code == 200, reply.text
            return decode_response(reply.content,
                                   reply.headers.get("Inference-Header-Content-Length"))["y"]

        with ThreadPoolExecutor(len(feeds)) as pool:
            outputs = list(pool.map(infer, feeds))
        for x, y in zip(feeds, outputs):
            np.testing.assert_allclose(y, _expected(x), rtol=1e-5, atol=1e-6)
        metrics = scrape(client, url, "linear")
        sizes = metrics["kiln_batch_size"]
        batches = sizes[float("inf")]
        assert metrics["kiln_batch_size_sum"][float("inf")] == 8  # every row ran once
        assert batches < len(feeds)  # at least two requests shared a run
        text = client.get("/metrics").text
        for name in ("kiln_requests_total", "kiln_request_duration_seconds_bucket",
                     "kiln_queue_duration_seconds_bucket", "kiln_compute_duration_seconds_bucket",
                     "kiln_pending_requests", "kiln_batch_size_bucket"):
            assert name in text
        assert 'kiln_requests_total{model="linear",status="200",version="2"} 5.0' in text


def test_fixed_batch_model_runs_requests_on_instances(serve_repo, start_server):
    x = np.ones((1, 4), np.float32)
    with start_server(serve_repo, instances=2) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        meta = client.get("/v2/models/fixed").json()
        assert meta["parameters"] == {"max_batch_size": 1, "dynamic_batching": False}
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: client.post("/v2/models/fixed/infer",
                                                          json=_json_request(x)), range(6)))
        assert [r.status_code for r in replies] == [200] * 6
        assert scrape(client, url, "fixed")["kiln_batch_size"][1.0] == 6


def test_full_queue_and_passed_deadline_answer_503_with_retry_after(serve_repo, start_server):
    x = np.ones((1, 4), np.float32)
    # a long batching window keeps the first requests queued while more arrive
    with start_server(serve_repo, max_batch=8, max_queue_delay_ms=1500, max_queue=2) as url, \
            httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(client.post, "/v2/models/linear/infer", json=_json_request(x))
                   for _ in range(2)]
        queued = 'kiln_pending_requests{model="linear",version="2"} 2.0'
        deadline = time.monotonic() + 10
        while queued not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the two requests never queued"
            time.sleep(0.01)
        refused = client.post("/v2/models/linear/infer", json=_json_request(x))
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "--max-queue 2" in refused.json()["error"]
        assert [f.result().status_code for f in waiting] == [200, 200]
        text = client.get("/metrics").text
        assert 'kiln_rejected_requests_total{model="linear",reason="queue_full",version="2"} ' \
               '1.0' in text
    with start_server(serve_repo, max_batch=8, max_queue_delay_ms=400, timeout_ms=50) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        late = client.post("/v2/models/linear/infer", json=_json_request(x))
        assert late.status_code == 503 and "deadline" in late.json()["error"]
        assert late.headers["Retry-After"] == "1"


def test_repository_load_and_unload(serve_repo, start_server):
    x = np.ones((1, 4), np.float32)
    with start_server(serve_repo) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v2/repository/models/fixed/unload").status_code == 200
        assert client.get("/v2/models/fixed/ready").status_code == 404
        index = {(r["name"], r["version"]): r["state"]
                 for r in client.post("/v2/repository/index").json()}
        assert index[("fixed", "1")] == "UNAVAILABLE" and index[("linear", "2")] == "READY"
        # a new version on disk is served after a load
        folder = serve_repo / "linear" / "3"
        folder.mkdir()
        onnx.save(linear_model(scale=3.0), folder / "model.onnx")
        assert client.post("/v2/repository/models/linear/load").status_code == 200
        reply = client.post("/v2/models/linear/infer", json=_json_request(x))
        assert reply.json()["model_version"] == "3"
        np.testing.assert_allclose(np.reshape(reply.json()["outputs"][0]["data"], (1, 3)),
                                   _expected(x, 3.0), rtol=1e-5)
        shutil.rmtree(serve_repo / "fixed")
        assert client.post("/v2/repository/models/fixed/load").status_code == 404


def test_a_failing_run_is_a_500_and_the_server_stays_up(tmp_path, start_server):
    folder = tmp_path / "repo" / "reshape" / "1"
    folder.mkdir(parents=True)
    onnx.save(reshape_model(), folder / "model.onnx")

    def request(shape: list[int]) -> dict:
        return {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [0.5] * 8},
            {"name": "s", "datatype": "INT64", "shape": [2], "data": shape}]}

    with start_server(tmp_path / "repo") as url, httpx.Client(base_url=url) as client:
        failed = client.post("/v2/models/reshape/infer", json=request([7, 7]))
        assert failed.status_code == 500
        assert "model 'reshape' failed" in failed.json()["error"]
        ok = client.post("/v2/models/reshape/infer", json=request([4, 2]))
        assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [4, 2]
        assert 'status="500"' in client.get("/metrics").text
