"""The reduced-precision / pruning compile step, one call with the CLI's options.

    result = reduce_model(model, Target.detect(), precision="int8",
                          calibration="calib/", calibration_method="percentile",
                          exclude=("Gemm",), max_accuracy_drop=0.01, prune="channels:0.3")
    result.model      # onnx_ir.Model, pruned then converted (Q/DQ or fp16/bf16 + Casts)
    result.lines()    # the compile report: MACs/params, per-layer decisions, accuracy, speed

It maps one to one onto ``kiln compile MODEL --precision int8|fp16|bf16 --calibration
DATA|random:N --calibration-method M --exclude NAMES --max-accuracy-drop X --prune SPEC``.
Pruning runs first (on fp32 weights), then the precision change. Every reduced compile gets
an accuracy report against the fp32 input model over the evaluation samples (``eval_samples``,
else the calibration samples).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from kiln.compiler import calibrate
from kiln.compiler.target import Target
from kiln.errors import InputError

if TYPE_CHECKING:  # imported where used: loading a .kiln reads ReduceOptions, not the reducers
    from kiln.compiler import accuracy, quantization
    from kiln.compiler.passes import precision as precision_pass
    from kiln.compiler.passes import prune as prune_pass

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


#: Ops whose presence means the graph already runs (part of itself) in int8.
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                      "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"})


def precision_in_graph(model: ir.Model) -> set[str]:
    """Reduced precisions the graph itself asks for (Cast targets, Q/DQ and integer ops)."""
    found = set()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type in INT8_OPS:
            found.add("int8")
        elif node.op_type in ("Cast", "CastLike"):
            for value in node.outputs:
                if value.dtype == ir.DataType.FLOAT16:
                    found.add("fp16")
                elif value.dtype == ir.DataType.BFLOAT16:
                    found.add("bf16")
    return found


@dataclasses.dataclass(frozen=True)
class ReduceOptions:
    """How ``kiln compile`` / ``kiln.compile`` prune and lower precision: one typed set of
    options for the API, the CLI (``kiln/reduce_options.py``) and the artifact's manifest.

    calibration:        samples, a folder of .npz/.npy, or "random:N" (see reduce_model).
    calibration_method: minmax | percentile | entropy | mse; ``percentile`` its percentile.
    quantization_mode:  auto | static | dynamic.
    exclude:            node names / op types kept in fp32 (and left unpruned).
    max_accuracy_drop:  the int8 accuracy budget, a fraction in [0, 1).
    prune:              ``magnitude:S`` or ``channels:R``.
    eval_samples, labels, classifier: the accuracy report's data (default: calibration).
    speed_gate:         time int8 regions on the backend and keep only the faster ones.
    convert_precision:  convert the graph even for a precision the backend applies itself
                        (so the compile always has its reduction report).
    """

    calibration: Any = None
    calibration_method: str = "percentile"
    percentile: float = calibrate.DEFAULT_PERCENTILE
    quantization_mode: str = "auto"
    exclude: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None
    prune: str | None = None
    eval_samples: Sequence[calibrate.Sample] | None = None
    labels: Sequence[np.ndarray] | None = None
    classifier: bool | None = None
    speed_gate: bool = False
    convert_precision: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))
        drop = self.max_accuracy_drop
        if drop is not None and not 0 <= drop < 1:
            raise InputError("max_accuracy_drop is a fraction in [0, 1), e.g. 0.01 for one "
                             "point")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def materialized(self) -> ReduceOptions:
        """These options with a one-shot iterable of calibration or evaluation samples read
        into a list, so that more than one step can read them (a generator would be empty for
        the second)."""
        def listed(samples: Any) -> Any:
            if samples is None or isinstance(samples, (str, os.PathLike, list, tuple)):
                return samples
            return list(samples)

        return dataclasses.replace(self, calibration=listed(self.calibration),
                                   eval_samples=listed(self.eval_samples))

    @classmethod
    def pop_from(cls, options: dict[str, Any]) -> ReduceOptions | None:
        """The reduce options among ``options`` (keyword arguments), removed from it; None
        when there are none."""
        found = {k: options.pop(k) for k in cls.names() if k in options}
        return cls(**found) if found else None

    def asked(self, precision: str) -> bool:
        """Whether a reduction is asked for: a precision below fp32, or a prune."""
        return precision in ("int8", "fp16", "bf16") or bool(self.prune)

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``reduce_model`` (everything but the runtime's own)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("speed_gate", "convert_precision")}

    def to_json(self) -> dict[str, Any]:
        """What the artifact's manifest records (sample data by count, not by value)."""
        def data(value: Any) -> Any:
            return value if value is None or isinstance(value, str) else \
                f"{len(list(value))} sample(s)"

        return {"calibration": data(self.calibration),
                "calibration_method": self.calibration_method,
                "quantization_mode": self.quantization_mode, "exclude": list(self.exclude),
                "max_accuracy_drop": self.max_accuracy_drop, "prune": self.prune,
                "eval_samples": data(self.eval_samples), "speed_gate": self.speed_gate}


