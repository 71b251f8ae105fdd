"""Load against a running v2 server (``kiln bench --url``): the MLPerf-style scenarios over
HTTP, open loop, loopback only, bounded in count and time.

- single-stream: one request at a time; latency percentiles.
- offline: ``workers`` clients in a closed loop for ``seconds``; throughput.
- server: Poisson arrivals (open loop: a request is sent at its arrival time whether or not
  earlier ones were answered; latency runs from the scheduled arrival). With ``qps`` one run
  at that rate; else the highest rate whose p99 of accepted requests meets the bound, found
  by the same bracketing search as ``kiln bench``'s in-process server scenario.

Every run also reads the server's /metrics before and after, so each row carries the queue
and compute p50/p99 as the server measured them (estimated from histogram buckets), the
executed batch-size histogram and the rejection rate (503/429 answers). The report has the
layout of ``kiln bench``'s (``docs/bench_schema.json``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import math
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.errors import KilnError
from kiln.runtime import scenarios
from kiln.runtime.scenarios import Probe, percentiles, poisson_arrivals
from kiln.runtime.serve import protocol

REJECTED = (429, 503)


@dataclasses.dataclass
class LoadConfig:
    """One load run against ``url``. Counts and times are hard caps."""

    url: str
    model: str
    version: str | None = None
    scenarios: tuple[str, ...] = ("server",)
    qps: float | None = None            # server: fixed rate instead of the search
    seconds: float = 2.0                # per server probe / offline run
    max_requests: int = 20000           # per run
    iterations: int = 50                # single-stream requests
    workers: int = 16                   # offline clients
    latency_bound_ms: float = 50.0
    max_probes: int = 6
    request_timeout_s: float = 30.0
    seed: int = 0
    batch: int = 1                      # rows per request (dynamic-batch models)

    def check(self) -> None:
        parsed = urllib.parse.urlparse(self.url)
        host = parsed.hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if parsed.scheme != "http" or not loopback:
            raise KilnError(f"--url {self.url}: kiln bench loads loopback servers only "
                            "(http://127.0.0.1:PORT or http://[::1]:PORT)")
        unknown = [s for s in self.scenarios if s not in ("single-stream", "offline", "server")]
        if unknown:
            raise KilnError(f"unknown scenario(s) {unknown} for --url; choose from "
                            "single-stream, offline, server")
        if self.seconds <= 0 or self.seconds > 600 or self.max_requests < 1:
            raise KilnError("--probe-seconds must be in (0, 600] and the request cap >= 1")

    @property
    def infer_url(self) -> str:
        tail = f"/versions/{self.version}" if self.version else ""
        return f"{self.url.rstrip('/')}/v2/models/{self.model}{tail}/infer"


# --- reading the server's metrics ------------------------------------------------------------
def scrape(client: Any, url: str, model: str) -> dict[str, dict[float, float]]:
    """{histogram name: {upper bound: cumulative count}} of ``model`` (summed over versions)
    plus the rejected counter under 'rejected' = {inf: total}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get(f"{url.rstrip('/')}/metrics").text
    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                hist = out.setdefault(sample.name[:-len("_bucket")], {})
                hist[bound] = hist.get(bound, 0.0) + sample.value
            elif sample.name.endswith(("_sum", "_count")):
                total = out.setdefault(sample.name, {math.inf: 0.0})
                total[math.inf] += sample.value
            elif sample.name == "kiln_rejected_requests_total":
                out.setdefault("rejected", {math.inf: 0.0})[math.inf] += sample.value
    return out


def _delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    return {b: after[b] - before.get(b, 0.0) for b in sorted(after)}


def bucket_quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket holding rank q * total."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    low, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return low
            inside = count - below
            return low + (bound - low) * ((rank - below) / inside if inside else 1.0)
        low, below = bound, count
    return low


def _total(after: Mapping[str, Any], before: Mapping[str, Any], name: str) -> float:
    return after.get(name, {}).get(math.inf, 0.0) - before.get(name, {}).get(math.inf, 0.0)


