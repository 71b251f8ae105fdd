"""The f32 SGEMM kernels and activations on every ISA path, against numpy (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest

native = pytest.importorskip("kiln.backends.native._native")

K = native.kernels

ACTIVATIONS = [
    "none",
    "relu",
    "leaky_relu",
    "clip",
    "sigmoid",
    "silu",
    "hard_sigmoid",
    "hard_swish",
    "gelu_erf",
    "gelu_tanh",
    "tanh",
    "exp",
    "erf",
]
ALPHA_BETA = {"leaky_relu": (0.1, 0.0), "clip": (-0.5, 0.75), "hard_sigmoid": (0.2, 0.5)}

_erf = np.vectorize(math.erf)


def activation_ref(name: str, x: np.ndarray) -> np.ndarray:
    """Each activation in float64, written from its definition."""
    x = x.astype(np.float64)
    a, b = ALPHA_BETA.get(name, (0.0, 0.0))
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    if name == "none":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "leaky_relu":
        return np.where(x >= 0, x, a * x)
    if name == "clip":
        return np.clip(x, a, b)
    if name == "sigmoid":
        return sig(x)
    if name == "silu":
        return x * sig(x)
    if name == "hard_sigmoid":
        return np.clip(a * x + b, 0, 1)
    if name == "hard_swish":
        return x * np.clip(x / 6 + 0.5, 0, 1)
    if name == "gelu_erf":
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if name == "tanh":
        return np.tanh(x)
    if name == "exp":
        return np.exp(x)
    if name == "erf":
        return _erf(x)
    raise AssertionError(name)


def gemm_ref(a, b, trans_a, trans_b, bias, bias_kind, residual, act):
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    c = op_a.astype(np.float64) @ op_b.astype(np.float64)
    if bias_kind == "per_row":
        c += bias[:, None]
    elif bias_kind == "per_col":
        c += bias[None, :]
    elif bias_kind == "full":
        c += bias.reshape(c.shape)
    if residual is not None:
        c += residual
    return activation_ref(act, c)


def check(got: np.ndarray, want: np.ndarray, k: int) -> None:
    # float32 accumulation over k terms of unit-variance products.
    tol = 1e-5 * max(1.0, math.sqrt(k)) * 4
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def make(shape, rng):
    return rng.standard_normal(shape, dtype=np.float32)


EDGE_SHAPES = [
    (1, 1, 1),
    (1, 37, 5),
    (13, 1, 7),
    (5, 7, 1),
    (14, 32, 64),
    (15, 33, 65),
    (6, 16, 8),
    (7, 17, 9),
    (29, 70, 300),
    (3, 100, 17),
    (100, 3, 17),
    (28, 64, 1030),
]


@pytest.mark.parametrize("mode", ["fast", "packed_b", "packed_a", "reference"])
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_edge_shapes(isa: str, mode: str, shape: tuple[int, int, int]) -> None:
    m, n, k = shape
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a, b = make((m, k), rng), make((k, n), rng)
    got = K.gemm(a, b, mode=mode)
    check(got, gemm_ref(a, b, False, False, None, "none", None, "none"), k)


@pytest.mark.parametrize("mode", ["fast", "packed_b", "packed_a"])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_transposes(isa: str, mode: str, trans_a: bool, trans_b: bool) -> None:
    m, n, k = 23, 45, 37
    rng = np.random.default_rng(7)
    a = make((k, m) if trans_a else (m, k), rng)
    b = make((n, k) if trans_b else (k, n), rng)
    got = K.gemm(a, b, trans_a=trans_a, trans_b=trans_b, mode=mode)
    check(got, gemm_ref(a, b, trans_a, trans_b, None, "none", None, "none"), k)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("bias_kind", ["none", "per_row", "per_col", "full"])
@pytest.mark.parametrize("with_residual", [False, True])
def test_gemm_fused_epilogue(isa: str, act: str, bias_kind: str, with_residual: bool) -> None:
    m, n, k = 17, 35, 19
    rng = np.random.default_rng(11)
    a, b = make((m, k), rng), make((k, n), rng)
    bias = {
        "none": None,
        "per_row": make((m,), rng),
        "per_col": make((n,), rng),
        "full": make((m, n), rng),
    }[bias_kind]
    residual = make((m, n), rng) if with_residual else None
    alpha, beta = ALPHA_BETA.get(act, (0.0, 0.0))
    for mode in ("fast", "packed_b", "packed_a", "reference"):
        got = K.gemm(
            a,
            b,
            bias=bias,
            bias_kind=bias_kind,
            residual=residual,
            activation=act,
            alpha=alpha,
            beta=beta,
            mode=mode,
        )
        check(got, gemm_ref(a, b, False, False, bias, bias_kind, residual, act), k)


def check_every_mode(a, b, bias, residual, act: str, want: np.ndarray, **kw) -> None:
    """A per-column bias, a residual and `act` fused, checked in every GEMM mode."""
    for mode in ("fast", "packed_b", "packed_a"):
        got = K.gemm(
            a,
            b,
            bias=bias,
            bias_kind="per_col",
            residual=residual,
            activation=act,
            mode=mode,
            **kw,
        )
        check(got, want, a.shape[1])


def test_gemm_many_blocks_and_threads(isa: str) -> None:
    """Small KC/MC/NC force K accumulation across blocks and many tasks over two threads."""
    rng = np.random.default_rng(3)
    m, n, k = 61, 150, 203
    a, b = make((m, k), rng), make((k, n), rng)
    bias, residual = make((n,), rng), make((m, n), rng)
    want = gemm_ref(a, b, False, False, bias, "per_col", residual, "silu")
    try:
        K.set_gemm_blocking(24, 20, 40)
        for threads in (1, 2):
            check_every_mode(a, b, bias, residual, "silu", want, threads=threads)
    finally:
        K.set_gemm_blocking(0, 0, 0)


def test_gemm_short_k_large_c_walks_rows_first(isa: str) -> None:
    """A short K and a C larger than L2 run row panels outermost (sequential C rows): the
    product, the per-row bias, the residual and the activation are the same, on one thread
    and two, with K in one block and in several."""
    rng = np.random.default_rng(11)
    m, n, k = 150, 3700, 45  # C: 2.2 MB, above a 2 MiB L2
    a, b = make((m, k), rng), make((k, n), rng)
    bias, residual = make((m,), rng), make((m, n), rng)
    want = gemm_ref(a, b, False, False, bias, "per_row", residual, "relu")
    for kc in (0, 16):
        try:
            K.set_gemm_blocking(kc, 0, 0)
            for threads in (1, 2):
                got = K.gemm(a, b, bias=bias, bias_kind="per_row", residual=residual,
                             activation="relu", threads=threads)
                check(got, want, k)
        finally:
            K.set_gemm_blocking(0, 0, 0)


@pytest.mark.parametrize("last_columns", [1, 7, 8, 9, 15, 16, 17, 31])
def test_gemm_narrow_last_panel(isa: str, last_columns: int) -> None:
    """A last column panel of at most half the tile width is computed by a narrower tile:
    every width around the halves of the ISAs' tiles (8, 16), over several K blocks (C
    accumulated) with a per-column bias, a residual and an activation in the epilogue."""
    rng = np.random.default_rng(last_columns)
    m, n, k = 30, 64 + last_columns, 70
    a, b = make((m, k), rng), make((k, n), rng)
    bias, residual = make((n,), rng), make((m, n), rng)
    want = gemm_ref(a, b, False, False, bias, "per_col", residual, "relu")
    try:
        K.set_gemm_blocking(24, 0, 0)
        check_every_mode(a, b, bias, residual, "relu", want)
    finally:
        K.set_gemm_blocking(0, 0, 0)


def test_gemm_k_zero_gives_epilogue_of_zero(isa: str) -> None:
    a = np.zeros((3, 0), np.float32)
    b = np.zeros((0, 4), np.float32)
    bias = np.arange(4, dtype=np.float32) - 1.5
    got = K.gemm(a, b, bias=bias, bias_kind="per_col", activation="relu")
    np.testing.assert_array_equal(got, np.maximum(np.tile(bias, (3, 1)), 0))


def test_packed_b_survives_isa_change() -> None:
    """Panels packed under one ISA give right answers when dispatch is capped later."""
    rng = np.random.default_rng(5)
    a, b = make((9, 40), rng), make((40, 50), rng)
    bias = make((50,), rng)
    want = gemm_ref(a, b, False, False, bias, "per_col", None, "relu")
    isas = [i for i in ("avx512", "avx2", "generic") if i in _runnable()]
    try:
        for packed_under in isas:
            native.set_isa_cap(packed_under)
            packed = K.PackedB(b)
            for run_under in isas:
                native.set_isa_cap(run_under)
                for threads in (1, 2):
                    got = packed.matmul(a, bias=bias, activation="relu", threads=threads)
                    check(got, want, 40)
    finally:
        native.set_isa_cap("avx512")


def _runnable() -> list[str]:
    order = ["generic", "avx2", "avx512"]
    return order[: order.index(native.best_isa()) + 1]


def test_gemm_rejects_bad_operands() -> None:
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        K.gemm(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="bias needs 3"):
        K.gemm(a, np.ones((4, 2), np.float32), bias=np.ones(2, np.float32), bias_kind="per_row")


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_vectorized_activation_accuracy(isa: str, act: str) -> None:
    x = np.concatenate(
        [
            np.linspace(-12, 12, 4001, dtype=np.float32),
            np.linspace(-0.7, 0.7, 999, dtype=np.float32),  # around the tanh branch point
            np.array([-90, -60, -30, 0, 30, 60, 90], np.float32),
        ]
    )
    if act == "exp":  # its whole float range: subnormals below -87.3, +inf above 88.72
        x = np.concatenate([x, np.linspace(-104, 89, 2001, dtype=np.float32)])
    a, b = ALPHA_BETA.get(act, (0.0, 0.0))
    with np.errstate(over="ignore"):
        want = activation_ref(act, x).astype(np.float32).astype(np.float64)  # inf past FLT_MAX
    # exp's subnormals to within one step of 1.4e-45; the others to 1e-7 there
    tiny = (np.abs(want) < 1.2e-38) & (act == "exp")
    # The vectorized kernel, and the scalar oracle itself, against the float64 definition.
    for got in (K.activation(x, act, a, b), K.activation(x, act, a, b, reference=True)):
        got = got.astype(np.float64)
        np.testing.assert_allclose(got[tiny], want[tiny], rtol=0, atol=3e-45)
        np.testing.assert_allclose(got[~tiny], want[~tiny], rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "exp", "erf", "gelu_erf"])
def test_vectorized_activation_keeps_nan_and_infinities(isa: str, act: str) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1.0] * 5, np.float32)  # vector lanes and a tail
    got = K.activation(x, act, 0.0, 0.0)
    with np.errstate(all="ignore"):
        want = activation_ref(act, x).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)  # sigmoid(-inf) may come out as a float below 1e-38
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=1e-37)


def test_dispatch_follows_the_isa_cap(isa: str) -> None:
    assert K.gemm_kernel_name().startswith(f"kiln_f32_gemm_ukernel__{isa}_")


@pytest.mark.parametrize("trans_a", [False, True])
def test_one_row_on_packed_b_streams_the_panels(isa: str, trans_a: bool) -> None:
    """A one-row product on prepacked B (a recurrent step, a batch-1 Linear) goes through the
    panel GEMV: the same bias, residual and activation as the tile path, on one thread and
    two, with a partial last panel."""
    rng = np.random.default_rng(5)
    k, n = 70, 3 * 32 + 5
    a = make((k, 1) if trans_a else (1, k), rng)
    b = make((k, n), rng)
    bias, residual = make((n,), rng), make((1, n), rng)
    want = gemm_ref(a, b, trans_a, False, bias, "per_col", residual, "tanh")
    for threads in (1, 2):
        got = K.gemm(a, b, trans_a=trans_a, bias=bias, bias_kind="per_col", residual=residual,
                     activation="tanh", mode="packed_b", threads=threads)
        check(got, want, k)
