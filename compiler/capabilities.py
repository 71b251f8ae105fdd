"""What a backend tells the compiler about itself, as plain data.

The compiler never imports a backend (data flows one way). A backend describes what it can
run with a ``BackendCaps`` value and hands it to ``optimize``; pipelines read it to decide,
for example, whether fused kiln-domain ops stay fused or are expanded back to standard ONNX.
"""

from __future__ import annotations

import dataclasses

#: Ops in the "kiln" domain that passes may emit. Backends that do not list one of them get it
#: expanded back into standard ONNX by ``ExpandKilnOpsPass``.
KILN_DOMAIN = "kiln"
#: The float ops' contracts are in fuse_epilogue.py / fuse_conv_prologue.py, the int8 ops'
#: (QGemm, QConv, QConvTranspose, QMaxPool) in fuse_int8.py.
KILN_OPS = frozenset({"FusedConv", "FusedGemm", "FusedBatchNorm", "QGemm", "QConv",
                      "QConvTranspose", "QMaxPool"})
#: Which convolutions a kiln::QConv runs (``BackendCaps.qconv_groups``), narrowest first: each
#: kind also runs the ones before it. "one": group == 1; "depthwise": also group == input
#: channels == output channels (one filter per channel); "any": every grouped convolution.
QCONV_GROUPS = ("one", "depthwise", "any")


@dataclasses.dataclass(frozen=True)
class BackendCaps:
    """Capabilities of the backend a model is compiled for.

    name:               backend name, recorded in reports and artifacts.
    kiln_ops:           kiln-domain ops the backend executes natively (subset of KILN_OPS).
    standard_attention: the backend runs the standard ONNX ``Attention`` op (opset 23).
    max_opset:          highest default-domain opset the backend imports.
    precision_hints:    reduced precisions the engine applies by itself to a float graph
                        (OpenVINO's fp16/bf16 inference hint); others must be in the graph.
    conv_prologue:      the backend's kiln::FusedConv takes a per-channel affine prologue
                        (inputs 5 and 6, attribute ``prologue``); see fuse_conv_prologue.py.
    qconv_groups:       which grouped convolutions the backend's kiln::QConv runs, one of
                        ``QCONV_GROUPS``; fuse-int8 leaves the others in Q/DQ form.
    int8_activations:   activations the kiln::QGemm / QConv epilogue applies (attribute
                        ``activation``); fuse-int8 absorbs only these.
    int8_byte_table:    the kiln::QGemm / QConv with a u8 result take a 256-entry byte table
                        (input 8) applied to each result byte; fuse-int8 then folds a chain
                        of scalar elementwise ops between two quantizations into it.
    dynamic_int8:       how dynamic int8 should reach it: "integer" (DynamicQuantizeLinear +
                        MatMulInteger) or "weights" (int8 weights behind DequantizeLinear,
                        activations quantized by the engine at run time).
    static_int8:        where static int8 puts its Q/DQ pairs: "chained" (inputs and outputs
                        of int8 ops; engines that chain integer kernels) or "inputs" (only
                        where an int8 op reads; OpenVINO folds the float ops after a Conv
                        into it). See kiln.compiler.passes.quantize.
    f32_nhwc:           the backend's kiln::FusedConv reads and writes float activations in
                        NHWC (``kiln_layout_in`` / ``_out`` / ``_residual``); the compiler
                        then hands them from conv to conv so (nhwc_layout.py).
    fuses_norm_gelu:    the engine finds LayerNorm and GELU written in plain ops itself when
                        it loads a model, to the same compiled graph as from kiln's fused
                        ops; kiln then leaves them, and the opset upgrade they need, to it
                        (attention, when ``standard_attention``, is still kiln's).
    folds_conv_batchnorm: the engine folds a BatchNormalization that follows a Conv into the
                        Conv's weights itself when it loads a model, to the same compiled
                        graph; kiln's fuse-batchnorm then leaves Conv -> BatchNormalization
                        pairs to it (and computes, holds and writes no folded weights).
    cleans_up_at_load:  the engine's own load removes Identity / Dropout / no-op nodes and
                        unused ones, merges common subexpressions and writes MatMul + Add as
                        Gemm, to the same compiled graph whether or not kiln did: kiln's
                        steps for these (``ENGINE_CLEANUP_STEPS`` in pipeline.py) are left
                        to it. Constant folding stays kiln's: later fusions match on what it
                        folds.
    """

    name: str = "onnx"
    kiln_ops: frozenset[str] = frozenset()
    standard_attention: bool = False
    max_opset: int = 21
    precision_hints: frozenset[str] = frozenset()
    dynamic_int8: str = "integer"
    conv_prologue: bool = False
    qconv_groups: str = "one"
    int8_activations: frozenset[str] = frozenset()
    int8_byte_table: bool = False
    static_int8: str = "chained"
    fuses_norm_gelu: bool = False
    folds_conv_batchnorm: bool = False
    cleans_up_at_load: bool = False
    f32_nhwc: bool = False

    def __post_init__(self) -> None:
        if self.qconv_groups not in QCONV_GROUPS:
            raise ValueError(f"qconv_groups must be one of {QCONV_GROUPS}, "
                             f"got {self.qconv_groups!r}")

    def runs(self, op_type: str) -> bool:
        """Whether the backend runs the kiln-domain op ``op_type``."""
        return op_type in self.kiln_ops

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "kiln_ops": sorted(self.kiln_ops),
                "standard_attention": self.standard_attention, "max_opset": self.max_opset,
                "precision_hints": sorted(self.precision_hints),
                "dynamic_int8": self.dynamic_int8, "conv_prologue": self.conv_prologue,
                "qconv_groups": self.qconv_groups,
                "int8_activations": sorted(self.int8_activations),
                "int8_byte_table": self.int8_byte_table,
                "static_int8": self.static_int8, "fuses_norm_gelu": self.fuses_norm_gelu,
                "folds_conv_batchnorm": self.folds_conv_batchnorm,
                "cleans_up_at_load": self.cleans_up_at_load, "f32_nhwc": self.f32_nhwc}


#: Caps of a backend that runs plain ONNX and nothing of kiln's (the safe default).
STANDARD_ONNX = BackendCaps()
