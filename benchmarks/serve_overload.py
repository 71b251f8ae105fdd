"""Overload: Poisson arrivals at 3x the measured capacity for 10 s against `kiln serve` with a
bounded queue and a queue deadline. Every request must be answered 200 or 503/429 (none lost
or hung), the p99 of accepted requests must stay within 2x the latency bound, the server's
memory must stay bounded, and it must still answer afterwards.

    python benchmarks/serve_overload.py /work/cache/serve_repo [MODEL] [BOUND_MS] [ROUNDS]

Each round starts a fresh server, measures its capacity and overloads it; the verdict is the
median over ROUNDS (default 3). Writes benchmarks/results/serve_overload_MODEL.json. Client and
server share the cores.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
from serve_common import kiln_serve

from kiln.runtime.serve.loadgen import LoadConfig, run_load

RESULTS = Path(__file__).parent / "results"


def main(repo: str, model: str = "mobilenet_v2", bound_ms: float = 200.0,
         seconds: float = 10.0, rounds: int = 3) -> dict:
    runs = [overload(repo, model, bound_ms, seconds) for _ in range(rounds)]
    ratios = [r["p99_accepted_over_bound"] for r in runs]
    result = {"model": model, "latency_bound_ms": bound_ms, "rounds": rounds,
              "p99_accepted_over_bound": ratios,
              "median_p99_accepted_over_bound": statistics.median(ratios),
              "lost_or_hung": sum(r["lost_or_hung"] for r in runs),
              "alive_after": all(r["ready_after"] == 200 for r in runs),
              "note": "shared, noisy 2-core machine; the open-loop client runs on the same cores "
                      "and its lateness counts in latency (measured from scheduled arrival)",
              "runs": runs}
    out = RESULTS / f"serve_overload_{model}.json"
    out.write_text(json.dumps(result, indent=1))
    for run in runs:
        print(f"capacity {run['capacity_qps']} req/s, offered {run['target_qps']}: "
              f"{run['status_counts']}, lost {run['lost_or_hung']}, accepted p99 "
              f"{run['accepted_latency_ms']['p99']:.0f} ms = {run['p99_accepted_over_bound']}x "
              f"the bound, batches {run['server_side']['batch_size_histogram']}, RSS "
              f"{run['server_rss_mb']}, load {run['load_average'][0]:.2f}")
    print(f"median p99 of accepted / bound = {result['median_p99_accepted_over_bound']}x -> {out}")
    return result


def overload(repo: str, model: str, bound_ms: float, seconds: float) -> dict:
    # the queue deadline is half the bound: queue wait + one batch's compute fit in it.
    # One intra-op thread leaves the second core to HTTP and the load generator.
    args = ["--threads", "1", "--max-batch", "8", "--max-queue-delay-ms", "5", "--max-queue", "32",
            "--timeout-ms", str(bound_ms / 2)]
    with kiln_serve(repo, *args) as served:
        base = dict(url=served.url, model=model, latency_bound_ms=bound_ms)
        run_load(LoadConfig(**base, scenarios=("offline",), workers=16, seconds=2.0))
        [cap] = run_load(LoadConfig(**base, scenarios=("offline",), workers=16,
                                    seconds=4.0))["results"]
        capacity = cap["throughput_qps"]
        rss = [served.rss_mb()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                rss.append(served.rss_mb())

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.time()
        report = run_load(LoadConfig(**base, scenarios=("server",), qps=3 * capacity,
                                     seconds=seconds, max_requests=100000,
                                     request_timeout_s=30))
        wall = time.time() - started
        stop.set()
        sampler.join()
        [row] = report["results"]
        after = httpx.get(f"{served.url}/v2/health/ready").status_code
        check = run_load(LoadConfig(**base, scenarios=("single-stream",), iterations=20))
        alive_after = check["results"][0]["detail"]["status_counts"]
        detail = row["detail"]
        result = {
            "model": model, "server_args": args, "latency_bound_ms": bound_ms,
            "capacity_qps": round(capacity, 1), "target_qps": round(3 * capacity, 1),
            "seconds": seconds, "wall_s": round(wall, 2),
            "sent": detail["sent"], "status_counts": detail["status_counts"],
            "lost_or_hung": detail["lost_or_hung"],
            "client_send_lag_ms": detail.get("client_send_lag_ms"),
            "rejection_rate": round(detail["rejection_rate"], 4),
            "accepted_qps": round(row["throughput_qps"] or 0, 1),
            "accepted_latency_ms": row["latency_ms"],
            "p99_accepted_over_bound": round((row["latency_ms"] or {}).get("p99", 0) / bound_ms,
                                             3),
            "server_side": {k: detail.get(k) for k in ("queue_ms", "compute_ms",
                                                       "server_request_ms",
                                                       "batch_size_histogram",
                                                       "server_rejected")},
            "server_rss_mb": {"before": round(rss[0], 1), "peak": round(max(rss), 1),
                              "end": round(rss[-1], 1)},
            "ready_after": after, "single_stream_after": alive_after,
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/serve_repo",
         sys.argv[2] if len(sys.argv) > 2 else "mobilenet_v2",
         float(sys.argv[3]) if len(sys.argv) > 3 else 200.0,
         rounds=int(sys.argv[4]) if len(sys.argv) > 4 else 3)
