"""Fixtures of the serve tests: a model repository built in code and a real kiln server on
127.0.0.1 and a free port (uvicorn in a thread of this process)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.runtime.serve.app import create_app
from kiln.runtime.serve.config import ServeConfig

WEIGHT = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def linear_model(batch: int | str = "batch", scale: float = 1.0) -> onnx.ModelProto:
    """y = x @ W * scale + 1 over x: float32[batch, 4]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    w = numpy_helper.from_array(WEIGHT * scale, "w")
    one = numpy_helper.from_array(np.ones(3, np.float32), "one")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["xw"]),
                               helper.make_node("Add", ["xw", "one"], ["y"])],
                              "linear", [x], [y], [w, one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_repository(root: Path) -> Path:
    """linear v1 and v2 (dynamic batch; v2 doubles W), fixed (batch fixed at 1)."""
    for name, version, model in (("linear", 1, linear_model()),
                                 ("linear", 2, linear_model(scale=2.0)),
                                 ("fixed", 1, linear_model(batch=1))):
        folder = root / name / str(version)
        folder.mkdir(parents=True)
        onnx.save(model, folder / "model.onnx")
    return root


@pytest.fixture
def serve_repo(tmp_path: Path) -> Path:
    return write_repository(tmp_path / "repo")


@contextlib.contextmanager
def running(config: ServeConfig) -> Iterator[str]:
    """Serve ``config`` on a free loopback port; yields the base URL."""
    import uvicorn

    app = create_app(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def start_server() -> Callable[..., contextlib.AbstractContextManager[str]]:
    """start_server(repo, **ServeConfig fields) -> context manager yielding the URL."""
    def start(repo: Path, **options) -> contextlib.AbstractContextManager[str]:
        return running(ServeConfig(repository=str(repo), **options))
    return start
