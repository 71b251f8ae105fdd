"""The f32 conv2d kernels (1x1 GEMM, im2col, depthwise, Winograd, direct, implicit GEMM,
reference) on every ISA path, against a float64 numpy convolution."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

native = pytest.importorskip("kiln.backends.native._native")
K = native.kernels


@dataclass(frozen=True)
class Case:
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1

    def __str__(self) -> str:
        return (
            f"{self.n}x{self.c}x{self.h}x{self.w}-k{self.k}-{self.kh}x{self.kw}"
            f"-s{self.strides[0]}{self.strides[1]}-p{''.join(map(str, self.pads))}"
            f"-d{self.dilations[0]}{self.dilations[1]}-g{self.groups}"
        )


def conv_ref(x, w, bias, residual, case: Case, act: str) -> np.ndarray:
    """Direct NCHW convolution in float64 from the definition."""
    pt, pl, pb, pr = case.pads
    sh, sw = case.strides
    dh, dw = case.dilations
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (case.h + pt + pb - (case.kh - 1) * dh - 1) // sh + 1
    ow = (case.w + pl + pr - (case.kw - 1) * dw - 1) // sw + 1
    cg, kg = case.c // case.groups, case.k // case.groups
    y = np.zeros((case.n, case.k, oh, ow))
    for g in range(case.groups):
        xs = xp[:, g * cg : (g + 1) * cg]
        wg = w[g * kg : (g + 1) * kg].astype(np.float64)
        for ky in range(case.kh):
            for kx in range(case.kw):
                patch = xs[
                    :,
                    :,
                    ky * dh : ky * dh + (oh - 1) * sh + 1 : sh,
                    kx * dw : kx * dw + (ow - 1) * sw + 1 : sw,
                ]
                y[:, g * kg : (g + 1) * kg] += np.einsum("nchw,kc->nkhw", patch, wg[:, :, ky, kx])
    if bias is not None:
        y += bias[None, :, None, None]
    if residual is not None:
        y += residual
    if act == "relu":
        y = np.maximum(y, 0)
    elif act == "clip":
        y = np.clip(y, 0.0, 6.0)
    elif act == "silu":
        y = y / (1 + np.exp(-y))
    elif act == "hard_swish":
        y = y * np.clip(y / 6 + 0.5, 0, 1)
    return y


CASES = [
    Case(1, 8, 9, 11, 16, 1, 1),  # pointwise -> gemm_1x1
    Case(2, 5, 7, 6, 3, 1, 1),  # pointwise, odd sizes, batch
    Case(1, 8, 9, 11, 12, 1, 1, strides=(2, 2)),  # strided 1x1 -> im2col
    Case(1, 3, 10, 12, 8, 3, 3, pads=(1, 1, 1, 1)),
    Case(2, 4, 9, 7, 5, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1)),
    Case(1, 3, 23, 23, 8, 7, 7, strides=(2, 2), pads=(3, 3, 3, 3)),  # a ResNet stem, small
    Case(1, 4, 12, 13, 6, 5, 5, pads=(2, 2, 2, 2), dilations=(2, 2)),
    Case(1, 4, 8, 9, 6, 3, 2, pads=(0, 1, 2, 0)),  # asymmetric pads, 3x2 kernel
    Case(1, 6, 8, 8, 9, 3, 3, pads=(1, 1, 1, 1), groups=3),  # grouped
    Case(1, 1, 5, 5, 1, 5, 5),  # kernel == input
    Case(1, 16, 13, 13, 16, 3, 3, pads=(1, 1, 1, 1), groups=16),  # depthwise
    Case(2, 8, 17, 33, 8, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1), groups=8),
    Case(1, 5, 11, 19, 5, 5, 5, pads=(2, 2, 2, 2), groups=5),
    Case(1, 4, 15, 16, 4, 3, 3, pads=(2, 2, 2, 2), dilations=(2, 2), groups=4),
    Case(1, 4, 14, 15, 4, 3, 3, strides=(3, 3), pads=(1, 0, 1, 0), groups=4),
    Case(1, 3, 40, 70, 3, 3, 3, pads=(1, 1, 1, 1), groups=3),  # wide rows, several vectors
    # depthwise two output rows at a time: odd row counts (a last single row), staged in a
    # ring (large planes) or whole (small ones), stride 1 and 2, 3x3 and 5x5, stride (2, 1)
    Case(1, 4, 37, 75, 4, 5, 5, pads=(2, 2, 2, 2), groups=4),
    Case(1, 4, 41, 77, 4, 5, 5, strides=(2, 2), pads=(2, 2, 2, 2), groups=4),
    Case(1, 6, 7, 7, 6, 5, 5, pads=(2, 2, 2, 2), groups=6),
    Case(2, 6, 14, 14, 6, 5, 5, strides=(2, 2), pads=(2, 2, 2, 2), groups=6),
    Case(1, 4, 45, 50, 4, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1), groups=4),
    Case(1, 4, 9, 20, 4, 3, 3, strides=(2, 1), pads=(1, 1, 1, 1), groups=4),
    # depthwise planes one vector wide (AVX-512; 7 wide on AVX2): output rows in near-equal
    # groups of up to 8 (14 -> 7 + 7, 11 -> 6 + 5, 19 -> 7 + 6 + 6, 3 -> one group of 3)
    NARROW_DW_5X5 := Case(1, 8, 14, 14, 8, 5, 5, pads=(2, 2, 2, 2), groups=8),
    Case(2, 5, 11, 7, 5, 3, 3, pads=(1, 1, 1, 1), groups=5),
    NARROW_DW_3X3 := Case(1, 3, 19, 16, 3, 3, 3, pads=(1, 0, 1, 0), groups=3),
    Case(1, 4, 3, 9, 4, 5, 5, pads=(2, 2, 2, 2), groups=4),
    # small output planes (<= 400 pixels): 16 channels a call in vector lanes; a last block
    # of 4 channels, batch, stride 2, a runtime-sized 7x7, pads wider than the window
    BLOCKED_DW := Case(2, 20, 9, 9, 20, 3, 3, pads=(1, 1, 1, 1), groups=20),
    Case(1, 37, 14, 14, 37, 5, 5, strides=(2, 2), pads=(2, 2, 2, 2), groups=37),
    Case(1, 24, 7, 7, 24, 7, 7, pads=(3, 3, 3, 3), groups=24),
    Case(1, 17, 6, 9, 17, 3, 3, pads=(2, 0, 1, 3), groups=17),
    # 5x5 planes wider than a vector, 6 rows or more: the same groups, a vector at a time
    # (13 -> 7 + 6 rows; 37 columns: whole vectors and a tail on every ISA)
    WIDE_DW_5X5 := Case(1, 3, 13, 37, 3, 5, 5, pads=(2, 2, 2, 2), groups=3),
    # 5x5 stride-1 planes too large to stage whole: staged a group of output rows at a time
    # (60 -> 8 groups of 7-8 rows; padding rows at both ends, batch)
    Case(1, 3, 60, 90, 3, 5, 5, pads=(2, 2, 2, 2), groups=3),
    Case(2, 4, 50, 100, 4, 5, 5, pads=(2, 2, 2, 2), groups=4),
    # 7x7 with its taps unrolled: stride 1 staged whole (small), a group at a time (large),
    # one vector wide; stride 2 in row pairs (odd rows: a last single row); pads past the window
    Case(1, 3, 23, 37, 3, 7, 7, pads=(3, 3, 3, 3), groups=3),
    Case(1, 2, 70, 90, 2, 7, 7, pads=(3, 3, 3, 3), groups=2),
    Case(2, 3, 12, 14, 3, 7, 7, pads=(3, 3, 3, 3), groups=3),
    Case(1, 3, 47, 53, 3, 7, 7, strides=(2, 2), pads=(3, 3, 3, 3), groups=3),
    Case(1, 2, 9, 11, 2, 7, 7, pads=(4, 2, 3, 5), groups=2),
    Case(2, 7, 13, 9, 5, 3, 3, pads=(1, 0, 2, 1)),  # winograd: partial tiles, batch, pads
    Case(1, 20, 21, 22, 17, 3, 3, pads=(1, 1, 1, 1)),  # winograd: several tile blocks
    Case(1, 4, 132, 132, 4, 3, 3, pads=(1, 1, 1, 1)),  # winograd: whole blocks per thread
    Case(1, 6, 34, 34, 5, 3, 3, pads=(1, 1, 1, 1)),  # winograd: 3 blocks, 2 whole + 1 by stage
    # 2048 x 49 GEMM: 9 row blocks, raised to 10 so two threads take equal shares
    Case(1, 64, 7, 7, 2048, 1, 1),
    # a YOLOv8n stem: several im2col column blocks, raised to a multiple of the threads
    Case(1, 3, 320, 320, 16, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1)),
    # a stride-2 stem on rows wider than a B panel (the even-column gather across panels)
    Case(1, 3, 21, 131, 16, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1)),
    Case(1, 3, 20, 130, 24, 3, 3, strides=(2, 2)),
    # one output pixel -> the GEMV kernel: rows not a multiple of any mr, K odd, batch, groups
    Case(1, 37, 1, 1, 45, 1, 1),
    Case(2, 301, 1, 1, 70, 1, 1),
    Case(1, 12, 1, 1, 18, 1, 1, groups=3),
    # direct (few input channels): every channel count 1..4, odd widths (vector tails of 1,
    # 2 and 3 vectors on every ISA), output channels not a multiple of the 8-channel block
    Case(1, 1, 9, 21, 5, 3, 3, pads=(1, 1, 1, 1)),
    Case(2, 2, 11, 67, 9, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1)),
    Case(1, 4, 7, 113, 17, 3, 3, strides=(1, 2), pads=(0, 1, 2, 0)),
    Case(1, 3, 19, 149, 8, 7, 7, strides=(2, 2), pads=(3, 3, 3, 3)),
    Case(1, 3, 12, 97, 24, 3, 3, strides=(2, 2)),  # no padding, odd width
    Case(1, 2, 13, 40, 3, 5, 3, strides=(2, 1), pads=(2, 1, 2, 1), dilations=(2, 2)),
    Case(1, 3, 16, 45, 6, 4, 4, strides=(3, 3), pads=(2, 2, 1, 1)),  # stride 3, even kernel
    Case(1, 3, 6, 200, 16, 1, 5, pads=(0, 2, 0, 2)),  # one row of taps, pads wider than kw/2
    Case(3, 1, 9, 40, 16, 3, 3, pads=(1, 1, 1, 1)),  # 2 threads: row ranges across images
    # implicit GEMM: a 1x1 on a 7x7 map (auto picks it), channels not a multiple of any nr,
    # pixels not a multiple of any mr; dilated, asymmetric pads, batch; grouped with residual
    Case(1, 40, 7, 7, 70, 1, 1),
    Case(2, 9, 6, 5, 37, 3, 3, pads=(2, 0, 1, 1), dilations=(1, 2)),
    Case(1, 128, 7, 7, 32, 3, 3, pads=(1, 1, 1, 1)),
    Case(1, 12, 9, 10, 20, 3, 3, pads=(1, 1, 1, 1), groups=2),
    # grouped GEMM tasks on 2 threads: 3 groups x blocks raised to 2 (a ShuffleNet 1x1);
    # batch x groups already even; 3 groups of a 3x3 im2col
    Case(1, 48, 28, 28, 48, 1, 1, groups=3),
    Case(2, 36, 9, 9, 30, 1, 1, groups=3),
    Case(1, 9, 17, 19, 15, 3, 3, pads=(1, 1, 1, 1), groups=3),
]


def algorithms_for(case: Case) -> list[str]:
    algos = ["auto", "im2col", "reference"]
    if case.kh == case.kw == 1 and case.strides == (1, 1) and case.pads == (0, 0, 0, 0):
        algos.append("gemm_1x1")
    if is_depthwise(case):
        algos.append("depthwise")
    if (case.kh, case.kw, case.strides, case.dilations, case.groups) == (3, 3, (1, 1), (1, 1), 1):
        algos.append("winograd")
    if case.groups == 1 and case.c * case.kh <= 64 and case.kw <= 16:
        algos.append("direct")
    algos.append("implicit")
    return algos


def make_inputs(case: Case, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.n, case.c, case.h, case.w), dtype=np.float32)
    w = rng.standard_normal((case.k, case.c // case.groups, case.kh, case.kw), dtype=np.float32)
    bias = rng.standard_normal(case.k, dtype=np.float32)
    return x, w, bias, rng


def tolerance(case: Case) -> float:
    return 2e-5 * max(1.0, math.sqrt(case.c // case.groups * case.kh * case.kw)) * 4


def is_depthwise(case: Case) -> bool:
    return case.groups > 1 and case.groups == case.c == case.k


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_every_algorithm(isa: str, case: Case) -> None:
    x, w, bias, rng = make_inputs(case, 1)
    want = conv_ref(x, w, bias, None, case, "relu")
    for algo in algorithms_for(case):
        for threads in (1, 2):
            y, used = K.conv2d(
                x,
                w,
                bias=bias,
                strides=list(case.strides),
                pads=list(case.pads),
                dilations=list(case.dilations),
                groups=case.groups,
                activation="relu",
                algorithm=algo,
                threads=threads,
            )
            assert algo == "auto" or used == algo
            tol = tolerance(case)
            np.testing.assert_allclose(y, want, rtol=tol, atol=tol, err_msg=f"{algo} {threads}")


def test_auto_picks_the_specialised_algorithm() -> None:
    def used(case: Case) -> str:
        x, w, _, _ = make_inputs(case, 2)
        return K.conv2d(
            x,
            w,
            strides=list(case.strides),
            pads=list(case.pads),
            dilations=list(case.dilations),
            groups=case.groups,
        )[1]

    assert used(CASES[0]) == "gemm_1x1"
    # an image stem (3 input channels) on a SIMD path: the direct kernel
    assert used(CASES[3]) == ("direct" if native.best_isa() != "generic" else "implicit")
    # stride 1, kernel > 1x1: no patch matrix, the implicit GEMM
    assert used(Case(1, 8, 10, 12, 8, 3, 3, pads=(1, 1, 1, 1))) == "implicit"
    assert used(CASES[10]) == "depthwise"
    wide = Case(1, 64, 16, 16, 64, 3, 3, pads=(1, 1, 1, 1))
    assert used(wide) == "winograd"
    # F(4,3) against the implicit GEMM by their costs (winograd_wins): 32 -> 64 channels on a
    # 16x16 map save too few multiplies to pay for the transforms, on 28x28 enough
    assert used(Case(1, 32, 16, 16, 64, 3, 3, pads=(1, 1, 1, 1))) == "implicit"
    assert used(Case(1, 32, 28, 28, 64, 3, 3, pads=(1, 1, 1, 1))) == "winograd"
    assert used(Case(1, 64, 28, 28, 32, 3, 3, pads=(1, 1, 1, 1))) == "winograd"
    assert used(Case(1, 64, 28, 28, 64, 3, 3, pads=(1, 1, 1, 1))) == "winograd"
    # on a 7x7 map its 4 tiles leave most of every GEMM panel empty
    assert used(Case(1, 64, 7, 7, 64, 3, 3, pads=(1, 1, 1, 1))) == "implicit"
    # stride 2 through stride phases: implicit on output maps up to 28x28, im2col on larger
    # ones and with more than 512 x 9 reduction rows
    assert used(Case(1, 64, 14, 14, 64, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1))) == "implicit"
    assert used(Case(1, 64, 28, 28, 64, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1))) == "implicit"
    assert used(Case(1, 64, 56, 56, 64, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1))) == "implicit"
    assert used(Case(1, 64, 58, 58, 64, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1))) == "im2col"
    deep = Case(1, 1024, 14, 14, 64, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1))
    assert used(deep) == "im2col"
    assert used(Case(1, 64, 28, 28, 64, 1, 1, strides=(2, 2))) == "im2col"
    # a 1x1 on a 7x7 map wastes 15 of 64 pixel lanes: implicit; on 14x14, 12 of 208: GEMM
    assert used(Case(1, 64, 7, 7, 64, 1, 1)) == "implicit"
    assert used(Case(1, 64, 14, 14, 64, 1, 1)) == "gemm_1x1"
    try:
        K.set_winograd_enabled(False)
        assert used(wide) == "implicit"
    finally:
        K.set_winograd_enabled(True)


def test_auto_weighs_direct_against_im2col(isa: str) -> None:
    """Few input channels: the direct kernel unless its rows fill too few vector lanes for
    the output channels' work (a 20-wide row takes two AVX-512 vectors, 12 lanes idle)."""

    def used(case: Case) -> str:
        x, w, _, _ = make_inputs(case, 2)
        return K.conv2d(x, w, strides=list(case.strides), pads=list(case.pads))[1]

    stems = [
        Case(1, 3, 224, 224, 64, 7, 7, strides=(2, 2), pads=(3, 3, 3, 3)),
        Case(1, 3, 320, 320, 16, 3, 3, strides=(2, 2), pads=(1, 1, 1, 1)),
        Case(1, 1, 28, 28, 32, 5, 5, pads=(2, 2, 2, 2)),
    ]
    narrow = [Case(1, 3, 20, 20, 512, 3, 3, pads=(1, 1, 1, 1))]
    if isa == "avx512":  # 8-lane AVX2 vectors waste less of a 7-wide row: direct wins there
        narrow.append(Case(1, 3, 7, 7, 512, 3, 3, pads=(1, 1, 1, 1)))
    for case in stems:
        fallback = "implicit" if case.strides == (1, 1) else "im2col"
        assert used(case) == (fallback if isa == "generic" else "direct"), str(case)
    for case in narrow:
        assert used(case) == "implicit", str(case)


