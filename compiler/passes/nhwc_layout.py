"""Float activations handed from one kiln::FusedConv to the next in NHWC.

The native implicit-GEMM convolution computes its tile with output pixels in rows and output
channels in vector lanes: an NHWC tile. Stored as it is (no transpose into NCHW planes) and
read by the next convolution in place (a 1x1 conv in NHWC is then a plain GEMM,
A = X[HW, C]), the value between two such convolutions never takes the NCHW detour:

    FusedConv(x) -> y -> FusedConv(y, ...)           y  [N, C, H, W]
    FusedConv(x, kiln_layout_out="NHWC") -> y'
        -> FusedConv(y', kiln_layout_in="NHWC")      y' [N, H, W, C] = transpose(y, 0, 2, 3, 1)

A FusedConv whose result only such convolutions read (as X, input 0, or as the residual,
input 3) writes NHWC; each reader says which of its inputs come so (``kiln_layout_in``,
``kiln_layout_residual``). A graph output or any other reader keeps the value NCHW, so the
layout never leaks out of a chain. The attributes mean what they mean on the int8 ops
(``HandOverInt8Nhwc`` in fuse_int8.py); ``ExpandKilnOpsPass`` writes them back as Transposes.

Which convolutions take part (``hands_over_nhwc``): one group, 2-D, constant weights, no
input prologue, at least MIN_OUT_CHANNELS outputs, and a 1x1 kernel or a stride above 1. A
kxk (k > 1) stride-1 conv stays NCHW: there Winograd or the NCHW implicit GEMM (rows
consecutive in a plane) measured faster than reading NHWC. A conv reading NCHW planes larger
than MAX_PIXELS_FROM_NCHW keeps writing NCHW.

A depthwise conv (weights [C, 1, kh, kw], C groups, at least MIN_DEPTHWISE_CHANNELS) takes
part inside a chain only: it reads NHWC from a member and every reader of its result is a
pointwise member, so the chains of a mobile net (1x1 -> depthwise -> 1x1 ...) stay NHWC
through their depthwise convs, which then run with the channels in vector lanes. A pointwise
conv whose result a depthwise member reads starts a chain from NCHW planes of any size
(``_refuses_to_start``).
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.compiler.capabilities import KILN_DOMAIN
from kiln.compiler.passes._util import attr, depthwise_weights, is_onnx
from kiln.compiler.passes.rule import Match, Rule

#: the layout attributes of kiln's image ops (float FusedConv and the int8 ops alike)
LAYOUT_IN, LAYOUT_OUT, LAYOUT_RESIDUAL = "kiln_layout_in", "kiln_layout_out", \
    "kiln_layout_residual"
NCHW, NHWC = "NCHW", "NHWC"
#: FusedConv inputs that may come in NHWC, and the attribute that says so
_READ_AS = {0: LAYOUT_IN, 3: LAYOUT_RESIDUAL}
#: Output channels are the NHWC tile's vector lanes (32 wide with AVX-512): below 64 a tile
#: leaves lanes idle that the NCHW layout (pixels in lanes) fills. A mobile text detector and
#: classifier (PP-OCR, 16-96 channels) ran 3-7% slower with every group-1 1x1 handing over.
MIN_OUT_CHANNELS = 64
#: A depthwise conv in NHWC puts its channels in vector lanes (16 with AVX-512), read in place:
#: from 16 channels on it ran 1.2-1.7x its NCHW plane kernels (3x3, any stride, 28x28 to
#: 400x304; 5x5 at stride 2) and 0.9-1.2x on 5x5 stride 1 (Zen 4, one thread).
MIN_DEPTHWISE_CHANNELS = 16
#: A conv reading NCHW planes of more pixels than this keeps writing NCHW: in ResNet-50 (one
#: thread, in the model) its 64 -> 256 1x1 convs reading 56x56 planes took 1.14x their
#: all-NCHW time writing NHWC, its 256 -> 512 1x1 stride 2 on 56x56 1.8x (read through
#: stride phases instead of im2col's gather); 128 -> 512 on 28x28 planes the same time.
MAX_PIXELS_FROM_NCHW = 28 * 28
#: weight types numpy calls float (what the rule took before it read types without values)
_FLOATS = (ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE)


def _pixels(value: ir.Value | None) -> int:
    """Pixels of an NCHW image value (0 when its height or width is not static; a symbolic
    batch does not hide them)."""
    if value is None or value.shape is None or len(value.shape) != 4:
        return 0
    height, width = value.shape[2], value.shape[3]
    return height * width if isinstance(height, int) and isinstance(width, int) else 0


def _is_depthwise(node: ir.Node, weights: ir.Shape) -> bool:
    """Depthwise over more than one channel (weights [C, 1, kh, kw] with C > 1 groups)."""
    groups = int(attr(node, "group", 1))  # type: ignore[call-overload]
    return groups > 1 and depthwise_weights(groups, weights)


def _constant_weights(node: ir.Node) -> ir.TensorProtocol | None:
    """A conv's weights when they are a constant (their shape and type read without loading
    their values)."""
    held = node.inputs[1] if len(node.inputs) > 1 else None
    return held.const_value if held is not None and not held.is_graph_input() else None


def _depthwise_node(node: ir.Node) -> bool:
    weights = _constant_weights(node)
    return weights is not None and len(weights.shape) == 4 and \
        _is_depthwise(node, weights.shape)


def _pointwise_member(node: ir.Node) -> bool:
    """``hands_over_nhwc`` for a conv that is not depthwise."""
    return not _depthwise_node(node) and hands_over_nhwc(node)


def hands_over_nhwc(node: ir.Node) -> bool:
    """Whether ``node`` is a kiln::FusedConv (or a Conv, which becomes one) that reads and
    writes NHWC at a profit."""
    fused = node.domain == KILN_DOMAIN and node.op_type == "FusedConv"
    if not (fused or is_onnx(node, "Conv")) or len(node.inputs) < 2:
        return False
    weights = _constant_weights(node)
    if weights is None or len(weights.shape) != 4 or weights.dtype not in _FLOATS:
        return False
    if attr(node, "prologue", ""):  # the NCHW 1x1 GEMM applies it while packing its input
        return False
    if _is_depthwise(node, weights.shape):
        # inside a chain only: its readers take NHWC too, so it never pays a transpose of its
        # own output (one over 512 x 25 x 19 took as long as the 5x5 conv)
        out = node.outputs[0]
        return weights.shape[0] >= MIN_DEPTHWISE_CHANNELS and not out.is_graph_output() and \
            bool(out.uses()) and all(_pointwise_member(use.node) and use.idx in _READ_AS
                                     for use in out.uses())
    if int(attr(node, "group", 1)) != 1:  # type: ignore[call-overload]
        return False
    if weights.shape[0] < MIN_OUT_CHANNELS:
        return False
    kernel = tuple(weights.shape[2:])
    strides = tuple(attr(node, "strides", (1, 1)))  # type: ignore[call-overload]
    return kernel == (1, 1) or any(s > 1 for s in strides)


def _refuses_to_start(node: ir.Node, out: ir.Value) -> str | None:
    """Why ``node``, reading NCHW, does not start a chain (None: it does). A depthwise conv
    only joins one: starting one itself (its NCHW input or its output transposed) gained
    nothing on the mobile models tried. A pointwise conv starts one from planes of any size
    when a depthwise member reads its result (a mobile net's separable block: PP-LCNet 0.965x,
    PicoDet 0.98x, PP-OCRv4 det 0.98x, one thread, medians of 8 rounds in one process), else
    from planes up to MAX_PIXELS_FROM_NCHW."""
    if _depthwise_node(node):
        return "a depthwise conv does not start an NHWC chain"
    pixels = _pixels(node.inputs[0])
    if pixels <= MAX_PIXELS_FROM_NCHW or any(
            _depthwise_node(use.node) and hands_over_nhwc(use.node) for use in out.uses()):
        return None
    return f"it reads NCHW planes of {pixels} pixels (NHWC from NCHW pays up to " \
           f"{MAX_PIXELS_FROM_NCHW})"


class HandOverNhwc(Rule):
    """The shape of every NHWC hand-over rule (float here, u8 in fuse_int8.py): a node that
    ``takes_part`` and still writes NCHW, whose result something reads, is a candidate; the
    subclass's ``check`` says whether all its readers read NHWC."""

    def takes_part(self, node: ir.Node) -> bool:
        raise NotImplementedError

    def match(self, node: ir.Node) -> Match | None:
        if not self.takes_part(node) or attr(node, LAYOUT_OUT, NCHW) == NHWC:
            return None
        out = node.outputs[0]
        if not out.uses() and not out.is_graph_output():
            return None
        return Match(node, [node])


