"""The transformer fusions, in the order they must run: opset, LayerNorm, GELU, attention.

The opset the graph is raised to depends on the backend: 23 when it runs ONNX Attention,
else 20 (Gelu) capped by what the backend imports; below 17 (LayerNormalization) nothing
is fused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnx_ir.passes.common import (
    AddDefaultAttributesPass,
    IdentityEliminationPass,
    LiftConstantsToInitializersPass,
)

from kiln.compiler.passes.fuse_attention import ATTENTION_OPSET, FuseAttention
from kiln.compiler.passes.fuse_gelu import GELU_OPSET, FuseGeluPass
from kiln.compiler.passes.fuse_layer_norm import LAYER_NORM_OPSET, FuseLayerNormPass
from kiln.compiler.passes.rule import RulePass
from kiln.compiler.passes.upgrade_opset import UpgradeOpsetPass

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.capabilities import BackendCaps



def transformer_opset(caps: BackendCaps) -> int:
    """The default-domain opset transformer fusions raise a model to for ``caps``."""
    want = ATTENTION_OPSET if caps.standard_attention else GELU_OPSET
    return min(want, caps.max_opset)


def transformer_steps(caps: BackendCaps) -> list[tuple[str, ir.passes.PassBase]]:
    """Named steps fusing LayerNorm, GELU and attention for a backend with ``caps``."""
    version = transformer_opset(caps)
    if version < LAYER_NORM_OPSET:
        return []
    steps: list[tuple[str, ir.passes.PassBase]] = [
        ("upgrade-opset", UpgradeOpsetPass(version)),
        # the converter leaves Constant nodes, Identities and implicit defaults (keepdims)
        ("lift-constants", LiftConstantsToInitializersPass(lift_all_constants=True,
                                                          size_limit=0)),
        ("eliminate-identity-again", IdentityEliminationPass()),
        ("add-default-attributes", AddDefaultAttributesPass()),
        ("fuse-layer-norm", FuseLayerNormPass()),
    ]
    if version >= GELU_OPSET:
        steps.append(("fuse-gelu", FuseGeluPass()))
    standard = caps.standard_attention and version >= ATTENTION_OPSET
    if standard or caps.runs("Attention"):
        steps.append(("fuse-attention", RulePass([FuseAttention(standard)])))
    return steps
