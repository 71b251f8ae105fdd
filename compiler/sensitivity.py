"""Sensitivity: which quantized layers hurt the output most, and which to keep in fp32.

For each quantizable layer L, quantize L alone and measure the drift of the outputs from fp32
(``error = 1 - mean cosine + top-1 disagreement``). Then, worst layer first, move layers back
to fp32 in the fully quantized model until the accuracy drop is within the budget. Ranking
costs one evaluation per layer; the greedy phase one per reverted layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence

import onnx_ir as ir

from kiln.compiler.accuracy import AccuracyReport

#: build(excluded node names) -> quantized model with those nodes left in fp32
Build = Callable[[frozenset[str]], ir.Model]
#: evaluate(model) -> accuracy report against fp32
Evaluate = Callable[[ir.Model], AccuracyReport]


@dataclasses.dataclass
class SensitivityResult:
    errors: dict[str, float]          # per layer, quantized alone
    kept_fp32: list[str]              # layers moved back to fp32, worst first
    drop_before: float
    drop_after: float
    met: bool

    def lines(self) -> list[str]:
        worst = sorted(self.errors.items(), key=lambda kv: -kv[1])[:10]
        out = [f"sensitivity: drop {self.drop_before * 100:.3f} -> {self.drop_after * 100:.3f} "
               f"points with {len(self.kept_fp32)} layer(s) kept in fp32"
               + ("" if self.met else " (budget NOT met)")]
        out += [f"  {name}: error alone {err:.3g}"
                + ("  -> fp32" if name in self.kept_fp32 else "") for name, err in worst]
        return out


def layer_error(report: AccuracyReport) -> float:
    err = 0.0
    for o in report.outputs:
        err += 1.0 - o.cosine_mean
        if o.top1_agreement is not None:
            err += 1.0 - o.top1_agreement
    return err


def keep_sensitive_in_fp32(layers: Sequence[str], build: Build, evaluate: Evaluate,
                           max_drop: float, already_excluded: Collection[str] = (),
                           max_fp32_layers: int | None = None) -> SensitivityResult:
    """Rank ``layers`` by their error when quantized alone and keep the worst in fp32 until
    ``evaluate(model).drop() <= max_drop``."""
    base = frozenset(already_excluded)
    report = evaluate(build(base))
    drop_before = report.drop()
    if drop_before <= max_drop:
        return SensitivityResult({}, [], drop_before, drop_before, True)
    everything = frozenset(layers)
    errors = {}
    for name in layers:
        errors[name] = layer_error(evaluate(build(base | (everything - {name}))))
    order = sorted(layers, key=lambda n: -errors[n])
    limit = len(order) if max_fp32_layers is None else max_fp32_layers
    kept: list[str] = []
    drop = drop_before
    for name in order[:limit]:
        kept.append(name)
        drop = evaluate(build(base | frozenset(kept))).drop()
        if drop <= max_drop:
            break
    return SensitivityResult(errors, kept, drop_before, drop, drop <= max_drop)
