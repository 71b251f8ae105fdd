"""The transformer fusions, in the order they must run: opset, LayerNorm, GELU, attention.

The opset the graph is raised to depends on the backend: 23 when it runs ONNX Attention,
else 20 (Gelu) capped by what the backend imports; below 17 (LayerNormalization) nothing
is fused. A backend whose engine fuses LayerNorm and GELU itself at load
(``BackendCaps.fuses_norm_gelu``) and takes no attention from kiln gets none of these steps:
the opset upgrade alone is most of their time (MiniLM-L6: 60-80 of ~110 ms); one that takes
attention from kiln gets the opset upgrade and attention only.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import onnx_ir as ir
from onnx_ir.passes.common import AddDefaultAttributesPass, LiftConstantsToInitializersPass

from kiln.compiler.passes.cleanup import EliminateIdentityPass
from kiln.compiler.passes.fuse_attention import ATTENTION_OPSET, FuseAttention
from kiln.compiler.passes.fuse_gelu import GELU_OPSET, FuseGeluPass
from kiln.compiler.passes.fuse_layer_norm import LAYER_NORM_OPSET, FuseLayerNormPass
from kiln.compiler.passes.rule import CountingPass, RulePass
from kiln.compiler.passes.upgrade_opset import UpgradeOpsetPass, looks_like_transformer

if TYPE_CHECKING:
    from kiln.compiler.capabilities import BackendCaps



class TidyForTransformerRulesPass(CountingPass):
    """Give the transformer rules the graph shape they match on, on transformer graphs only.

    The opset converter leaves Constant nodes and Identities behind, and exporters leave
    attributes such as ReduceMean's ``keepdims`` implicit; the rules expect initializers and
    explicit attributes. CNN graphs are left exactly as they are.
    """

    def __init__(self) -> None:
        super().__init__()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fired = Counter()
        if not looks_like_transformer(model):
            return ir.passes.PassResult(model, modified=False)
        steps = {"lift constants": LiftConstantsToInitializersPass(lift_all_constants=True,
                                                                   size_limit=0),
                 "remove identities": EliminateIdentityPass(),
                 "explicit default attributes": AddDefaultAttributesPass()}
        for name, step in steps.items():
            if step(model).modified:
                self.fired[name] += 1
        return ir.passes.PassResult(model, modified=bool(self.fired))


def transformer_opset(caps: BackendCaps) -> int:
    """The default-domain opset transformer fusions raise a model to for ``caps``."""
    want = ATTENTION_OPSET if caps.standard_attention else GELU_OPSET
    return min(want, caps.max_opset)


def transformer_steps(caps: BackendCaps) -> list[tuple[str, ir.passes.PassBase]]:
    """Named steps fusing LayerNorm, GELU and attention for a backend with ``caps``."""
    version = transformer_opset(caps)
    if version < LAYER_NORM_OPSET or caps.fuses_norm_gelu and not caps.standard_attention:
        return []
    steps: list[tuple[str, ir.passes.PassBase]] = [
        ("upgrade-opset", UpgradeOpsetPass(version)),
        ("tidy-for-transformer-rules", TidyForTransformerRulesPass()),
    ]
    if not caps.fuses_norm_gelu:  # else the engine's load fuses them (attention is kiln's)
        steps.append(("fuse-layer-norm", FuseLayerNormPass()))
        if version >= GELU_OPSET:
            steps.append(("fuse-gelu", FuseGeluPass()))
    if caps.standard_attention and version >= ATTENTION_OPSET:
        steps.append(("fuse-attention", RulePass([FuseAttention()])))
    return steps
