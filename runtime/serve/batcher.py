"""The dynamic batcher: Triton's semantics, one implementation for every model.

Each model version has one queue and N instances (one Session each, one thread each). An idle
instance takes the oldest request and, when the model's batch dim is symbolic, waits up to
``max_queue_delay`` for more requests with the same non-batch shapes until their rows reach
``max_batch``; it concatenates them on axis 0, runs once and splits the outputs back by rows.
A model whose batch dim is fixed gets no concatenation: its requests run one by one, on
several instances at once.

Backpressure is explicit: a request is refused (``Overloaded``, answered 503 with Retry-After)
when ``max_queue`` requests already wait, and dropped the same way when its queue deadline
(``timeout``) passed before an instance took it. With a deadline, admission also refuses at
once a request whose estimated start is already past it: the rows queued ahead, in batches of
``max_batch`` shared by the instances, times the recent compute time of such a batch (a moving
average of what the instances measured). Refusing early keeps accepted requests inside the
bound instead of letting them wait and be dropped. Nothing blocks the caller: ``submit``
returns a Future at once or raises.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from kiln.errors import InputError, KilnError
from kiln.runtime.feeds import check_feeds


class Overloaded(KilnError):
    """The queue is full or the request's deadline passed: try again later (503)."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Request:
    __slots__ = ("feeds", "rows", "key", "enqueued", "deadline", "future")

    def __init__(self, feeds: dict[str, np.ndarray], rows: int, key: tuple,
                 deadline: float | None):
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.enqueued = time.perf_counter()
        self.deadline = deadline
        self.future: Future = Future()


def batch_axis(session: Any) -> bool:
    """Whether requests can be concatenated on axis 0: every input and output has the same
    symbolic (or unknown) leading dim."""
    leads = []
    for spec in list(session.inputs) + list(session.outputs):
        if spec.shape is None:
            continue
        if not spec.shape or isinstance(spec.shape[0], int):
            return False
        leads.append(spec.shape[0])
    named = {d for d in leads if isinstance(d, str)}
    return bool(session.inputs) and len(named) <= 1