@pytest.mark.parametrize("act", ["none", "relu", "clip", "silu", "hard_swish"])
@pytest.mark.parametrize(
    "case",
    [CASES[1], CASES[4], CASES[8], CASES[11], NARROW_DW_5X5, NARROW_DW_3X3, WIDE_DW_5X5,
     BLOCKED_DW, CASES[-11], CASES[-9]],
    ids=str,
)
def test_conv_fused_bias_residual_activation(isa: str, case: Case, act: str) -> None:
    x, w, bias, rng = make_inputs(case, 3)
    y0 = conv_ref(x, w, None, None, case, "none")
    residual = rng.standard_normal(y0.shape, dtype=np.float32)
    want = conv_ref(x, w, bias, residual, case, act)
    alpha, beta = (0.0, 6.0) if act == "clip" else (0.0, 0.0)
    for algo in algorithms_for(case):
        y, _ = K.conv2d(
            x,
            w,
            bias=bias,
            residual=residual,
            strides=list(case.strides),
            pads=list(case.pads),
            dilations=list(case.dilations),
            groups=case.groups,
            activation=act,
            alpha=alpha,
            beta=beta,
            algorithm=algo,
        )
        tol = tolerance(case)
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol, err_msg=algo)


@pytest.mark.parametrize("act", ["relu", "hard_swish"])
@pytest.mark.parametrize("case", [c for c in CASES if is_depthwise(c)], ids=str)
def test_depthwise_plane_form_on_small_planes(isa: str, case: Case, act: str) -> None:
    """Small output planes run in the blocked form by default; with the limit at 0 the same
    shapes take the plane form (its whole-plane row groups and row pairs), which larger
    planes still run."""
    x, w, bias, rng = make_inputs(case, 5)
    y0 = conv_ref(x, w, None, None, case, "none")
    residual = rng.standard_normal(y0.shape, dtype=np.float32)
    want = conv_ref(x, w, bias, residual, case, act)
    old = K.set_dwconv_blocked_max_pixels(0)
    try:
        for threads in (1, 2):
            y, used = K.conv2d(x, w, bias=bias, residual=residual, strides=list(case.strides),
                               pads=list(case.pads), dilations=list(case.dilations),
                               groups=case.groups, activation=act, algorithm="depthwise",
                               threads=threads)
            tol = tolerance(case)
            np.testing.assert_allclose(y, want, rtol=tol, atol=tol, err_msg=f"{threads}")
    finally:
        K.set_dwconv_blocked_max_pixels(old)


