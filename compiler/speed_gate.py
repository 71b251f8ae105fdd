"""Speed gate: keep a quantized region only when the target backend runs it faster.

int8 is not always faster: a DQ -> op pair that a backend cannot fuse runs the float op plus
a dequantization, and small or depthwise layers rarely win. The gate groups the quantized
layers into regions (by kind: op type, constant or activation weights, grouped convolution;
or one region per layer), then, starting from the fully quantized model, moves each region
back to fp32 and keeps whichever variant measures faster by more than ``margin``.

The compiler never imports a backend: ``measure(model_proto) -> seconds`` comes from the
runtime side (``kiln.runtime.quantize_gate``). Timings are interleaved and the median of
``rounds`` is used, since machines are noisy.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Collection, Sequence

import onnx
import onnx_ir as ir

from kiln.compiler.passes.quantize import constant_array

Measure = Callable[[onnx.ModelProto], float]
Build = Callable[[frozenset[str]], ir.Model]


@dataclasses.dataclass
class Decision:
    region: str
    nodes: list[str]
    quantized_s: float   # latency with the region in int8
    fp32_s: float        # latency with the region back in fp32
    kept: bool

    @property
    def speedup(self) -> float:
        return self.fp32_s / self.quantized_s if self.quantized_s > 0 else float("nan")

    def line(self) -> str:
        verdict = "int8" if self.kept else "fp32"
        return (f"{self.region} ({len(self.nodes)} nodes): int8 {self.quantized_s * 1e3:.3f} ms "
                f"vs fp32 {self.fp32_s * 1e3:.3f} ms (x{self.speedup:.2f}) -> {verdict}")


@dataclasses.dataclass
class GateResult:
    decisions: list[Decision]
    excluded: frozenset[str]
    fp32_s: float
    final_s: float

    def lines(self) -> list[str]:
        out = [d.line() for d in self.decisions]
        out.append(f"model: fp32 {self.fp32_s * 1e3:.3f} ms, gated int8 "
                   f"{self.final_s * 1e3:.3f} ms "
                   f"(x{self.fp32_s / self.final_s:.2f})")
        return out


def region_of(node: ir.Node) -> str:
    """The kind of a quantized layer: op, constant or activation weights, grouped conv."""
    if node.op_type == "Conv":
        group = node.attributes.get("group")
        return "Conv(grouped)" if group is not None and group.as_int() > 1 else "Conv"
    if node.op_type in ("MatMul", "Gemm"):
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        return f"{node.op_type}(weights)" if constant_array(weight) is not None \
            else f"{node.op_type}(activations)"
    return node.op_type


def regions(model: ir.Model, layers: Collection[str], per_layer: bool = False
            ) -> dict[str, list[str]]:
    """Group the named layers of ``model`` into regions."""
    out: dict[str, list[str]] = {}
    for node in model.graph:
        if node.name in layers:
            name = str(node.name)
            key = name if per_layer else region_of(node)
            out.setdefault(key, []).append(name)
    return out


def _paired(measure: Measure, a: onnx.ModelProto, b: onnx.ModelProto,
            rounds: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(measure(a))
        tb.append(measure(b))
    return statistics.median(ta), statistics.median(tb)


def gate(fp32: ir.Model, build: Build, groups: dict[str, list[str]], measure: Measure,
         margin: float = 0.03, rounds: int = 3,
         already_excluded: Collection[str] = ()) -> GateResult:
    """Decide per region; ``build(excluded)`` returns the quantized model with ``excluded``
    layers in fp32. A region stays int8 only if int8 is faster by more than ``margin``."""
    excluded = frozenset(already_excluded)
    current = ir.serde.serialize_model(build(excluded))
    decisions = []
    for name, nodes in groups.items():
        candidate = ir.serde.serialize_model(build(excluded | frozenset(nodes)))
        t_q, t_f = _paired(measure, current, candidate, rounds)
        kept = t_q < t_f * (1.0 - margin)
        decisions.append(Decision(name, list(nodes), t_q, t_f, kept))
        if not kept:
            excluded |= frozenset(nodes)
            current = candidate
    t_final, t_fp32 = _paired(measure, current, ir.serde.serialize_model(fp32), rounds)
    return GateResult(decisions, excluded, t_fp32, t_final)


def order_by_size(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Largest regions first, so the big decisions are taken against the full model."""
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def describe(decisions: Sequence[Decision]) -> list[str]:
    return [d.line() for d in decisions]
