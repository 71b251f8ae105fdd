"""Pass pipelines per optimization level, read top to bottom, and ``optimize`` to run one.

    O0  import only: the model as the frontend produced it.
    O1  cleanup: constant folding (ConstantOfShape and Shape arithmetic included), identity and
        no-op removal, CSE, dead-code removal.
    O2  the default: O1 + fusions (BatchNorm folding, affine folding, chain collapsing,
        MatMul+Add -> Gemm, transformer patterns, Conv/Gemm epilogues), then whatever the
        backend cannot run expanded back to standard ONNX. A backend whose engine folds
        Conv -> BatchNormalization itself at load (``caps.folds_conv_batchnorm``) gets those
        pairs unfolded: the engine's graph is the same, the compile computes no weights.
        One whose load cleans up (``caps.cleans_up_at_load``) gets no ``ENGINE_CLEANUP_STEPS``
        and no ``ENGINE_CHAIN_RULES``.
    O1, O2 and O3 also write the graph in the backend's own kernel ops when its caps list them
        (``kernel_steps``): Q/DQ regions as the int8 ops (before the epilogue fusion, which
        would otherwise take a Conv -> Relu out of its Q/DQ region), BatchNormalization ->
        Relu as one op (after the conv prologue, which takes that pair first).
    O3  accepted, and today the same as O2: the layout and precision choices for a target are
        made by the backends from the ``Target`` they are given (graph hints no backend read
        were removed).

What a pipeline may emit depends on the backend's ``BackendCaps`` and on the ``Target``; the
compiler never imports a backend. A graph the reduction step (quantization) rewrote gets
``after_reduction``: the kernel steps and the finish, so a reduced model reaches the kernels.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import onnx_ir as ir
from onnx_ir.passes import common
from onnxscript.rewriter import rules as osr

from kiln.compiler.capabilities import STANDARD_ONNX, BackendCaps
from kiln.compiler.graph_index import GRAPH_INDEX, GraphIndex
from kiln.compiler.passes.cancel_transposes import (
    CancelInverseTranspose,
    CancelTransposePair,
    SinkLayoutTranspose,
)
from kiln.compiler.passes.cleanup import (
    ConstantInitializersPass,
    CsePass,
    EliminateIdentityPass,
    RemoveUnusedPass,
    SortPass,
)
from kiln.compiler.passes.expand_kiln_ops import ExpandKilnOpsPass
from kiln.compiler.passes.factor_scaled_residual import FactorScaledResidualPass
from kiln.compiler.passes.fold_affine import FOLD_AFFINE_RULES
from kiln.compiler.passes.fold_constants import FoldConstantsPass
from kiln.compiler.passes.fuse_batchnorm import FuseBatchNormPass
from kiln.compiler.passes.fuse_conv_prologue import FuseConvPrologue
from kiln.compiler.passes.fuse_epilogue import (
    FuseBatchNormEpilogue,
    FuseConvEpilogue,
    FuseGemmEpilogue,
    FuseMatMulBiasEpilogue,
)
from kiln.compiler.passes.fuse_hard_activations import (
    HARD_SWISH_OPSET,
    FuseHardActivationsPass,
    needs_hard_swish_opset,
)
from kiln.compiler.passes.fuse_int8 import HandOverInt8Nhwc, int8_rules
from kiln.compiler.passes.fuse_transformer import transformer_steps
from kiln.compiler.passes.nhwc_layout import HandOverF32Nhwc
from kiln.compiler.passes.normalize import NORMALIZE_RULES, RemoveWholeSlice
from kiln.compiler.passes.rule import CountingPass, OnnxscriptRulesPass, RulePass
from kiln.compiler.passes.upgrade_opset import UpgradeOpsetPass
from kiln.compiler.report import CompileReport, PassRecord, ops_delta

if TYPE_CHECKING:
    from kiln.compiler.target import Target

LEVELS = (0, 1, 2, 3)
DEFAULT_LEVEL = 2

Step = tuple[str, ir.passes.PassBase]

#: why a shape-inference step did not run (``run_steps``)
_SHAPES_CURRENT = "shapes as the last shape inference left them"

_common = osr.common

# x -> x rewrites that only delete work. onnxscript's add_0/mul_by_1 rules are left out on
# purpose: they compare with a tolerance, so they delete a LayerNorm's "+ 1e-12" epsilon.
_NO_OP_RULES = [
    _common.no_op_cast_rule,
    _common.no_op_expand_rule,
    _common.no_op_transpose_rule,
    _common.dropout_inference_rule,
    _common.dropout_zero_rule,
]

# chains of layout ops collapsed into one (or none)
_CHAIN_RULES = [
    _common.transpose_transpose_rule,     # Transpose(Transpose(x, p), q) -> Transpose(x, p∘q)
    _common.reshape_reshape_rule,         # Reshape(Reshape(x, s), t)     -> Reshape(x, t)
    _common.unsqueeze_unsqueeze_rule,     # Unsqueeze(Unsqueeze(x))       -> Unsqueeze(x)
    _common.cast_cast_rule,               # Cast(Cast(x))                 -> Cast(x) when exact
    _common.squeeze_reshape_1d_rule,      # Reshape(Squeeze(x)) of 1-D    -> x
    _common.flatten_to_reshape_rule,      # Flatten of known shape        -> Reshape
]

#: Chains an engine that cleans up at its load (``caps.cleans_up_at_load``) collapses itself:
#: onnxruntime's and OpenVINO's optimized graphs were the same with and without kiln's
#: collapsing them on the 18 real models of the cache (MiniLM-L6, YOLOv8n, light ResNet-50,
#: PP-OCRv4, ddddocr, silero, openwakeword, ...); they cost MiniLM-L6's compile ~15 ms. The
#: Unsqueeze and Flatten rules stay: onnxruntime kept MiniLM-L6's three Unsqueeze pairs and
#: its Flatten without them.
ENGINE_CHAIN_RULES = (_common.transpose_transpose_rule, _common.reshape_reshape_rule,
                      _common.cast_cast_rule, _common.squeeze_reshape_1d_rule)

# Add(MatMul(a, b), c) -> Gemm(a, b, c) when a and b are 2-D
_GEMM_RULES = [
    _common.matmul_add_to_gemm_rule,
    _common.transpose_a_matmul_add_to_gemm_rule,
    _common.transpose_b_matmul_add_to_gemm_rule,
    _common.transpose_ab_matmul_add_to_gemm_rule,
]


def _o1() -> list[Step]:
    return [
        ("constant-initializers", ConstantInitializersPass()),
        ("normalize", RulePass(NORMALIZE_RULES, keeps_shapes=True)),
        ("fold-constants", FoldConstantsPass()),
        ("eliminate-identity", EliminateIdentityPass()),
        ("remove-no-ops", OnnxscriptRulesPass(_NO_OP_RULES, keeps_shapes=True)),
        ("remove-whole-slices", RulePass([RemoveWholeSlice()], keeps_shapes=True)),
        ("cse", CsePass()),
        ("remove-unused", RemoveUnusedPass()),
        ("infer-shapes", common.ShapeInferencePass(strict_mode=False)),
    ]


def _int8_steps(caps: BackendCaps) -> list[Step]:
    rules = int8_rules(caps)
    if not rules:
        return []
    return [("fuse-int8", RulePass(rules)),
            ("int8-layout", RulePass([HandOverInt8Nhwc()]))]


def _batchnorm_relu_steps(caps: BackendCaps) -> list[Step]:
    if not caps.runs("FusedBatchNorm"):
        return []
    return [("fuse-batchnorm-relu", RulePass([FuseBatchNormEpilogue()]))]


def kernel_steps(caps: BackendCaps) -> list[Step]:
    """The rules that write a graph in the backend's own kernel ops (int8 ops and their
    layouts, BatchNormalization -> Relu), when ``caps`` lists those ops."""
    return _int8_steps(caps) + _batchnorm_relu_steps(caps)


def _hard_swish_opset_steps(caps: BackendCaps) -> list[Step]:
    """Models below opset 14 that hold a hard-swish move to 14, where it is one HardSwish op,
    when the backend imports opset 14."""
    if caps.max_opset < HARD_SWISH_OPSET:
        return []
    return [("upgrade-opset-hard-swish",
             UpgradeOpsetPass(HARD_SWISH_OPSET, applies=needs_hard_swish_opset,
                              not_applying="no hard-swish below opset 14"))]


def _fusions(target: Target | None, caps: BackendCaps) -> list[Step]:
    epilogue = [rule for rule, op in ((FuseConvEpilogue(), "FusedConv"),
                                      (FuseGemmEpilogue(), "FusedGemm"),
                                      (FuseMatMulBiasEpilogue(), "FusedGemm")) if caps.runs(op)]
    # Conv -> BatchNormalization pairs are left to an engine that folds them at its load
    after_conv = not caps.folds_conv_batchnorm
    chains = [rule for rule in _CHAIN_RULES
              if not (caps.cleans_up_at_load and rule in ENGINE_CHAIN_RULES)]
    # NHWC round trips around convolutions (converted Caffe/TF graphs): engines that clean
    # up at their own load remove them; kiln's native engine would run them
    cancel = ([("cancel-transposes", RulePass([CancelTransposePair(), CancelInverseTranspose(),
                                               SinkLayoutTranspose()], max_rounds=256))]
              if caps.runs("FusedConv") else [])
    steps: list[Step] = [
        *cancel,
        ("fuse-batchnorm", FuseBatchNormPass(after_conv)),
        *_hard_swish_opset_steps(caps),
        # before fold-affine, which would otherwise fold relu6(x + 3)'s "+ 3" into a Conv bias
        ("fuse-hard-activations", FuseHardActivationsPass()),
        ("factor-scaled-residual", FactorScaledResidualPass()),
        ("matmul-add-to-gemm", OnnxscriptRulesPass(_GEMM_RULES)),
        ("fold-affine", RulePass(FOLD_AFFINE_RULES)),
        ("fuse-batchnorm-again", FuseBatchNormPass(after_conv)),
        *transformer_steps(caps),
        ("collapse-chains", OnnxscriptRulesPass(chains)),
        *_int8_steps(caps),
    ]
    if epilogue:
        steps.append(("fuse-epilogue", RulePass(epilogue)))
    if caps.conv_prologue and caps.runs("FusedConv"):
        steps.append(("fuse-conv-prologue", RulePass([FuseConvPrologue()])))
    if caps.f32_nhwc and caps.runs("FusedConv"):
        steps.append(("f32-layout", RulePass([HandOverF32Nhwc()])))
    steps += _batchnorm_relu_steps(caps)
    return steps


def _finish(caps: BackendCaps) -> list[Step]:
    return [
        ("expand-kiln-ops", ExpandKilnOpsPass(keep=caps.kiln_ops)),
        ("remove-unused-final", RemoveUnusedPass()),
        # No initializer dedup: a constant shared by two layers is one the engines will not
        # fold into each layer. onnxruntime then skips prepacking a shared Conv weight (light
        # ResNet-50 ran ~10 % slower) and OpenVINO leaves shared Conv biases unfused (light
        # ShuffleNet 2.60 vs 2.39 ms, merged vs not).
        ("sort", SortPass()),
    ]


#: Steps an engine that cleans up at its own load (``caps.cleans_up_at_load``) does itself.
#: onnxruntime's optimized graph was the same with and without them on the eleven real models
#: tried (MiniLM-L6, YOLOv8n, light ResNet-50, the PP-OCRv4 and ddddocr models, ...); they
#: cost MiniLM-L6's compile ~25 ms. Not among them: fold-constants (PP-OCRv4's detector ended
#: at 400 onnxruntime nodes instead of 238 without it: its folds feed kiln's fusions) and
#: normalize (onnxruntime keeps a Sum of two as Sum).
ENGINE_CLEANUP_STEPS = frozenset({"eliminate-identity", "remove-no-ops", "remove-whole-slices",
                                  "cse", "remove-unused", "matmul-add-to-gemm"})


def build_pipeline(level: int, target: Target | None = None,
                   caps: BackendCaps = STANDARD_ONNX) -> list[Step]:
    """The named passes of optimization ``level`` for ``target`` and ``caps``, in order."""
    if level not in LEVELS:
        raise ValueError(f"optimization level must be one of {LEVELS}, got {level}")
    if level == 0:
        return []
    steps = _o1()
    steps += _fusions(target, caps) if level >= 2 else kernel_steps(caps)
    steps += _finish(caps)
    if caps.cleans_up_at_load:
        steps = [step for step in steps if step[0] not in ENGINE_CLEANUP_STEPS]
    return steps


def after_reduction(level: int, caps: BackendCaps) -> list[Step]:
    """The named passes for a graph the reduction step rewrote (its quantized regions,
    BatchNormalization -> Relu pairs): the backend's kernel steps, then the finish."""
    if level not in LEVELS:
        raise ValueError(f"optimization level must be one of {LEVELS}, got {level}")
    return [] if level == 0 else kernel_steps(caps) + _finish(caps)


