"""Dynamic batching on a MobileNetV2-shaped model: 16 concurrent clients (closed loop,
binary tensors) against `kiln serve --max-batch 1` and `--max-batch 8`.

    python benchmarks/serve_make_mobilenet.py /work/cache/serve_repo
    python benchmarks/serve_batching.py /work/cache/serve_repo [MODEL] [SECONDS] [THREADS]

MODEL defaults to mobilenet_v2 (224x224); serve_make_mobilenet.py REPO 96 makes
mobilenet_v2_96 and serve_make_mobilenet.py REPO 96 0.35 mobilenet_v2_035_96. What batching
can give is bounded by the engine: with one thread, a Session runs batch 8 per row 2.3x faster
than batch 1 at width 0.35 and only about 1.1x at width 1.0 (both at 96 px).
Writes benchmarks/results/serve_batching_MODEL.json. Client and server share
the machine's cores.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from serve_common import kiln_serve

from kiln.runtime.serve.loadgen import LoadConfig, run_load

RESULTS = Path(__file__).parent / "results"


def main(repo: str, model: str = "mobilenet_v2", seconds: float = 15.0,
         rounds: int = 3, threads: int | None = None) -> dict:
    """Both servers run side by side and take turns (``rounds`` runs of ``seconds`` / rounds
    each), so load from other processes on the machine hits both alike."""
    common = ["--max-queue-delay-ms", "5", "--max-queue", "64"]
    if threads:
        common += ["--threads", str(threads)]
    runs: dict[int, list[dict]] = {1: [], 8: []}
    with kiln_serve(repo, "--max-batch", "1", *common) as one, \
            kiln_serve(repo, "--max-batch", "8", *common) as eight:
        servers = {1: one, 8: eight}
        for served in servers.values():  # warm-up
            run_load(LoadConfig(url=served.url, model=model, scenarios=("offline",),
                                workers=16, seconds=1.0))
        for _ in range(rounds):
            for max_batch, served in servers.items():
                config = LoadConfig(url=served.url, model=model, scenarios=("offline",),
                                    workers=16, seconds=seconds / rounds)
                [row] = run_load(config)["results"]
                row.pop("latencies_ms", None)
                runs[max_batch].append({
                    "throughput_qps": row["throughput_qps"], "latency_ms": row["latency_ms"],
                    **{k: row["detail"].get(k) for k in (
                        "sent", "status_counts", "batch_size_histogram", "mean_batch_size",
                        "queue_ms", "compute_ms", "server_request_ms")},
                    "server_rss_mb": served.rss_mb(), "load_average": os.getloadavg()})
                print(f"max-batch {max_batch}: {row['throughput_qps']:.1f} req/s, batches "
                      f"{row['detail'].get('batch_size_histogram')}", flush=True)
    median = {b: statistics.median(r["throughput_qps"] for r in rs) for b, rs in runs.items()}
    speedup = median[8] / median[1]
    result = {"model": f"{model}: MobileNetV2-shaped (random weights), dynamic batch",
              "clients": 16, "seconds_per_server": seconds, "rounds": rounds,
              "threads": threads,
              "cpu_count": os.cpu_count(), "median_throughput_qps": median,
              "speedup_8_over_1": round(speedup, 3),
              "note": "shared, noisy 2-core machine; the load generator runs on the same cores",
              "max_batch_1": runs[1], "max_batch_8": runs[8]}
    out = RESULTS / f"serve_batching_{model}{f'_threads{threads}' if threads else ''}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"median throughput max-batch 8 / max-batch 1 = {speedup:.2f}x  -> {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/serve_repo",
         sys.argv[2] if len(sys.argv) > 2 else "mobilenet_v2",
         float(sys.argv[3]) if len(sys.argv) > 3 else 15.0,
         threads=int(sys.argv[4]) if len(sys.argv) > 4 else None)