class HandOverF32Nhwc(HandOverNhwc):
    """A FusedConv whose float result only NHWC-reading FusedConvs read (as X or residual)
    writes it in NHWC, and they read it so."""

    name = "HandOverF32Nhwc"
    ops = frozenset({"Conv", "FusedConv"})  # ``hands_over_nhwc``

    def takes_part(self, node: ir.Node) -> bool:
        return hands_over_nhwc(node)

    def check(self, match: Match) -> str | None:
        node = match.root
        out = node.outputs[0]
        if out.is_graph_output():
            return "the result is a graph output"
        if attr(node, LAYOUT_IN, NCHW) != NHWC:
            refused = _refuses_to_start(node, out)
            if refused:
                return refused
        for use in out.uses():
            if not hands_over_nhwc(use.node):
                return f"the result is read by {use.node.op_type} " \
                       f"{use.node.name or ''}, which reads NCHW".replace("  ", " ")
            if use.idx not in _READ_AS:
                return f"the result is input {use.idx} of {use.node.op_type}"
        return None

    def rewrite(self, graph: ir.Graph, match: Match) -> None:
        node = _as_fused(graph, match.root)
        node.attributes[LAYOUT_OUT] = ir.AttrString(LAYOUT_OUT, NHWC)
        out = node.outputs[0]
        for use in list(out.uses()):
            reader = _as_fused(graph, use.node)
            key = _READ_AS[use.idx]
            reader.attributes[key] = ir.AttrString(key, NHWC)
        if out.shape is not None and len(out.shape) == 4:
            dims = list(out.shape)
            out.shape = ir.Shape([dims[0], dims[2], dims[3], dims[1]])


def _as_fused(graph: ir.Graph, node: ir.Node) -> ir.Node:
    """``node`` itself if it is a kiln::FusedConv, else the FusedConv (no epilogue) that
    replaces the Conv ``node`` in ``graph``: only kiln's op carries the layout attributes."""
    if node.domain == KILN_DOMAIN:
        return node
    fused = ir.node("FusedConv", list(node.inputs), attributes=dict(node.attributes),
                    domain=KILN_DOMAIN, name=node.name)
    fused.outputs[0].name = node.outputs[0].name
    ir.convenience.replace_nodes_and_values(graph, node, [node], [fused], [node.outputs[0]],
                                            [fused.outputs[0]])
    return fused