def server_side(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Queue/compute p50/p99 (ms), the batch-size histogram and rejections between scrapes."""
    detail: dict[str, Any] = {}
    for key, name in (("queue_ms", "kiln_queue_duration_seconds"),
                      ("compute_ms", "kiln_compute_duration_seconds"),
                      ("server_request_ms", "kiln_request_duration_seconds")):
        if name in after:
            hist = _delta(after[name], before.get(name, {}))
            detail[key] = {f"p{int(q * 100)}": None if (v := bucket_quantile(q, hist)) is None
                           else round(v * 1e3, 3) for q in (0.5, 0.99)}
    if "kiln_batch_size" in after:
        hist = _delta(after["kiln_batch_size"], before.get("kiln_batch_size", {}))
        counts, below = {}, 0.0
        for bound, cumulative in hist.items():
            if cumulative - below > 0:
                label = "+Inf" if math.isinf(bound) else f"<={bound:g}"
                counts[label] = int(round(cumulative - below))
            below = cumulative
        detail["batch_size_histogram"] = counts
        detail["batches"] = int(round(below))
        rows = _total(after, before, "kiln_batch_size_sum")
        detail["mean_batch_size"] = round(rows / below, 3) if below else None
    detail["server_rejected"] = int(_total(after, before, "rejected"))
    return detail


# --- the traffic -------------------------------------------------------------------------------
@dataclasses.dataclass
class RunResult:
    """What one run saw: per-request (status, latency ms) and its wall time."""

    answers: list[tuple[int | str, float]]
    seconds: float
    send_lag_ms: list[float] = dataclasses.field(default_factory=list)

    def accepted_ms(self) -> list[float]:
        return [ms for status, ms in self.answers if status == 200]

    def summary(self) -> dict[str, Any]:
        statuses = Counter(str(s) for s, _ in self.answers)
        sent = len(self.answers)
        rejected = sum(statuses.get(str(s), 0) for s in REJECTED)
        return {"sent": sent, "status_counts": dict(statuses),
                "rejection_rate": rejected / sent if sent else 0.0,
                "lost_or_hung": sum(v for k, v in statuses.items()
                                    if not k.isdigit()),
                "wall_s": round(self.seconds, 3),
                # open loop: how late the client itself sent requests (its own overload)
                "client_send_lag_ms": {f"p{q}": round(float(np.percentile(self.send_lag_ms, q)),
                                                      3) for q in (50, 99)}
                if self.send_lag_ms else None}


class _Connections:
    """Keep-alive HTTP/1.1 connections to one loopback server, each carrying one request at
    a time. The request bytes are built once, so a request costs a socket write and a short
    header parse; an HTTP library's per-request work would make the client, not the
    server, the bottleneck on a small machine. At most ``limit`` connections are open;
    beyond that a request waits for a free one (that wait counts in its latency).
    Servers close idle keep-alive connections (uvicorn after 5 s), so one idle longer than
    ``MAX_IDLE_S`` is not reused, and a reused one the server closed meanwhile is replaced
    by a fresh connection before the request counts as failed."""

    MAX_IDLE_S = 2.0

    def __init__(self, url: str, limit: int):
        parsed = urllib.parse.urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.path = parsed.path or "/"
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.slots = asyncio.Semaphore(limit)

    def request_bytes(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def post(self, request: bytes, timeout: float) -> int | str:
        async with self.slots:
            try:
                return await asyncio.wait_for(self._exchange(request), timeout)
            except asyncio.TimeoutError:
                return "timeout"
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                return f"error:{type(exc).__name__}"

    async def _exchange(self, request: bytes) -> int:
        loop = asyncio.get_running_loop()
        while self.free:
            reader, writer, last_used = self.free.pop()
            if loop.time() - last_used < self.MAX_IDLE_S:
                try:
                    return await self._send(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    continue  # the server closed it as we reused it: use a fresh one
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._send(reader, writer, request)

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> int:
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.free.append((reader, writer, asyncio.get_running_loop().time()))
        return status

    def close(self) -> None:
        for _, writer, _ in self.free:
            writer.close()
        self.free.clear()


async def open_loop(config: LoadConfig, body: bytes, headers: dict[str, str], qps: float,
                    rng: np.random.Generator) -> RunResult:
    """Poisson arrivals at ``qps`` for ``config.seconds`` (at most ``max_requests``)."""
    count = max(1, min(config.max_requests, int(math.ceil(qps * config.seconds * 1.5)) + 10))
    arrivals = poisson_arrivals(qps, count, rng)
    arrivals = arrivals[arrivals <= config.seconds] if arrivals[0] <= config.seconds \
        else arrivals[:1]
    answers: list[tuple[int | str, float]] = []
    lags: list[float] = []
    connections = _Connections(config.infer_url, 512)
    request = connections.request_bytes(body, headers)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.005

    async def one(due: float) -> None:
        lags.append((loop.time() - due) * 1e3)  # how late the client sent it
        status = await connections.post(request, config.request_timeout_s)
        answers.append((status, (loop.time() - due) * 1e3))

    tasks = []
    for offset in arrivals:
        due = start + float(offset)
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    connections.close()
    return RunResult(answers, loop.time() - start, lags)


async def closed_loop(config: LoadConfig, body: bytes, headers: dict[str, str], workers: int,
                      requests: int, seconds: float) -> RunResult:
    """``workers`` clients each sending the next request when the last is answered."""
    answers: list[tuple[int | str, float]] = []
    connections = _Connections(config.infer_url, workers)
    request = connections.request_bytes(body, headers)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + seconds

    async def client_loop() -> None:
        while len(answers) < requests and loop.time() < stop_at:
            sent = loop.time()
            status = await connections.post(request, config.request_timeout_s)
            answers.append((status, (loop.time() - sent) * 1e3))

    await asyncio.gather(*(client_loop() for _ in range(workers)))
    connections.close()
    return RunResult(answers, loop.time() - start)


def request_body(client: Any, config: LoadConfig) -> tuple[bytes, dict[str, str], list]:
    """Seeded random feeds from the model's metadata (dynamic dims = ``config.batch``, then 1)
    as a binary-tensor request."""
    tail = f"/versions/{config.version}" if config.version else ""
    response = client.get(f"{config.url.rstrip('/')}/v2/models/{config.model}{tail}")
    if response.status_code != 200:
        raise KilnError(f"{config.url}: model '{config.model}': HTTP {response.status_code} "
                        f"{response.text[:200]}")
    meta = response.json()
    rng = np.random.default_rng(config.seed)
    feeds = {}
    for spec in meta["inputs"]:
        shape = [d if d >= 0 else (config.batch if axis == 0 else 1)
                 for axis, d in enumerate(spec["shape"])]
        dtype = protocol.DATATYPES[spec["datatype"]]
        feeds[spec["name"]] = (rng.standard_normal(shape) if dtype.kind == "f"
                               else rng.integers(0, 2, shape)).astype(dtype)
    body, headers = protocol.encode_request(feeds)
    return body, headers, [{"name": n, "shape": list(v.shape), "dtype": v.dtype.name}
                           for n, v in feeds.items()]


def _row(scenario: str, platform: str, run: RunResult, detail: dict[str, Any]) -> dict:
    accepted = run.accepted_ms()
    detail = {**run.summary(), **detail}
    row = {"backend": platform, "precision": "served", "status": "ok" if accepted else "error",
           "reason": "" if accepted else f"no request was answered 200: "
                                         f"{detail['status_counts']}",
           "scenario": scenario, "samples": len(accepted),
           "latency_ms": percentiles(accepted) if accepted else None,
           "throughput_qps": len(accepted) / run.seconds if run.seconds > 0 else None,
           "detail": detail, "latencies_ms": [round(x, 4) for x in accepted]}
    return row


def run_load(config: LoadConfig, progress: scenarios.Progress | None = None) -> dict[str, Any]:
    """Every scenario of ``config`` against the server; a ``kiln bench``-shaped report."""
    import httpx

    from kiln.runtime.bench import BenchConfig, BenchRow, _report

    config.check()
    rows: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        try:
            body, headers, inputs = request_body(client, config)
            platform = client.get(f"{config.url.rstrip('/')}/v2/models/{config.model}") \
                .json().get("platform", "kiln")
        except httpx.HTTPError as exc:
            raise KilnError(f"cannot reach {config.url}: {exc}") from None
        rng = np.random.default_rng(config.seed)

        def measured(make_run) -> tuple[RunResult, dict[str, Any]]:
            before = scrape(client, config.url, config.model)
            run = asyncio.run(make_run())
            after = scrape(client, config.url, config.model)
            return run, server_side(before, after)

        for scenario in config.scenarios:
            if scenario == "single-stream":
                run, detail = measured(lambda: closed_loop(config, body, headers, 1,
                                                           config.iterations, config.seconds * 5))
                rows.append(_row(scenario, platform, run, detail))
            elif scenario == "offline":
                run, detail = measured(lambda: closed_loop(config, body, headers,
                                                           config.workers, config.max_requests,
                                                           config.seconds))
                rows.append(_row(scenario, platform, run, {**detail,
                                                           "workers": config.workers}))
            else:
                rows.append(_server_row(config, body, headers, platform, rng, measured,
                                        progress))
    bench_config = BenchConfig(backends=[], scenarios=list(config.scenarios),
                               latency_bound_ms=config.latency_bound_ms,
                               server_probe_seconds=config.seconds,
                               server_max_probes=config.max_probes, workers=config.workers,
                               iterations=config.iterations, seed=config.seed)
    report = _report(f"{config.url}/v2/models/{config.model}", bench_config,
                     [BenchRow(**row) for row in rows], inputs,
                     ["served over HTTP by a kiln server on this machine: the client and "
                      "the server share its cores"])
    report["model"]["url"] = config.url
    report["model"]["name"] = config.model
    return report


def _server_row(config: LoadConfig, body: bytes, headers: dict[str, str], platform: str,
                rng: np.random.Generator, measured: Any,
                progress: scenarios.Progress | None) -> dict[str, Any]:
    def probe(qps: float) -> tuple[Probe, RunResult, dict[str, Any]]:
        run, detail = measured(lambda: open_loop(config, body, headers, qps, rng))
        accepted = run.accepted_ms()
        p99 = float(np.percentile(accepted, 99)) if accepted else math.inf
        summary = run.summary()
        ok = bool(accepted) and p99 <= config.latency_bound_ms and summary["lost_or_hung"] == 0
        result = Probe(target_qps=qps, queries=len(accepted),
                       achieved_qps=len(accepted) / max(run.seconds, 1e-9),
                       latencies_ms=accepted, p99_ms=p99, ok=ok and summary["rejection_rate"] == 0)
        return result, run, detail

    if config.qps is not None:
        result, run, detail = probe(config.qps)
        return _row("server", platform, run, {**detail, "target_qps": config.qps,
                                              "latency_bound_ms": config.latency_bound_ms,
                                              "p99_within_bound": result.p99_ms <=
                                              config.latency_bound_ms})
    # estimate capacity with a short closed loop, then search like the in-process scenario
    quick, _ = measured(lambda: closed_loop(config, body, headers, config.workers,
                                            config.max_requests, min(1.0, config.seconds)))
    capacity = len(quick.accepted_ms()) / max(quick.seconds, 1e-9)
    search = scenarios._Search(start_qps=max(1.0, 0.5 * capacity))
    best: tuple[RunResult, dict[str, Any]] | None = None
    last: tuple[RunResult, dict[str, Any]] | None = None
    for step in range(config.max_probes):
        qps = search.next_qps(1e3 / (20 * config.latency_bound_ms), 0.05)
        if qps is None:
            break
        result, run, detail = probe(qps)
        search.record(result)
        last = (run, detail)
        if search.best is result:
            best = (run, detail)
        if progress:
            progress("server", step + 1, config.max_probes)
    run, detail = best or last or (quick, {})
    return _row("server", platform, run, {
        **detail, "latency_bound_ms": config.latency_bound_ms,
        "max_qps": search.best.target_qps if search.best else 0.0,
        "closed_loop_capacity_qps": round(capacity, 2),
        "probes": [p.to_json() for p in search.probes]})


def bench_url(url: str, model: str | None, scenario: str, *, qps: float | None = None,
              workers: int | None = None, iterations: int = 50, latency_bound_ms: float = 50.0,
              seconds: float = 2.0, max_probes: int = 6, seed: int = 0) -> dict[str, Any]:
    """``kiln bench --url URL --model NAME --scenario ...``: the report of ``run_load``."""
    if not model:
        raise KilnError("--url needs --model NAME (the served model to load)")
    names = ("single-stream", "offline", "server") if scenario == "all" else \
        tuple(s.strip() for s in scenario.split(",") if s.strip())
    config = LoadConfig(url=url, model=model, scenarios=names, qps=qps,
                        workers=workers or 16, iterations=iterations,
                        latency_bound_ms=latency_bound_ms, seconds=seconds,
                        max_probes=max_probes, seed=seed)
    return run_load(config)