class DynamicBatcher:
    """Queue + instances for one model version. ``metrics`` is a ModelMetrics or None."""

    def __init__(self, sessions: Sequence[Any], *, max_batch: int = 8,
                 max_queue_delay_ms: float = 2.0, max_queue: int = 64,
                 timeout_ms: float | None = None, metrics: Any = None, name: str = "model"):
        if not sessions:
            raise KilnError("a batcher needs at least one session")
        if max_batch < 1 or max_queue < 1 or max_queue_delay_ms < 0:
            raise KilnError("max-batch and max-queue must be >= 1, max-queue-delay-ms >= 0")
        self.sessions = list(sessions)
        self.name = name
        self.batchable = batch_axis(self.sessions[0])
        self.max_batch = max_batch if self.batchable else 1
        self.max_queue_delay = max_queue_delay_ms / 1e3
        self.max_queue = max_queue
        self.timeout = None if timeout_ms is None else timeout_ms / 1e3
        self.metrics = metrics
        self._specs = list(self.sessions[0].inputs)
        self._output_names = [o.name for o in self.sessions[0].outputs]
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_rows = 0
        self._busy_until: dict[int, float] = {}  # instance -> expected end of its batch
        self._batch_seconds: dict[int, float] = {}  # rows -> moving average of compute time
        self._cond = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, args=(i, s), daemon=True,
                                          name=f"kiln-serve-{name}-{i}")
                         for i, s in enumerate(self.sessions)]
        for worker in self._workers:
            worker.start()

    @property
    def pending(self) -> int:
        """Requests waiting for an instance."""
        return len(self._queue)

    def submit(self, feeds: Mapping[str, np.ndarray],
               outputs: Sequence[str] | None = None) -> Future:
        """Queue one request; the Future resolves to {output name: array}. Raises InputError
        for feeds that do not fit the model and Overloaded when the queue is full."""
        checked = check_feeds(self._specs, feeds)
        if outputs is not None:
            unknown = [n for n in outputs if n not in self._output_names]
            if unknown:
                raise InputError(f"unknown output(s) {unknown}; the model's outputs are "
                                 f"{self._output_names}")
        rows = 1
        if self.batchable:
            rows = next(iter(checked.values())).shape[0] if checked else 1
            if rows < 1:
                raise InputError("the batch dim (axis 0) of every input must be >= 1")
        key = tuple((n, v.dtype.str, v.shape[1:]) for n, v in checked.items())
        deadline = None if self.timeout is None else time.perf_counter() + self.timeout
        request = _Request(checked, rows, key, deadline)
        with self._cond:
            if self._closed:
                raise Overloaded(f"model '{self.name}' is shutting down")
            if len(self._queue) >= self.max_queue:
                if self.metrics:
                    self.metrics.rejected("queue_full")
                raise Overloaded(f"model '{self.name}' has {len(self._queue)} requests "
                                 f"queued (--max-queue {self.max_queue}); retry later")
            if self.timeout is not None:
                wait = self._estimated_wait(rows, request.enqueued)
                if wait > self.timeout:
                    if self.metrics:
                        self.metrics.rejected("estimate")
                    raise Overloaded(
                        f"model '{self.name}' would start this request in about "
                        f"{wait * 1e3:.0f} ms, past its {self.timeout * 1e3:.0f} ms queue "
                        "deadline; retry later")
            self._queue.append(request)
            self._queued_rows += request.rows
            self._set_pending()
            self._cond.notify()
        if outputs is not None:
            wanted = list(outputs)
            future: Future = Future()
            request.future.add_done_callback(lambda f: _pick(f, future, wanted))
            return future
        return request.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking requests, finish the queued ones, stop the instances."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout)

    def _estimated_wait(self, rows: int, now: float) -> float:
        """Seconds until a request of ``rows`` rows would start, from what is queued and
        running (caller holds the lock). 0 before any batch was measured."""
        full = self._batch_seconds.get(self.max_batch) or max(
            (t * self.max_batch / r for r, t in self._batch_seconds.items()), default=0.0)
        if full == 0.0:
            return 0.0
        before = math.ceil((self._queued_rows + rows) / self.max_batch) - 1  # batches ahead
        busy = sorted(max(0.0, end - now) for end in self._busy_until.values())
        instances = len(self.sessions)
        free_at = busy[0] if len(busy) == instances else 0.0
        return free_at + math.ceil(before / instances) * full

    def _started(self, worker: int, rows: int) -> None:
        with self._cond:
            expected = self._batch_seconds.get(rows, 0.0)
            self._busy_until[worker] = time.perf_counter() + expected

    def _finished(self, worker: int, rows: int, seconds: float | None) -> None:
        """Fold a batch's compute seconds (None: it failed) into the moving average."""
        with self._cond:
            self._busy_until.pop(worker, None)
            if seconds is not None:
                old = self._batch_seconds.get(rows)
                self._batch_seconds[rows] = seconds if old is None else \
                    0.8 * old + 0.2 * seconds

    # --- instances ----------------------------------------------------------------------
    def _set_pending(self) -> None:
        if self.metrics:
            self.metrics.pending(len(self._queue))

    def _take(self) -> list[_Request] | None:
        """Block until a batch is ready; None when closed and drained."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                first = self._queue[0]
                if self.max_batch > 1 and not self._closed:
                    due = first.enqueued + self.max_queue_delay
                    while self._rows_like(first) < self.max_batch and not self._closed:
                        remaining = due - time.perf_counter()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                        if not self._queue or self._queue[0] is not first:
                            break
                    if not self._queue or self._queue[0] is not first:
                        continue  # another instance took it
                batch: list[_Request] = []
                rest: collections.deque[_Request] = collections.deque()
                rows = 0
                for request in self._queue:
                    fits = rows + request.rows <= self.max_batch or not batch
                    if request.key == first.key and fits and rows < self.max_batch:
                        batch.append(request)
                        rows += request.rows
                    else:
                        rest.append(request)
                self._queue = rest
                self._queued_rows -= rows
                self._set_pending()
                if self._queue:
                    self._cond.notify()
                return batch

    def _rows_like(self, first: _Request) -> int:
        return sum(r.rows for r in self._queue if r.key == first.key)

    def _work(self, worker: int, session: Any) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            start = time.perf_counter()
            live = []
            for request in batch:
                if request.deadline is not None and start > request.deadline:
                    if self.metrics:
                        self.metrics.rejected("deadline")
                    waited = (start - request.enqueued) * 1e3
                    request.future.set_exception(Overloaded(
                        f"request waited {waited:.0f} ms in the queue of '{self.name}', past "
                        f"its {(self.timeout or 0) * 1e3:.0f} ms deadline; retry later"))
                elif request.future.set_running_or_notify_cancel():
                    live.append(request)
            if live:
                rows = sum(r.rows for r in live)
                self._started(worker, rows)
                self._finished(worker, rows, self._run(session, live, start))

    def _run(self, session: Any, batch: list[_Request], start: float) -> float | None:
        """Run one batch and resolve its futures; its compute seconds, None if it failed."""
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {name: np.concatenate([r.feeds[name] for r in batch])
                         for name in batch[0].feeds}
            values = session.run(self._output_names, feeds)
            results = dict(zip(self._output_names, values))
            rows = sum(r.rows for r in batch)
            parts = _split(results, [r.rows for r in batch], rows) if len(batch) > 1 \
                else [results]
        except BaseException as exc:  # the batch fails, the instance lives on
            for request in batch:
                request.future.set_exception(exc)
            return None
        compute = time.perf_counter() - start
        if self.metrics:
            self.metrics.batch(sum(r.rows for r in batch),
                               [start - r.enqueued for r in batch], compute)
        for request, part in zip(batch, parts):
            request.future.set_result(part)
        return compute


def _split(results: Mapping[str, np.ndarray], rows: list[int],
           total: int) -> list[dict[str, np.ndarray]]:
    cuts = np.cumsum(rows)[:-1]
    parts: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name, value in results.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise KilnError(f"output '{name}' has shape {list(value.shape)}: its axis 0 is not "
                            f"the batch of {total} rows, so a batch cannot be split back")
        for part, piece in zip(parts, np.split(value, cuts)):
            part[name] = piece
    return parts


def _pick(done: Future, future: Future, names: list[str]) -> None:
    exc = done.exception()
    if exc is not None:
        future.set_exception(exc)
    else:
        result = done.result()
        future.set_result({n: result[n] for n in names})
