"""The embedded server: the v2 app under uvicorn in this process.

On SIGTERM (or SIGINT) uvicorn closes the listening socket, so new connections are refused,
lets in-flight requests finish (up to ``graceful_s``), then the app drains every batcher and
``serve`` returns (exit status 0).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kiln.errors import KilnError
from kiln.runtime.serve.app import create_app
from kiln.runtime.serve.config import ServeConfig


def _server_class() -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, except that a stop signal is not raised again once drained
        (uvicorn re-raises it; with OpenVINO models loaded that re-raise crashed the
        process instead of ending it)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            stops = (signal.SIGTERM, signal.SIGINT)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return DrainingServer


def build_server(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
                 graceful_s: int = 30, log_level: str = "warning") -> Any:
    """A uvicorn server over the app; models are loaded here, before it listens."""
    import uvicorn

    app = create_app(config)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                               timeout_graceful_shutdown=int(graceful_s), lifespan="on",
                               access_log=False)
    return _server_class()(uv_config)


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
          graceful_s: int = 30,
          on_ready: Callable[[str, int], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; ``on_ready(host, port)`` is called once listening (port 0
    picks a free port, which ``on_ready`` receives)."""
    server = build_server(config, host, port, graceful_s)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as exc:
        raise KilnError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if on_ready is not None:
        bound = sock.getsockname()
        on_ready(bound[0], bound[1])
    server.run(sockets=[sock])