@pytest.mark.parametrize("case", CASES[-3:], ids=str)
def test_grouped_conv_tasks_with_residual_on_two_threads(isa: str, case: Case) -> None:
    """Grouped GEMM and implicit convs split by (group, part) tasks keep bias, residual and
    activation per group."""
    x, w, bias, rng = make_inputs(case, 7)
    y0 = conv_ref(x, w, None, None, case, "none")
    residual = rng.standard_normal(y0.shape, dtype=np.float32)
    want = conv_ref(x, w, bias, residual, case, "relu")
    for algo in algorithms_for(case):
        y, _ = K.conv2d(x, w, bias=bias, residual=residual, pads=list(case.pads),
                        groups=case.groups, activation="relu", algorithm=algo, threads=2)
        tol = tolerance(case)
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol, err_msg=algo)


@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[8], CASES[11], CASES[-11]], ids=str)
def test_packed_conv_survives_isa_change(case: Case) -> None:
    """Weights packed under one ISA give right answers when dispatch is capped later."""
    x, w, bias, _ = make_inputs(case, 5)
    want = conv_ref(x, w, bias, None, case, "relu")
    order = ["generic", "avx2", "avx512"]
    isas = order[: order.index(native.best_isa()) + 1]
    try:
        for packed_under in isas:
            native.set_isa_cap(packed_under)
            conv = K.Conv2d(
                w,
                list(x.shape),
                list(case.strides),
                list(case.pads),
                list(case.dilations),
                case.groups,
            )
            for run_under in isas:
                native.set_isa_cap(run_under)
                for threads in (1, 2):
                    y = conv.run(x, bias=bias, activation="relu", threads=threads)
                    tol = tolerance(case)
                    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    finally:
        native.set_isa_cap("avx512")


