"""Fold BatchNormalization into the Conv, ConvTranspose or Gemm that feeds it.

Inference BatchNormalization is a per-channel affine map. With ``s = gamma / sqrt(var + eps)``
(one entry per output channel c):

    BN(y)_c = gamma_c * (y_c - mean_c) / sqrt(var_c + eps) + beta_c
            = s_c * y_c + (beta_c - s_c * mean_c)

and the producer is linear in its weights, ``y_c = sum(W_c * x) + B_c``, so

    BN(y)_c = sum((s_c * W_c) * x) + s_c * (B_c - mean_c) + beta_c

i.e. ``W' = W * s`` along the output-channel axis (axis 0 for Conv, axis 1 per group for
ConvTranspose, the N axis of Gemm's B) and ``B' = s * (B - mean) + beta`` (B = 0 when absent;
Gemm's ``beta`` attribute is folded into B first). The rules are onnxscript's; their ``check``
refuses (and says why) when a parameter is not a constant initializer, is a graph input or is
shared with a node outside the match.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter.rules.common import _fuse_batchnorm as onnxscript_rules

from kiln.compiler.passes.rule import OnnxscriptRulesPass


class _ScalesWhenRead:
    """onnxscript's rule, with ``W * s`` computed when the folded tensor's values are read
    (``ir.LazyTensor``), not at the fold: the compile writes a large model's folded weights
    to a file (``runtime/weights.py``) a tensor at a time from a reused buffer, instead of
    first holding them all in fresh memory (light ResNet-50: 100 MB)."""

    def _scale_weights(self, weights: np.ndarray, scale_factor: np.ndarray,
                       attributes: Mapping[str, ir.Attr]) -> ir.LazyTensor:
        scale = super()._scale_weights  # type: ignore[misc]
        # in W's own type: BatchNormalization-15 lets its parameters be wider than the Conv
        # (float32 scale on float16 weights), and numpy would widen the product with them
        return ir.LazyTensor(
            lambda: ir.tensor(np.asarray(scale(weights, scale_factor, attributes),
                                         dtype=weights.dtype)),
            dtype=ir.DataType.from_numpy(weights.dtype), shape=ir.Shape(weights.shape))


# named as onnxscript's (the report counts firings by rule name)
class FuseBatchNormIntoConv(_ScalesWhenRead, onnxscript_rules.FuseBatchNormIntoConv):
    pass


class FuseBatchNormIntoConvTranspose(_ScalesWhenRead,
                                     onnxscript_rules.FuseBatchNormIntoConvTranspose):
    pass


class FuseBatchNormIntoGemm(_ScalesWhenRead, onnxscript_rules.FuseBatchNormIntoGemm):
    pass


# BatchNormalization(Conv(x, W, B))          -> Conv(x, W * s, s * (B - mean) + beta)
# BatchNormalization(ConvTranspose(x, W, B)) -> ConvTranspose(x, W * s, ...)
# BatchNormalization(Gemm(a, W, C))          -> Gemm(a, W * s, ...)
fuse_batchnorm_into_conv_rule = FuseBatchNormIntoConv.rule()
FUSE_BATCHNORM_RULES = [
    fuse_batchnorm_into_conv_rule,
    FuseBatchNormIntoConvTranspose.rule(),
    FuseBatchNormIntoGemm.rule(),
]


class FuseBatchNormPass(OnnxscriptRulesPass):
    """Fold every foldable BatchNormalization into its producer; with ``after_conv=False``,
    only those after a ConvTranspose or Gemm (an engine that folds Conv -> BatchNormalization
    itself at load gets those pairs as they are)."""

    def __init__(self, after_conv: bool = True) -> None:
        super().__init__(FUSE_BATCHNORM_RULES if after_conv
                         else [r for r in FUSE_BATCHNORM_RULES
                               if r is not fuse_batchnorm_into_conv_rule])