def needs_reduction(model: ir.Model, precision: str, precision_hints: Collection[str],
                    options: ReduceOptions | None) -> bool:
    """Whether the graph must change for ``precision`` (or a prune was asked for).

    A precision the graph already carries (Q/DQ, fp16/bf16 Casts) is left alone; one the
    backend applies by itself (``precision_hints``, from ``BackendCaps``) is too, unless
    ``convert_precision`` asks for the graph conversion anyway.
    """
    options = options or ReduceOptions()
    if not options.asked(precision):
        return False
    if options.prune:
        return True
    if precision in precision_in_graph(model):
        return False
    return precision not in precision_hints or options.convert_precision


@dataclasses.dataclass
class PruneReport:
    spec: str
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    sparsity: float
    stats: prune_pass.PruneStats
    accuracy: accuracy.AccuracyReport | None = None

    def lines(self) -> list[str]:
        def pct(a: int, b: int) -> str:
            return f"{(1 - b / a) * 100:.1f}% fewer" if a else "n/a"

        out = [f"prune {self.spec}: MACs {self.macs_before:,} -> {self.macs_after:,} "
               f"({pct(self.macs_before, self.macs_after)}), params {self.params_before:,} -> "
               f"{self.params_after:,} ({pct(self.params_before, self.params_after)}), "
               f"weight sparsity {self.sparsity * 100:.1f}%"]
        if self.stats.groups:
            out.append(f"  channel groups: {self.stats.groups - self.stats.frozen_groups} pruned "
                       f"of {self.stats.groups}; channels {self.stats.channels_before} -> "
                       f"{self.stats.channels_after}")
            out += [f"  frozen x{n}: {why}" for why, n in self.stats.frozen_reasons.items()]
        if self.accuracy is not None:
            out += ["  " + line for line in self.accuracy.lines()]
        return out


@dataclasses.dataclass
class ReduceResult:
    model: ir.Model
    prune: PruneReport | None = None
    quantization: quantization.QuantizationReport | None = None
    precision: precision_pass.PrecisionReport | None = None
    #: what the compile changed after checking the engine (runtime/engine_check.py)
    notes: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        out: list[str] = []
        for part in (self.prune, self.quantization, self.precision):
            if part is not None:
                out += part.lines()
        return out + self.notes

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"report": self.lines()}
        if self.prune is not None:
            data["prune"] = {"spec": self.prune.spec, "macs_before": self.prune.macs_before,
                             "macs_after": self.prune.macs_after,
                             "params_before": self.prune.params_before,
                             "params_after": self.prune.params_after,
                             "sparsity": self.prune.sparsity}
        if self.quantization is not None:
            data["quantization"] = self.quantization.to_json()
        if self.precision is not None:
            data["precision"] = {"precision": self.precision.precision,
                                 "checker": self.precision.checker,
                                 "low_nodes": len(self.precision.stats.low_nodes),
                                 "fp32_nodes": self.precision.stats.fp32_nodes}
        return data


