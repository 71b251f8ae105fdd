"""Prometheus metrics of kiln serve, per model and version, in their own registry (so two
apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: seconds: 0.5 ms .. 10 s, dense where CPU inference lives.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                   0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
LABELS = ("model", "version")


class Metrics:
    """Every metric family of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kiln_requests", "Infer requests answered, by HTTP status",
                                LABELS + ("status",), registry=r)
        self.request_duration = Histogram("kiln_request_duration_seconds",
                                          "Infer request time from arrival to answer", LABELS,
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram("kiln_queue_duration_seconds",
                                        "Time a request waited in the batcher's queue", LABELS,
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.compute_duration = Histogram("kiln_compute_duration_seconds",
                                          "Run time of the batch a request was part of", LABELS,
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("kiln_batch_size", "Rows of each executed batch", LABELS,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.pending_requests = Gauge("kiln_pending_requests", "Requests waiting in the queue",
                                      LABELS, registry=r)
        self.rejected_requests = Counter("kiln_rejected_requests",
                                         "Requests refused for backpressure, by reason",
                                         LABELS + ("reason",), registry=r)

    def for_model(self, name: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, name, version)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """The metrics of one model version, as the batcher and the app record them."""

    def __init__(self, metrics: Metrics, name: str, version: str):
        self.m = metrics
        self.labels = (name, version)

    def batch(self, rows: int, queue_waits: list[float], compute_s: float) -> None:
        self.m.batch_size.labels(*self.labels).observe(rows)
        queue = self.m.queue_duration.labels(*self.labels)
        compute = self.m.compute_duration.labels(*self.labels)
        for wait in queue_waits:
            queue.observe(wait)
            compute.observe(compute_s)

    def pending(self, count: int) -> None:
        self.m.pending_requests.labels(*self.labels).set(count)

    def rejected(self, reason: str) -> None:
        self.m.rejected_requests.labels(*self.labels, reason).inc()

    def answered(self, status: int, seconds: float) -> None:
        self.m.requests.labels(*self.labels, str(status)).inc()
        self.m.request_duration.labels(*self.labels).observe(seconds)
