"""Is kiln's O2 graph ever slower than the raw model on the same backend?

    python benchmarks/o2_vs_raw.py [--iterations 30] [--backends onnxruntime,openvino]

For each model, builds ``Session(model, backend=B, opt_level=0)`` and ``opt_level=2`` and
times them on the same random feeds, alternating one run of each so machine load hits both
alike; reports medians and the ratio O2/raw (below 1 = O2 faster) as the median over adjacent
(O2, raw) pairs of their time ratio. Both backends keep their
own graph optimizations on: the question is whether kiln's passes cost anything on top.
Writes benchmarks/results/o2_vs_raw.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from kiln.runtime.session import Session, random_feeds
from kiln.zoo import LIGHT_MODELS, light_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_minilm import minilm_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--models", default=",".join(LIGHT_MODELS) + ",minilm-l6")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "o2_vs_raw.json")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        path = minilm_path() if name == "minilm-l6" else light_model(name)
        if not Path(path).exists():
            continue
        for backend in args.backends.split(","):
            raw = Session(str(path), backend=backend, opt_level=0)
            opt = Session(str(path), backend=backend, opt_level=2)
            feeds = random_feeds(raw.inputs, seed=0)
            times: dict[str, list[float]] = {"raw": [], "o2": []}
            for i in range(args.warmup + args.iterations):
                for key, session in (("raw", raw), ("o2", opt)) if i % 2 else (
                        ("o2", opt), ("raw", raw)):
                    start = time.perf_counter()
                    session.run(None, feeds)
                    if i >= args.warmup:
                        times[key].append((time.perf_counter() - start) * 1e3)
            row = {"model": name, "backend": backend,
                   "raw_ms": statistics.median(times["raw"]),
                   "o2_ms": statistics.median(times["o2"]),
                   "raw_nodes": opt.report.nodes_before if opt.report else None,
                   "o2_nodes": opt.report.nodes_after if opt.report else None}
            # Each O2 run is paired with the raw run next to it in time: the host slows down
            # in phases of seconds, and a ratio within a pair cancels that out.
            row["ratio"] = statistics.median(o / r for o, r in zip(times["o2"], times["raw"]))
            rows.append(row)
            print(f"{name:13s} {backend:11s} raw {row['raw_ms']:8.2f} ms  O2 {row['o2_ms']:8.2f}"
                  f" ms  O2/raw {row['ratio']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"iterations": args.iterations, "note": "medians; ratio = "
                                    "median of adjacent-pair ratios; 2-core machine",
                                    "results": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