def optimize(model: ir.Model, level: int = DEFAULT_LEVEL, target: Target | None = None,
             caps: BackendCaps = STANDARD_ONNX, shapes_inferred: bool = False
             ) -> tuple[ir.Model, CompileReport]:
    """Run the level's pipeline on ``model`` in place; returns it with the compile report.
    ``shapes_inferred``: the model's shapes are as onnx's inference gives them (the frontend
    imported it and nothing changed it since); see ``run_steps``."""
    steps = build_pipeline(level, target, caps)
    report = CompileReport(level=level, target=str(target) if target is not None else "any",
                           backend=caps.name, pipeline=[])
    index = GraphIndex(model)
    report.nodes_before = index.histogram.total()
    report.ops_before = dict(index.histogram)
    return run_steps(model, steps, report, shapes_inferred, index), report


def optimize_reduced(model: ir.Model, report: CompileReport, caps: BackendCaps) -> ir.Model:
    """Run ``after_reduction`` for ``caps`` on a reduced ``model`` in place, appending its
    passes to ``report`` (the report of the ``optimize`` before the reduction)."""
    report.backend = caps.name
    return run_steps(model, after_reduction(report.level, caps), report)


#: onnx_ir's passes that leave every value's type and shape as they were: they merge or
#: remove nodes, and make no value
_SHAPE_KEEPING_PASSES = (common.CommonSubexpressionEliminationPass,
                         common.RemoveUnusedNodesPass)


