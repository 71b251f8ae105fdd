"""The embedded server: the v2 app under uvicorn in this process.

On SIGTERM (or SIGINT) uvicorn closes the listening socket, so new connections are refused,
lets in-flight requests finish (up to ``graceful_s``), then the app drains every batcher and
the process exits.
"""

from __future__ import annotations

import socket

from kiln.errors import KilnError
from kiln.runtime.serve.app import create_app
from kiln.runtime.serve.config import ServeConfig


def build_server(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
                 graceful_s: float = 30.0, log_level: str = "warning"):  # -> uvicorn.Server
    """A uvicorn.Server over the app; models are loaded here, before it listens."""
    import uvicorn

    app = create_app(config)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                               timeout_graceful_shutdown=graceful_s, lifespan="on",
                               access_log=False)
    return uvicorn.Server(uv_config)


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
          graceful_s: float = 30.0, on_ready=None) -> None:
    """Serve until SIGTERM/SIGINT; ``on_ready(host, port)`` is called once listening."""
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
