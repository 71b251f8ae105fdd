"""Fuse the decomposed layer normalization of exported transformers into LayerNormalization.

Over the last axis, with mean ``m = ReduceMean(x)`` and ``d = x - m``:

    LayerNorm(x) = d / sqrt(ReduceMean(d * d) + eps) * scale + bias

which is ONNX ``LayerNormalization(x, scale, bias, axis=-1, epsilon=eps)`` (opset 17). The
rules are onnxscript's (``Pow(d, 2)`` or ``d * d``, ``Div`` or ``Mul(Reciprocal)``), and a
second rule absorbs the trailing ``+ bias``. ``check`` refuses a non-float input or an
epsilon that is not a constant scalar.
"""

from __future__ import annotations

from collections import Counter

import onnx_ir as ir

from kiln.compiler.passes._util import opset
from kiln.compiler.passes.rule import OnnxscriptRulesPass


def layer_norm_rules() -> list:
    """onnxscript's rules, imported when a pass is built: a pipeline without this step (an
    engine that fuses layer norms at its own load) does not import them (~1 ms)."""
    from onnxscript.rewriter.rules.fusion._layer_norm import layer_normalization_rules

    # ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul -> LayerNormalization(x, scale)
    # LayerNormalization(x, scale) + bias            -> LayerNormalization(x, scale, bias)
    return list(layer_normalization_rules)


LAYER_NORM_OPSET = 17


class FuseLayerNormPass(OnnxscriptRulesPass):
    """Fuse every matching layer-norm subgraph (the model must import opset >= 17)."""

    # the pattern's ReduceMeans sit behind its OrValues (Pow or Mul, Div or Mul(Reciprocal))
    needs = {"LayerNormFusion": frozenset({"ReduceMean", "Sub", "Sqrt"})}

    def __init__(self) -> None:
        super().__init__(layer_norm_rules())

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        version = opset(model.graph)
        if version < LAYER_NORM_OPSET:
            self.fired = Counter[str]()
            self.rejected = Counter(
                {f"the model imports opset {version}; LayerNormalization needs 17": 1})
            return ir.passes.PassResult(model, modified=False)
        return super().call(model)