def keeps_shapes(step: ir.passes.PassBase) -> bool:
    """Whether ``step`` leaves every value's type and shape as onnx's inference would give
    them (kiln's passes say so with ``keeps_shapes``; see ``CountingPass``)."""
    return bool(getattr(step, "keeps_shapes", False)) or \
        isinstance(step, _SHAPE_KEEPING_PASSES)


def run_steps(model: ir.Model, steps: list[Step], report: CompileReport,
              shapes_inferred: bool = False, index: GraphIndex | None = None) -> ir.Model:
    """Run ``steps`` in order on ``model``, recording each in ``report``. A shape-inference
    step is skipped while the shapes are as the last inference left them
    (``shapes_inferred`` at the start, then every step since that reported a change
    ``keeps_shapes``): it would infer the same shapes again.

    The passes find the graph's ``GraphIndex`` (``index``: one of ``model`` as it is, or
    None) in ``model.meta`` while it holds: it is walked again only after a pass that
    reports a change (passes state ``modified`` honestly), and leaves the meta at the end."""
    report.pipeline += [name for name, _ in steps]
    index = index or GraphIndex(model)
    try:
        for name, step in steps:
            hist = index.histogram
            if shapes_inferred and isinstance(step, common.ShapeInferencePass):
                report.passes.append(PassRecord(
                    name=name, seconds=0.0, nodes_before=hist.total(),
                    nodes_after=hist.total(), modified=False, rejected={_SHAPES_CURRENT: 1}))
                continue
            model.meta[GRAPH_INDEX] = index
            start = time.perf_counter()
            result = step(model)
            seconds = time.perf_counter() - start
            model.meta.pop(GRAPH_INDEX, None)
            # one walk gives the op deltas, the node counts and what the next passes look
            # for; a pass that reports no change leaves them as they were
            if result.modified or result.model is not model:
                index = GraphIndex(result.model)
            model = result.model
            counts = isinstance(step, CountingPass)  # onnx_ir's own passes count nothing
            report.passes.append(PassRecord(
                name=name, seconds=seconds, nodes_before=hist.total(),
                nodes_after=index.histogram.total(), modified=bool(result.modified),
                fired=dict(step.fired) if counts else {},
                rejected=dict(step.rejected) if counts else {},
                ops_delta=ops_delta(hist, index.histogram)))
            if result.modified and not keeps_shapes(step):
                shapes_inferred = False
            if isinstance(step, common.ShapeInferencePass):
                shapes_inferred = True
    finally:
        model.meta.pop(GRAPH_INDEX, None)
    report.nodes_after = index.histogram.total()
    report.ops_after = dict(index.histogram)
    return model
