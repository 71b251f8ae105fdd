"""Fixtures of the serve tests: a model repository built in code and a real kiln server on
127.0.0.1 and a free port (uvicorn in a thread of this process)."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

for _module in ("starlette", "uvicorn", "httpx", "prometheus_client"):
    pytest.importorskip(_module, reason="kiln serve needs the [serve] extra")

# importlib mode keeps test folders off sys.path; the model builders live next to this file
_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from serve_models import write_repository  # noqa: E402

from kiln.runtime.serve.app import create_app  # noqa: E402
from kiln.runtime.serve.config import ServeConfig  # noqa: E402


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