# F(4x4, 3x3)'s G (kernels/winograd_ukernel.h), in double: the oracle of the weight kernels.
WINO43_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


@pytest.mark.parametrize("isa_name", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("k, c", [(1, 1), (3, 5), (16, 17), (40, 70)])
def test_winograd_weight_transform_matches_double(isa_name: str, k: int, c: int) -> None:
    """Each ISA's float weight kernel gives G g G^T within float rounding, for filter counts
    below, at and across its 64-filter blocks."""
    order = ["generic", "avx2", "avx512"]
    if order.index(isa_name) > order.index(native.best_isa()):
        pytest.skip(f"this CPU cannot run the {isa_name} kernels")
    w = np.random.default_rng(k * 100 + c).standard_normal((k, c, 3, 3)).astype(np.float32)
    want = np.einsum("ia,kcab,jb->ijkc", WINO43_G, w.astype(np.float64), WINO43_G)
    got = K.wino43_weights(w, isa_name)
    assert got.shape == (36, k * c)
    np.testing.assert_allclose(got, want.reshape(36, k * c), rtol=1e-6, atol=1e-6)


def test_winograd_weight_transform_refuses_other_kernels() -> None:
    w = np.zeros((2, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match="3x3"):
        K.wino43_weights(w, "generic")


def test_packed_conv_rejects_other_input_shapes() -> None:
    case = CASES[3]
    x, w, _, _ = make_inputs(case, 6)
    conv = K.Conv2d(w, list(x.shape), pads=list(case.pads))
    with pytest.raises(ValueError, match="shape the conv was built for"):
        conv.run(np.zeros((1, 3, 10, 13), np.float32))


def test_conv_many_gemm_blocks(isa: str) -> None:
    """Small blocking forces several K blocks and tasks through the conv GEMM path."""
    case = Case(1, 20, 12, 12, 30, 3, 3, pads=(1, 1, 1, 1))
    x, w, bias, _ = make_inputs(case, 4)
    want = conv_ref(x, w, bias, None, case, "relu")
    try:
        K.set_gemm_blocking(40, 14, 32)
        y, _ = K.conv2d(x, w, bias=bias, pads=[1, 1, 1, 1], activation="relu", threads=2)
    finally:
        K.set_gemm_blocking(0, 0, 0)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "case",
    [
        Case(1, 40, 8, 8, 30, 1, 1),  # 64 columns: whole B column blocks only on some ISAs
        Case(2, 24, 7, 9, 10, 1, 1, groups=2),  # 63 columns, groups, batch
        Case(1, 33, 1, 20, 17, 1, 1),  # fewer columns than one B panel on the wide ISAs
    ],
    ids=str,
)
def test_pointwise_conv_reads_input_in_place(isa: str, case: Case) -> None:
    """The 1x1 path reads its input rows in place as B: several K blocks, row and column
    blocks over 2 threads, a partial last column block, a residual."""
    x, w, bias, rng = make_inputs(case, 5)
    residual = rng.standard_normal(conv_ref(x, w, None, None, case, "none").shape,
                                   dtype=np.float32)
    want = conv_ref(x, w, bias, residual, case, "relu")
    for blocking in [(0, 0, 0), (8, 14, 16)]:
        try:
            K.set_gemm_blocking(*blocking)
            y, algo = K.conv2d(x, w, bias=bias, residual=residual, groups=case.groups,
                               activation="relu", algorithm="gemm_1x1", threads=2)
        finally:
            K.set_gemm_blocking(0, 0, 0)
        assert algo == "gemm_1x1"
        tol = tolerance(case)
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol, err_msg=str(blocking))


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "message"),
    [
        ((1, 6, 8, 8), (4, 3, 3, 3), {"groups": 4}, "not divisible by groups"),
        ((1, 6, 8, 8), (5, 2, 3, 3), {"groups": 3}, "output channels 5 are not divisible"),
        ((1, 3, 4, 4), (2, 3, 7, 7), {}, "larger than the padded input"),
        ((1, 3, 4, 4), (2, 3, 3, 3), {"dilations": [3, 3]}, "larger than the padded input"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"strides": [0, 1]}, "strides must be >= 1"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"algorithm": "depthwise"}, "needs groups == C == K"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"algorithm": "gemm_1x1"}, "needs a 1x1 kernel"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"algorithm": "winograd9"}, "unknown conv algorithm"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"algorithm": "winograd", "strides": [2, 2]}, "3x3 kernel"),
        ((1, 6, 8, 8), (4, 3, 3, 3), {"algorithm": "direct", "groups": 2}, "one group"),
        ((1, 3, 40, 40), (2, 3, 1, 17), {"algorithm": "direct"}, "kw <= 16"),
    ],
)
def test_conv_rejects_bad_parameters(x_shape, w_shape, kwargs, message) -> None:
    x = np.zeros(x_shape, np.float32)
    w = np.zeros(w_shape, np.float32)
    with pytest.raises(ValueError, match=message):
        K.conv2d(x, w, **kwargs)


