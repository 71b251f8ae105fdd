"""Latency of the scikit-learn corpus models (ai.onnx.ml ops) on native vs onnxruntime, in µs.

    flock /tmp/kiln-bench.lock python benchmarks/ml_ops_latency.py [--rounds 30 --block 200]

Three engines on the corpus feeds (sk_digits_forest: 16 rows, sk_cancer_mlp: 32): onnxruntime
with default session options at N intra-op threads; kiln native at N threads (one native
partition); and kiln native with the ai.onnx.ml kernels hidden from the partitioner, i.e. the
ml nodes on kiln's onnxruntime fallback as before those kernels existed. Each round runs the
engines in a rotating order, one untimed call then ``--block`` back-to-back timed calls; the
figure is the median of every timed call. Writes benchmarks/results/ml_ops_latency.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.real_model_corpus import by_name, feeds, fetch  # noqa: E402

MODELS = ("sk_digits_forest", "sk_cancer_mlp")
RESULTS = Path(__file__).resolve().parent / "results"


def _engines(path: Path, threads: int) -> dict:
    import onnxruntime as ort

    import kiln
    from kiln.backends.native import support

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    ort_session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    native = kiln.Session(str(path), backend="native", threads=threads)
    saved = dict(support.RULES)
    for key in [k for k in support.RULES if k[0] == "ai.onnx.ml"]:
        del support.RULES[key]
    try:
        split = kiln.Session(str(path), backend="native", threads=threads)
    finally:
        support.RULES.clear()
        support.RULES.update(saved)
    return {"onnxruntime": lambda f: ort_session.run(None, f),
            "native": lambda f: native.run(None, f),
            "native, ml on fallback": lambda f: split.run(None, f),
            "_placement": (native.placement, split.placement)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    rows = []
    for name in MODELS:
        model = by_name(name)
        path = fetch(model)
        feed = feeds(model)
        for threads in [int(t) for t in args.threads.split(",")]:
            engines = _engines(path, threads)
            native_placement, split_placement = engines.pop("_placement")
            times: dict[str, list[float]] = {k: [] for k in engines}
            order = list(engines)
            for r in range(args.rounds):
                for key in order[r % len(order):] + order[:r % len(order)]:
                    run = engines[key]
                    run(feed)
                    for _ in range(args.block):
                        t0 = time.perf_counter()
                        run(feed)
                        times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
            partitions = (split_placement or {}).get("partition_count", 1)
            rows.append({"model": name, "threads": threads, "median_us": med,
                         "native_partitions": (native_placement or {}).get(
                             "partition_count", 1),
                         "fallback_partitions": partitions})
            print(f"{name:18s} t={threads} " + "  ".join(f"{k}={v:.1f}us" for k, v in med.items()),
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ml_ops_latency.json").write_text(json.dumps(rows, indent=2))
    lines = ["| model | threads | onnxruntime µs | native µs | native / ort | "
             "native with ml on fallback µs (partitions) |", "|---|---|---|---|---|---|"]
    for row in rows:
        m = row["median_us"]
        lines.append(f"| {row['model']} | {row['threads']} | {m['onnxruntime']:.1f} | "
                     f"{m['native']:.1f} | {m['native'] / m['onnxruntime']:.2f} | "
                     f"{m['native, ml on fallback']:.1f} ({row['fallback_partitions']}) |")
    (RESULTS / "ml_ops_latency.md").write_text(
        f"Medians of {args.rounds} x {args.block} back-to-back calls, engines interleaved "
        "(benchmarks/ml_ops_latency.py).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
