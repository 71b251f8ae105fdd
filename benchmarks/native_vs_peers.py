"""native vs onnxruntime vs OpenVINO (f32 hint) on the light models and the MiniLM export:
one interleaved run per model through kiln's bench engine (same inputs, same thread count,
onnxruntime spinning off, an untimed call before each engine's block), medians; writes
benchmarks/results/native_vs_peers.md and .json (2 threads) or native_vs_peers_t{N}.md/.json.

    python benchmarks/native_vs_peers.py --threads 2 --iterations 40
    python benchmarks/native_vs_peers.py --threads 1 --iterations 40

The ratio per model is latency(native) / min(latency(onnxruntime), latency(openvino)); the
summary line is their geometric mean over the five light models the bar is set on (MiniLM,
when ~/.cache/kiln/models/minilm-l6.onnx exists from prepare_minilm.py, is listed beside them,
sequence 128). The light models declare batch 1 in their graphs, so batch is fixed at 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from kiln.runtime.bench import BenchConfig, run_bench
from kiln.runtime.session import Session, random_feeds
from kiln.zoo import light_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_minilm import minilm_path  # noqa: E402

MODELS = ("resnet50", "squeezenet", "densenet121", "inception_v1", "shufflenet")
RESULTS = Path(__file__).parent / "results"
MINILM_SEQ = 128


def _minilm_feeds(path: Path) -> dict[str, np.ndarray]:
    """Token ids inside the vocabulary, a full attention mask, segment 0."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in Session(path, backend="onnxruntime", opt_level=0).inputs:
        if "mask" in spec.name:
            feeds[spec.name] = np.ones((1, MINILM_SEQ), np.int64)
        elif "type" in spec.name:
            feeds[spec.name] = np.zeros((1, MINILM_SEQ), np.int64)
        else:
            feeds[spec.name] = rng.integers(1000, 20000, (1, MINILM_SEQ), dtype=np.int64)
    return feeds


def _feeds(path: Path, batch: int) -> dict[str, np.ndarray]:
    specs = Session(path, backend="onnxruntime", opt_level=0).inputs
    feeds = random_feeds(specs, seed=0)
    return {k: np.repeat(v, batch, axis=0) if batch > 1 else v for k, v in feeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    if args.batch != 1:
        raise SystemExit("the light models declare batch 1; only --batch 1 is meaningful")
    rows = []
    names = args.models.split(",")
    if minilm_path().exists():
        names.append("minilm-l6")
    for name in names:
        path = minilm_path() if name == "minilm-l6" else light_model(name)
        feeds = _minilm_feeds(path) if name == "minilm-l6" else _feeds(path, args.batch)
        config = BenchConfig(backends=["onnxruntime", "openvino", "native"],
                             threads=args.threads, iterations=args.iterations, block=5,
                             warmup=3, session_options={"fallback": None})
        report = run_bench(str(path), config, feeds=feeds)
        p50 = {r["backend"]: (r["latency_ms"] or {}).get("p50") for r in report["results"]
               if r["status"] == "ok"}
        errors = {r["backend"]: r["reason"] for r in report["results"] if r["status"] != "ok"}
        ratio = (p50["native"] / min(p50["onnxruntime"], p50["openvino"])
                 if {"native", "onnxruntime", "openvino"} <= p50.keys() else None)
        rows.append({"model": name, "p50_ms": p50, "errors": errors, "ratio": ratio})
        print(name, {k: round(v, 2) for k, v in p50.items()}, "ratio", ratio, errors or "")
    ratios = [r["ratio"] for r in rows if r["ratio"] and r["model"] in MODELS]
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "native_vs_peers" if args.threads == 2 else f"native_vs_peers_t{args.threads}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"threads": args.threads, "batch": args.batch, "iterations": args.iterations,
         "precision": "fp32 (OpenVINO INFERENCE_PRECISION_HINT=f32)", "rows": rows,
         "geomean_native_over_best_peer": geomean}, indent=2))
    lines = [f"# native vs onnxruntime vs OpenVINO (fp32), batch {args.batch}, "
             f"{args.threads} threads", "",
             "p50 latency in ms from one interleaved run per model "
             f"({args.iterations} timed runs per engine); ratio = native / best peer.", "",
             "| model | onnxruntime | openvino | native | native / best |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        p = r["p50_ms"]
        cells = [f"{p[b]:.2f}" if b in p else "error" for b in ("onnxruntime", "openvino",
                                                                   "native")]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['model']} | {' | '.join(cells)} | {ratio} |")
    if geomean:
        lines += ["", f"Geometric mean of native / best peer over the five light models: "
                  f"**{geomean:.2f}**"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("geomean native/best", geomean)


if __name__ == "__main__":
    main()