def test_conv_cache_builds_once_per_input_shape() -> None:
    rng = np.random.default_rng(8)
    w = rng.standard_normal((6, 4, 3, 3), dtype=np.float32)
    cache = K.Conv2dCache(w)
    for h, wd in [(9, 9), (12, 7), (9, 9), (12, 7), (5, 6)]:
        x = rng.standard_normal((1, 4, h, wd), dtype=np.float32)
        case = Case(1, 4, h, wd, 6, 3, 3, pads=(1, 1, 1, 1))
        y = cache.run(x, pads=[1, 1, 1, 1])
        tol = tolerance(case)
        np.testing.assert_allclose(y, conv_ref(x, w, None, None, case, "none"), rtol=tol, atol=tol)
    assert cache.size == 3
    assert cache.packed_forms == 1  # three shapes, all implicit: the weights packed once


def test_conv_cache_packs_each_weight_form_once() -> None:
    """Input sizes that pick the same algorithm family share one packed form; a size that
    picks Winograd packs its form once more, and every size still gives the right answer."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    cache = K.Conv2dCache(w)
    sizes = [(6, 6), (40, 40), (7, 5), (36, 44)]  # implicit, winograd, implicit, winograd
    forms = []
    for h, wd in sizes:
        x = rng.standard_normal((1, 64, h, wd), dtype=np.float32)
        case = Case(1, 64, h, wd, 64, 3, 3, pads=(1, 1, 1, 1))
        y = cache.run(x, pads=[1, 1, 1, 1])
        tol = tolerance(case)
        np.testing.assert_allclose(y, conv_ref(x, w, None, None, case, "none"), rtol=tol, atol=tol)
        forms.append(cache.packed_forms)
    assert cache.size == 4
    assert forms == [1, 2, 2, 2]


def test_conv_cache_reads_the_same_weights_under_another_grouping() -> None:
    """[8, 4, 3, 3] weights are a plain conv over 4 channels or a 2-group one over 8: the
    grouped shape gets panels of its own, and both stay right in any order."""
    rng = np.random.default_rng(10)
    w = rng.standard_normal((8, 4, 3, 3), dtype=np.float32)
    cache = K.Conv2dCache(w)
    for c, groups in [(4, 1), (8, 2), (4, 1)]:
        x = rng.standard_normal((1, c, 9, 9), dtype=np.float32)
        case = Case(1, c, 9, 9, 8, 3, 3, pads=(1, 1, 1, 1), groups=groups)
        y = cache.run(x, pads=[1, 1, 1, 1], groups=groups)
        tol = tolerance(case)
        np.testing.assert_allclose(y, conv_ref(x, w, None, None, case, "none"), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "case",
    [
        # SqueezeNet's expand 3x3: an 800 KB product, split into 8 row bands on 2 threads
        Case(1, 16, 55, 55, 64, 3, 3, pads=(1, 1, 1, 1)),
        # two images, two groups, an odd band count raised to a multiple of the threads
        Case(2, 8, 23, 21, 72, 3, 3, pads=(1, 1, 1, 1), groups=2),
        # stride phases and uneven padding
        Case(1, 12, 37, 33, 40, 3, 3, strides=(2, 2), pads=(1, 0, 1, 2)),
        # fewer output rows than threads: one band
        Case(1, 4, 3, 30, 24, 3, 3, pads=(0, 1, 0, 1)),
        # images too small to split go whole to the threads: Silero-style short 1-D windows,
        # and images times groups an odd count
        Case(16, 33, 1, 4, 24, 1, 3, pads=(0, 1, 0, 1)),
        Case(5, 12, 5, 6, 16, 3, 3, pads=(1, 1, 1, 1), groups=2),
    ],
    ids=str,
)
def test_implicit_row_bands_on_two_threads(isa: str, case: Case) -> None:
    """The implicit GEMM's NCHW output on two threads (bands of output rows, one thread making
    and transposing each; or whole small images per thread) keeps bias, residual and
    activation at every pixel."""
    x, w, bias, rng = make_inputs(case, 11)
    y0 = conv_ref(x, w, None, None, case, "none")
    residual = rng.standard_normal(y0.shape, dtype=np.float32)
    for res in (None, residual):
        want = conv_ref(x, w, bias, res, case, "relu")
        y, used = K.conv2d(x, w, bias=bias, residual=res, strides=list(case.strides),
                           pads=list(case.pads), groups=case.groups, activation="relu",
                           algorithm="implicit", threads=2)
        assert used == "implicit"
        tol = tolerance(case)
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("act", ["none", "relu", "clip"])
def test_winograd_output_clamp_treats_nan_as_the_activation_kernels_do(isa: str, act: str) -> None:
    """F(4,3) clamps a fused Relu / Clip as it stores its outputs: a NaN there (its
    transforms spread an input NaN over whole 4x4 tiles) becomes the lower bound, as in the
    SIMD activation kernels of the other algorithms do; with no activation it stays NaN."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 8, 9, 11), dtype=np.float32)
    x[0, 3, 4, 5] = np.nan
    w = rng.standard_normal((8, 8, 3, 3), dtype=np.float32)
    alpha, beta = (-0.5, 0.5) if act == "clip" else (0.0, 0.0)
    got = {algo: K.conv2d(x, w, pads=[1, 1, 1, 1], activation=act, alpha=alpha, beta=beta,
                          algorithm=algo)[0] for algo in ("winograd", "im2col")}
    if act == "none":
        assert np.isnan(got["winograd"])[np.isnan(got["im2col"])].all()
        return
    lo, hi = (0.0, np.inf) if act == "relu" else (alpha, beta)
    y = got["winograd"]
    assert not np.isnan(y).any() and (y >= lo).all() and (y <= hi).all()
