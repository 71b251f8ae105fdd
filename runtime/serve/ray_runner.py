"""Scale-out on Ray Serve: the same v2 app is the ingress of every replica, and each replica
loads the repository with its own batcher. Ray Serve routes requests, keeps at most
``max_ongoing_requests`` in flight per replica, refuses with 503 past ``max_queued_requests``
(backpressure), and autoscales on ongoing requests between MIN and MAX replicas.

Without ``address`` a local Ray instance starts in this process.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path
from typing import Any

from kiln.errors import BackendUnavailableError, KilnError
from kiln.runtime.serve.config import ServeConfig

APP_NAME = "kiln"
DEPLOYMENT_NAME = "KilnReplica"


def _ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise BackendUnavailableError("kiln serve --ray needs Ray Serve: pip install "
                                      "'ray[serve]' (or kiln[ray])") from None
    return ray, serve


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """'MIN,MAX' -> (MIN, MAX)."""
    if text is None:
        return None
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise KilnError(f"--autoscale takes MIN,MAX replicas, not {text!r}") from None
    if not 1 <= low <= high:
        raise KilnError(f"--autoscale needs 1 <= MIN <= MAX, not {text!r}")
    return low, high


def deployment(config: ServeConfig, replicas: int = 1, autoscale: tuple[int, int] | None = None,
               num_cpus: float = 1.0, target_ongoing_requests: float | None = None,
               upscale_delay_s: float = 3.0, downscale_delay_s: float = 10.0) -> Any:
    """The bound Ray Serve application of ``config`` (hand it to ``serve.run``)."""
    _, serve = _ray()
    config = dataclasses.replace(config, repository=str(Path(config.repository).resolve()))
    config.check()
    settings = dataclasses.asdict(config)
    # enough requests in flight per replica for its batcher to fill whole batches
    in_flight = max(2 * config.max_batch * config.instances, 8)
    options: dict[str, Any] = {"max_ongoing_requests": in_flight,
                               "max_queued_requests": config.max_queue,
                               "ray_actor_options": {"num_cpus": num_cpus}}
    if autoscale is not None:
        target = target_ongoing_requests or max(1.0, config.max_batch * config.instances / 2)
        options["autoscaling_config"] = {
            "min_replicas": autoscale[0], "initial_replicas": autoscale[0],
            "max_replicas": autoscale[1], "target_ongoing_requests": target,
            "upscale_delay_s": upscale_delay_s, "downscale_delay_s": downscale_delay_s,
            "metrics_interval_s": 1.0, "look_back_period_s": 2.0}
    else:
        if replicas < 1:
            raise KilnError("--replicas must be >= 1")
        options["num_replicas"] = replicas

    @serve.deployment(name=DEPLOYMENT_NAME, **options)
    @serve.ingress()
    class KilnReplica:
        def __init__(self, settings: dict[str, Any]):
            self.config = ServeConfig(**settings)

        def __serve_build_asgi_app__(self) -> Any:
            from kiln.runtime.serve.app import create_app

            return create_app(self.config)

    return KilnReplica.bind(settings)  # type: ignore[attr-defined]


def start(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
          autoscale: str | tuple[int, int] | None = None, address: str | None = None,
          num_cpus: int | None = None, **options: Any) -> None:
    """Start (or join) Ray, deploy the repository and return once it answers."""
    ray, serve = _ray()
    bounds = parse_autoscale(autoscale) if isinstance(autoscale, str) else autoscale
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None,
                 include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(config, replicas, bounds, **options), name=APP_NAME, route_prefix="/")


def replica_count() -> int:
    """Running replicas of the kiln deployment."""
    _, serve = _ray()
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return 0
    return int(app.deployments[DEPLOYMENT_NAME].replica_states.get("RUNNING", 0))


def stop() -> None:
    """Shut the Serve application and its proxy down (Ray itself stays up)."""
    _, serve = _ray()
    serve.shutdown()


def serve_on_ray(config: ServeConfig, host: str, port: int, replicas: int = 1,
                 autoscale: str | None = None, address: str | None = None,
                 on_ready: Any = None) -> None:
    """``kiln serve --ray``: deploy, then block until SIGTERM/SIGINT and shut down."""
    ray, _ = _ray()
    start(config, host, port, replicas, autoscale, address)
    if on_ready is not None:
        on_ready(host, port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    stop()
    ray.shutdown()
