"""What an idle gap before a request costs each engine: wall time, CPU time, page faults and
context switches per call, back to back and after a random 20-100 ms sleep.

    python benchmarks/idle_gap.py --models squeezenet,ddddocr_lstm --threads 1,2
    python benchmarks/idle_gap.py --models squeezenet --engines native --calls 40

``--models`` takes light-zoo names and real-model corpus names. For every model and thread
count each engine takes turns (b2b then gap, rotating order, ``--rounds`` times); a turn is one
untimed call and ``--calls`` timed ones. Per call it records wall time, the process's CPU time
(every thread: a spinning worker counts), minor page faults and voluntary / involuntary context
switches (getrusage), and prints medians and the wall time's lower quartile. CPU time and
faults move far less than wall time when other processes share the cores, so a gap cost that
shows there is the engine's own.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.* siblings
from benchmarks.native_vs_peers import GAP_MS, open_engine  # noqa: E402
from kiln.runtime.session import Session, random_feeds  # noqa: E402
from kiln.zoo import LIGHT_MODELS, light_model  # noqa: E402

FIELDS = ("wall_ms", "cpu_ms", "minflt", "nvcsw", "nivcsw")


def model_and_feeds(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    if name.removeprefix("light_") in LIGHT_MODELS:
        path = light_model(name)
        return path, random_feeds(Session(path, backend="onnxruntime", opt_level=0).inputs,
                                  seed=0)
    from benchmarks import real_model_corpus as corpus

    entry = corpus.by_name(name)
    return corpus.fetch(entry), corpus.feeds(entry)


def timed_calls(run: Callable[[dict], object], feeds: dict, mode: str, calls: int,
                rng: random.Random) -> list[dict[str, float]]:
    out = []
    run(feeds)
    for _ in range(calls):
        if mode == "gap":
            time.sleep(rng.uniform(*GAP_MS) / 1e3)
        r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), \
            time.perf_counter()
        run(feeds)
        t1, c1, r1 = time.perf_counter(), time.process_time(), \
            resource.getrusage(resource.RUSAGE_SELF)
        out.append({"wall_ms": (t1 - t0) * 1e3, "cpu_ms": (c1 - c0) * 1e3,
                    "minflt": r1.ru_minflt - r0.ru_minflt, "nvcsw": r1.ru_nvcsw - r0.ru_nvcsw,
                    "nivcsw": r1.ru_nivcsw - r0.ru_nivcsw})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="squeezenet,ddddocr_lstm")
    parser.add_argument("--engines", default="native,onnxruntime")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(0)
    engines = args.engines.split(",")
    if "onnxruntime" in engines:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # not a warning per call on dynamic outputs
    print(f"1-minute load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for name in args.models.split(","):
        path, feeds = model_and_feeds(name)
        for threads in (int(t) for t in args.threads.split(",")):
            runners = {e: open_engine(e, path, threads)[0] for e in engines}
            samples: dict[tuple[str, str], list[dict[str, float]]] = {}
            for r in range(args.rounds):
                order = engines[r % len(engines):] + engines[:r % len(engines)]
                for mode in ("b2b", "gap"):
                    for engine in order:
                        samples.setdefault((engine, mode), []).extend(
                            timed_calls(runners[engine], feeds, mode, args.calls, rng))
            for (engine, mode), rows in sorted(samples.items()):
                med = {f: statistics.median(row[f] for row in rows) for f in FIELDS}
                # The lower quartile: other processes on the cores only ever add time.
                low = statistics.quantiles([row["wall_ms"] for row in rows], n=4)[0]
                cells = f"wall_p25={low:.2f} " + " ".join(f"{f}={med[f]:.2f}" for f in FIELDS)
                print(f"{name:16s} t={threads} {engine:12s} {mode:3s} {cells}", flush=True)
            del runners


if __name__ == "__main__":
    main()
