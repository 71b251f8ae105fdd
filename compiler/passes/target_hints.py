"""O3: choices made for the target machine, written as node metadata a backend may honour.

- Layout: a backend that consumes channel-blocked tensors gets Conv/FusedConv nodes marked
  ``kiln.layout = NCHW16c`` when the target has AVX-512F (16 fp32 lanes) and ``NCHW8c`` with
  AVX2 (8 lanes); with neither, or channels not a multiple of the block, nothing is marked.
- Precision: ``kiln.bf16 = allowed`` on the model when the target has avx512_bf16 or AMX, so a
  backend asked for bf16 knows the hardware does it natively (kiln never picks bf16 silently).

Metadata never changes what standard ONNX computes, so every backend can still run the graph.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import onnx_ir as ir

from kiln.compiler.capabilities import BackendCaps

if TYPE_CHECKING:
    from kiln.compiler.target import Target

_BLOCKS = (("avx512f", "NCHW16c", 16), ("avx2", "NCHW8c", 8))


def blocked_layout(target: Target | None, caps: BackendCaps) -> tuple[str, int] | None:
    """The channel-blocked layout for ``target`` the backend accepts, as (name, block)."""
    if target is None or getattr(target, "kind", "cpu") != "cpu":
        return None
    for feature, layout, block in _BLOCKS:
        if target.has(feature) and layout in caps.blocked_layouts:
            return layout, block
    return None


class TargetHintsPass(ir.passes.InPlacePass):
    """Annotate layout and precision choices for ``target``."""

    def __init__(self, target: Target | None, caps: BackendCaps) -> None:
        super().__init__()
        self.target = target
        self.caps = caps
        self.fired: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fired = Counter()
        self.rejected = Counter()
        layout = blocked_layout(self.target, self.caps)
        for node in model.graph:
            if node.op_type not in ("Conv", "FusedConv") or layout is None:
                continue
            w_value = node.inputs[1] if len(node.inputs) > 1 else None
            weight = w_value.const_value if w_value is not None else None
            channels = weight.shape[0] if weight is not None else None
            if not isinstance(channels, int) or channels % layout[1]:
                self.rejected[f"{layout[0]}: output channels {channels} not a multiple of "
                              f"{layout[1]}"] += 1
                continue
            if node.metadata_props.get("kiln.layout") != layout[0]:
                node.metadata_props["kiln.layout"] = layout[0]
                self.fired[f"layout {layout[0]}"] += 1
        if self.target is not None and (self.target.has("avx512_bf16") or self.target.has("amx")):
            if model.metadata_props.get("kiln.bf16") != "allowed":
                model.metadata_props["kiln.bf16"] = "allowed"
                self.fired["bf16 allowed"] += 1
        return ir.passes.PassResult(model, modified=bool(self.fired))
