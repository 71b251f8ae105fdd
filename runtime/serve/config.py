"""What ``kiln serve`` was asked for: one value handed to the repository, the batcher and,
under Ray, to every replica (plain data, so it crosses process boundaries)."""

from __future__ import annotations

import dataclasses
from typing import Any

from kiln.errors import KilnError


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Settings of one server. See ``kiln serve --help`` for each knob."""

    repository: str
    backend: str = "auto"
    threads: int | None = None          # intra-op threads per instance
    instances: int = 1                  # Sessions (and batcher threads) per model version
    max_batch: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue: int = 64
    timeout_ms: float | None = None     # queue deadline of a request
    retry_after_s: int = 1

    def check(self) -> None:
        if self.instances < 1 or self.max_batch < 1 or self.max_queue < 1:
            raise KilnError("--instances, --max-batch and --max-queue must be >= 1")
        if self.max_queue_delay_ms < 0 or (self.timeout_ms is not None and self.timeout_ms <= 0):
            raise KilnError("--max-queue-delay-ms must be >= 0 and --timeout-ms > 0")
        if self.threads is not None and self.threads < 1:
            raise KilnError("--threads must be >= 1")

    def batcher_options(self) -> dict[str, Any]:
        return {"max_batch": self.max_batch, "max_queue_delay_ms": self.max_queue_delay_ms,
                "max_queue": self.max_queue, "timeout_ms": self.timeout_ms}
