"""int8 compile step: calibrate, quantize, keep sensitive layers in fp32, gate on speed, report.

    result = quantize_model(model, target, calibration="calib/",   # or samples, or "random:8"
                            mode="static", method="percentile",
                            exclude=("Gemm",), max_accuracy_drop=0.01, measure=measure)
    result.model        # onnx_ir.Model with explicit Q/DQ
    result.report       # QuantizationReport: what was quantized, accuracy, speed decisions

``measure(model_proto) -> seconds`` (optional) times a model on the target backend; the
compiler never imports a backend, so the caller supplies it
(``kiln.runtime.quantize_gate.measure_with_backend``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from kiln.compiler import accuracy, calibrate, sensitivity, speed_gate
from kiln.compiler.passes import quantize
from kiln.compiler.passes import smooth as smooth_pass
from kiln.compiler.target import Target
from kiln.errors import InputError, ModelError

MODES = ("static", "dynamic")
TRANSFORMER_OPS = frozenset({"MatMul", "Gemm"})


@dataclasses.dataclass
class QuantizationReport:
    mode: str
    scheme: str
    method: str | None
    samples: int
    quantized: list[str]
    skipped: dict[str, str]
    accuracy: accuracy.AccuracyReport | None = None
    sensitivity: sensitivity.SensitivityResult | None = None
    gate: speed_gate.GateResult | None = None
    smoothed: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"int8 {self.mode} ({self.scheme} activations x int8 weights"
        if self.method:
            head += f", {self.method} calibration on {self.samples} sample(s)"
        out = [head + f"): {len(self.quantized)} layer(s) quantized"]
        if self.smoothed:
            out.append(f"  {len(self.smoothed)} MatMul(s) smoothed (outliers moved into weights)")
        for name, why in list(self.skipped.items())[:20]:
            out.append(f"  fp32 {name}: {why}")
        if self.sensitivity is not None:
            out += self.sensitivity.lines()
        if self.gate is not None:
            out += ["speed gate:"] + ["  " + line for line in self.gate.lines()]
        if self.accuracy is not None:
            out += ["accuracy vs fp32:"] + ["  " + line for line in self.accuracy.lines()]
        return out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode, "scheme": self.scheme, "method": self.method,
            "samples": self.samples, "quantized": self.quantized, "skipped": self.skipped}
        if self.accuracy is not None:
            data["accuracy"] = self.accuracy.to_json()
        if self.gate is not None:
            data["speed_gate"] = [dataclasses.asdict(d) for d in self.gate.decisions]
            data["speed_gate_total"] = {"fp32_s": self.gate.fp32_s,
                                        "final_s": self.gate.final_s}
        if self.sensitivity is not None:
            data["sensitivity"] = {"kept_fp32": self.sensitivity.kept_fp32,
                                   "drop_before": self.sensitivity.drop_before,
                                   "drop_after": self.sensitivity.drop_after}
        return data


@dataclasses.dataclass
class QuantizationResult:
    model: ir.Model
    report: QuantizationReport


def copy_model(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def ensure_opset(model: ir.Model, version: int = quantize.MIN_OPSET) -> ir.Model:
    """The model itself when its ai.onnx opset is high enough, else an upgraded copy."""
    if quantize.opset_version(model) >= version:
        return model
    proto = ir.serde.serialize_model(model)
    # Shapes kiln inferred at the old opset can disagree with the converter's own inference
    # (a scalar recorded where the upgraded op yields rank 1); the converter re-infers them.
    del proto.graph.value_info[:]
    try:
        proto = onnx.version_converter.convert_version(proto, version)
    except Exception as exc:  # the converter raises plain RuntimeErrors
        raise ModelError(f"cannot move the model to opset {version} for quantization: {exc}") \
            from exc
    return ir.serde.deserialize_model(proto)


def default_op_types(model: ir.Model) -> frozenset[str]:
    """Convolutional models quantize Conv and the ops around it; others MatMul/Gemm only."""
    has_conv = any(n.op_type == "Conv" for n in model.graph)
    return quantize.DEFAULT_OPS if has_conv else TRANSFORMER_OPS


def _samples(model: ir.Model, calibration: Any) -> list[calibrate.Sample]:
    if calibration is None:
        raise InputError("static int8 needs calibration data: a folder of .npz/.npy samples, "
                         "a list of feeds, or random:N for a smoke test (kiln compile "
                         "--calibration DATA; kiln.Session(..., calibration=DATA))")
    if isinstance(calibration, (str, Path)):
        return calibrate.parse_calibration(calibration, model)
    return [dict(s) for s in calibration]


def quantize_model(model: ir.Model, target: Target | None = None, calibration: Any = None, *,
                   mode: str = "static", method: str = "percentile",
                   percentile: float = calibrate.DEFAULT_PERCENTILE,
                   exclude: Collection[str] = (), op_types: Collection[str] | None = None,
                   activation: str | None = None,
                   eval_samples: Sequence[calibrate.Sample] | None = None,
                   labels: Sequence[np.ndarray] | None = None,
                   classifier: bool | None = None,
                   max_accuracy_drop: float | None = None,
                   measure: speed_gate.Measure | None = None, gate_per_layer: bool = False,
                   gate_margin: float = 0.03, smooth: float | None = None,
                   dynamic_form: str = "integer",
                   static_form: str = "chained") -> QuantizationResult:
    """Quantize ``model`` (not modified) to int8 for ``target``.

    calibration:       samples (dicts of input arrays), a folder, or "random:N" (static only;
                       for dynamic it is only used to evaluate accuracy when given).
    mode:              "static" (calibrated Q/DQ everywhere it pays) or "dynamic" (int8
                       weights for MatMul/Gemm, activations quantized at run time).
    exclude:           node names or op types kept in fp32.
    activation:        "uint8" / "int8"; default from the target (VNNI -> uint8).
    eval_samples:      samples for the accuracy report (default: the calibration samples);
                       ``labels`` (one array per sample) add labelled top-1 accuracy.
    classifier:        whether [N, C] outputs are class scores (None: guess from the shape).
    max_accuracy_drop: budget as a fraction: labelled top-1 points (0.01 = one point), or
                       top-1 disagreement, or 1 - worst cosine for non-classifiers; layers
                       are kept in fp32, most sensitive first, until it holds.
    measure:           times a ModelProto on the target backend; enables the speed gate.
    smooth:            static only: migrate activation outliers of MatMuls into their weights
                       with this strength (0.5 is typical for transformers; None: off).
    dynamic_form:      dynamic only: "integer" or "weights" (``quantize.DYNAMIC_FORMS``; the
                       backend's ``BackendCaps.dynamic_int8`` says which it runs fast).
    static_form:       static only: where activation Q/DQ pairs go, "chained" or "inputs"
                       (``quantize.STATIC_FORMS``; the backend's ``BackendCaps.static_int8``).
    """
    if mode not in MODES:
        raise InputError(f"unknown quantization mode {mode!r}; choose one of {MODES}")
    fp32 = ensure_opset(model)
    scheme = quantize.QuantScheme(activation) if activation \
        else quantize.scheme_for(target, static_form)
    ops = frozenset(op_types) if op_types is not None else default_op_types(fp32)
    samples = _samples(fp32, calibration) if (mode == "static" or calibration is not None) \
        else []
    evals = list(eval_samples) if eval_samples is not None else samples

    base = fp32
    smoothed: list[str] = []
    if mode == "static" and smooth is not None:
        groups = smooth_pass.smoothable(fp32, exclude)
        tap = calibrate.TensorTap(fp32, list(groups))
        seen: dict[str, list[np.ndarray]] = {name: [] for name in groups}
        for feed in samples:
            for name, value in tap.run(feed).items():
                seen[name].append(value)
        absmax = {n: smooth_pass.channel_absmax(v) for n, v in seen.items() if v}
        base = copy_model(fp32)
        step = smooth_pass.SmoothActivationsPass(absmax, smooth, exclude)
        step(base)
        smoothed = step.smoothed
    if mode == "static":
        ranges = calibrate.collect_ranges(base, samples, method=method, percentile=percentile)

        def build(excluded: frozenset[str]) -> ir.Model:
            m = copy_model(base)
            quantize.QuantizeStaticPass(ranges, scheme, ops, set(exclude) | excluded,
                                        static_form)(m)
            return m
    else:
        def build(excluded: frozenset[str]) -> ir.Model:
            m = copy_model(fp32)
            quantize.QuantizeDynamicPass(ops & TRANSFORMER_OPS, set(exclude) | excluded,
                                         dynamic_form)(m)
            return m

    probe_model = copy_model(base)
    probe = (quantize.QuantizeStaticPass(ranges, scheme, ops, exclude, static_form)
             if mode == "static"
             else quantize.QuantizeDynamicPass(ops & TRANSFORMER_OPS, exclude, dynamic_form))
    probe(probe_model)
    layers = list(probe.stats.nodes)
    report = QuantizationReport(mode, scheme.activation if mode == "static" else "uint8",
                                method if mode == "static" else None, len(samples), layers,
                                dict(probe.stats.skipped), smoothed=smoothed)
    reference = accuracy.onnxruntime_runner(fp32) if evals else None
    expected = [dict(reference(s)) for s in evals] if reference is not None else []

    def evaluate(m: ir.Model, optimize: bool = True) -> accuracy.AccuracyReport:
        run = accuracy.onnxruntime_runner(m, optimize)
        return accuracy.compare(expected, [dict(run(s)) for s in evals], labels, classifier)

    def evaluate_fast(m: ir.Model) -> accuracy.AccuracyReport:
        # Q/DQ simulated op by op: no fusion time per candidate, same rounding
        return evaluate(m, optimize=False)

    excluded: frozenset[str] = frozenset()
    if max_accuracy_drop is not None:
        if not evals:
            raise InputError("--max-accuracy-drop needs calibration or evaluation samples")
        result = sensitivity.keep_sensitive_in_fp32(layers, build, evaluate_fast,
                                                    max_accuracy_drop)
        report.sensitivity = result
        excluded |= frozenset(result.kept_fp32)
    if measure is not None:
        groups = speed_gate.regions(fp32, [n for n in layers if n not in excluded],
                                    per_layer=gate_per_layer)
        gated = speed_gate.gate(fp32, build, speed_gate.order_by_size(groups), measure,
                                margin=gate_margin, already_excluded=excluded)
        report.gate = gated
        excluded = gated.excluded
    final = build(excluded) if excluded else probe_model
    report.quantized = [n for n in layers if n not in excluded]
    for name in excluded:
        report.skipped.setdefault(name, "kept in fp32 by the accuracy budget or speed gate")
    if evals:
        report.accuracy = evaluate(final)
    return QuantizationResult(final, report)