def prune_model(model: ir.Model, spec: str, samples: Sequence[calibrate.Sample] = (),
                labels: Sequence[np.ndarray] | None = None, exclude: Collection[str] = (),
                dims: dict[str, int] | None = None,
                classifier: bool | None = None) -> tuple[ir.Model, PruneReport]:
    """Prune a copy of ``model`` by ``spec`` (``magnitude:S`` or ``channels:R``)."""
    from kiln.compiler import accuracy, quantization
    from kiln.compiler.passes import prune as prune_pass

    kind, amount = prune_pass.parse_prune(spec)
    pruned = quantization.copy_model(model)
    step: prune_pass.PruneMagnitudePass | prune_pass.PruneChannelsPass
    if kind == "magnitude":
        step = prune_pass.PruneMagnitudePass(amount, exclude)
    else:
        step = prune_pass.PruneChannelsPass(amount, exclude)
    step(pruned)
    report = PruneReport(spec, prune_pass.count_macs(model, dims),
                         prune_pass.count_macs(pruned, dims), prune_pass.count_params(model),
                         prune_pass.count_params(pruned), prune_pass.weight_sparsity(pruned),
                         step.stats)
    if samples:
        report.accuracy = accuracy.evaluate(accuracy.onnxruntime_runner(model),
                                            accuracy.onnxruntime_runner(pruned), samples,
                                            labels, classifier)
    return pruned, report


def reduce_model(model: ir.Model, target: Target | None = None, *, precision: str = "fp32",
                 calibration: Any = None, calibration_method: str = "percentile",
                 percentile: float = calibrate.DEFAULT_PERCENTILE, quantization_mode: str = "auto",
                 exclude: Collection[str] = (), max_accuracy_drop: float | None = None,
                 prune: str | None = None, eval_samples: Sequence[calibrate.Sample] | None = None,
                 labels: Sequence[np.ndarray] | None = None, classifier: bool | None = None,
                 measure: Any = None, dynamic_form: str = "integer",
                 static_form: str = "chained") -> ReduceResult:
    """Prune and/or lower the precision of a copy of ``model`` for ``target``.

    precision:          fp32 (prune only), fp16, bf16 (needs avx512_bf16/AMX), int8.
    calibration:        samples, a folder of .npz/.npy, or "random:N" (int8 static; optional
                        for fp16, where it feeds the range analysis).
    quantization_mode:  "static", "dynamic", or "auto" (static with calibration data,
                        dynamic for models without Conv when there is none).
    exclude:            node names / op types kept in fp32 (and left unpruned).
    max_accuracy_drop:  int8 budget (fraction; see ``quantize_model``).
    measure:            ``measure(model_proto) -> seconds`` on the target backend: speed gate.
    dynamic_form:       how dynamic int8 is written for the backend (``BackendCaps.dynamic_int8``).
    static_form:        where static int8 puts its Q/DQ pairs (``BackendCaps.static_int8``).
    """
    from kiln.compiler import quantization
    from kiln.compiler.passes import precision as precision_pass

    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    samples: list[calibrate.Sample] = []
    if calibration is not None:
        samples = (calibrate.parse_calibration(calibration, model)
                   if isinstance(calibration, str) else [dict(s) for s in calibration])
    evals = list(eval_samples) if eval_samples is not None else samples
    result = ReduceResult(model)
    current = model
    if prune:
        current, result.prune = prune_model(current, prune, evals, labels, exclude,
                                            classifier=classifier)
    if precision == "int8":
        mode = quantization_mode
        if mode == "auto":
            has_conv = any(n.op_type == "Conv" for n in current.graph)
            mode = "static" if samples or has_conv else "dynamic"
        q = quantization.quantize_model(
            current, target, samples or None, mode=mode, method=calibration_method,
            percentile=percentile, exclude=exclude, eval_samples=evals or None,
            labels=labels, classifier=classifier, max_accuracy_drop=max_accuracy_drop,
            measure=measure, dynamic_form=dynamic_form, static_form=static_form)
        current, result.quantization = q.model, q.report
    elif precision in ("fp16", "bf16"):
        checks = evals
        if not checks:
            # the range analysis and the NaN/Inf + drift check need data; without any given,
            # two random inputs still catch overflow (the report says which was used)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", calibrate.RandomCalibrationWarning)
                checks = calibrate.random_samples(current, 2)
        p = precision_pass.convert_precision(current, target, precision, checks,
                                             keep_fp32=exclude)
        if not evals:
            p.report.data_note = "range analysis and drift on 2 random inputs (no --calibration)"
        current, result.precision = p.model, p.report
    result.model = current
    return result
