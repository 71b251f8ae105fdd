"""Ray Serve scale-out of a kiln model repository on this machine's cores:

1. the same repository on 2 replicas serves the same outputs as a Session;
2. throughput with 1 replica, then 2 (16 closed-loop clients, binary tensors);
3. autoscaling 1..2 on ongoing requests: replicas counted while load rises and after it stops.

    python benchmarks/serve_ray.py /work/cache/serve_repo_small mobilenet_v2_96

Writes benchmarks/results/serve_ray_MODEL.json. Ray starts locally with num_cpus=2.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import ray

import kiln
from kiln.runtime.serve import ray_runner
from kiln.runtime.serve.config import ServeConfig
from kiln.runtime.serve.loadgen import LoadConfig, closed_loop, request_body, run_load
from kiln.runtime.serve.protocol import HEADER_LENGTH, decode_response, encode_request

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throughput(url: str, model: str, seconds: float) -> dict:
    run_load(LoadConfig(url=url, model=model, scenarios=("offline",), workers=16, seconds=1))
    [row] = run_load(LoadConfig(url=url, model=model, scenarios=("offline",), workers=16,
                                seconds=seconds))["results"]
    return {"throughput_qps": round(row["throughput_qps"], 1),
            "latency_ms": {k: round(v, 2) for k, v in row["latency_ms"].items()},
            "status_counts": row["detail"]["status_counts"]}


def main(repo: str, model: str, seconds: float = 8.0) -> dict:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = ServeConfig(repository=repo, threads=1, max_batch=8, max_queue_delay_ms=5,
                         max_queue=64)
    result: dict = {"model": model, "cpu_count": os.cpu_count(), "ray": ray.__version__,
                    "note": "shared, noisy 2-core machine; Ray, its proxy, both replicas and "
                            "the load generator share the same 2 cores"}
    # 1 + 2: fixed replicas
    for replicas in (2, 1):
        ray_runner.start(config, port=port, replicas=replicas)
        if replicas == 2:
            path = next(Path(repo, model).glob("*/model.*"))
            session = kiln.Session(str(path))
            x = np.random.default_rng(0).standard_normal(
                [d if isinstance(d, int) else 3 for d in session.inputs[0].shape]
            ).astype(np.float32)
            expected = session(**{session.inputs[0].name: x})
            body, headers = encode_request({session.inputs[0].name: x})
            same = []
            with httpx.Client(timeout=60) as client:
                for _ in range(8):  # spread over both replicas
                    reply = client.post(f"{url}/v2/models/{model}/infer", content=body,
                                        headers=headers)
                    got = decode_response(reply.content, reply.headers.get(HEADER_LENGTH))
                    same.append(all(np.allclose(got[k], v, rtol=1e-4, atol=1e-5)
                                    for k, v in expected.items()))
            result["two_replicas_match_session"] = all(same)
            result["two_replicas_max_abs_diff"] = float(max(
                np.abs(got[k] - v).max() for k, v in expected.items()))
        result[f"replicas_{replicas}"] = {"running": ray_runner.replica_count(),
                                          **throughput(url, model, seconds)}
        print(replicas, result[f"replicas_{replicas}"], flush=True)
        ray_runner.stop()
    result["speedup_2_over_1"] = round(result["replicas_2"]["throughput_qps"]
                                       / result["replicas_1"]["throughput_qps"], 3)
    # 3: autoscaling
    ray_runner.start(config, port=port, autoscale=(1, 2), target_ongoing_requests=4,
                     upscale_delay_s=2, downscale_delay_s=6)
    timeline: list[tuple[float, int, str]] = []
    start = time.monotonic()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            timeline.append((round(time.monotonic() - start, 1), ray_runner.replica_count(),
                             phase[0]))

    phase = ["idle"]
    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(3)
    phase[0] = "load"
    load_config = LoadConfig(url=url, model=model, scenarios=("offline",), workers=24,
                             seconds=25)
    with httpx.Client(timeout=60) as client:
        body, headers, _ = request_body(client, load_config)
    loaded = asyncio.run(closed_loop(load_config, body, headers, 24, 10**6, 25))
    phase[0] = "after"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1)
        if timeline and timeline[-1][1] == 1 and any(n == 2 for _, n, _ in timeline):
            break
    stop.set()
    watcher.join()
    counts = [n for _, n, _ in timeline]
    result["autoscale"] = {
        "min_max": [1, 2], "target_ongoing_requests": 4, "load_clients": 24,
        "load_seconds": 25, "load_summary": loaded.summary(),
        "reached_2": 2 in counts, "back_to_1": bool(counts) and counts[-1] == 1,
        "timeline_s_replicas_phase": timeline}
    print(result["autoscale"], flush=True)
    ray_runner.stop()
    ray.shutdown()
    out = RESULTS / f"serve_ray_{model}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/serve_repo_small",
         sys.argv[2] if len(sys.argv) > 2 else "mobilenet_v2_96")
