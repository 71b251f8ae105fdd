"""The f32 pool2d kernels on every ISA path, against onnxruntime's MaxPool / AveragePool."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

native = pytest.importorskip("kiln.backends.native._native")
K = native.kernels

CASES = [
    # kind, (N, C, H, W), kernel, strides, pads (t, l, b, r), ceil_mode, count_include_pad
    ("max", (1, 3, 13, 17), (3, 3), (2, 2), (0, 0, 0, 0), False, False),
    ("max", (2, 4, 55, 55), (3, 3), (2, 2), (0, 0, 0, 0), True, False),  # SqueezeNet
    ("max", (1, 5, 112, 112), (3, 3), (2, 2), (1, 1, 1, 1), False, False),  # ResNet stem
    ("max", (1, 3, 9, 10), (2, 2), (2, 2), (0, 0, 0, 0), False, False),
    ("max", (1, 2, 14, 15), (3, 3), (1, 1), (1, 1, 1, 1), False, False),
    ("max", (1, 2, 11, 11), (5, 3), (3, 3), (2, 1, 2, 1), True, False),  # generic stride
    ("avg", (1, 6, 7, 7), (7, 7), (1, 1), (0, 0, 0, 0), False, False),  # global-like
    ("avg", (1, 3, 13, 17), (3, 3), (2, 2), (1, 1, 1, 1), False, False),
    ("avg", (1, 3, 13, 17), (3, 3), (2, 2), (1, 1, 1, 1), False, True),
    ("avg", (2, 3, 28, 30), (3, 3), (1, 1), (1, 1, 1, 1), True, False),
    ("avg", (1, 4, 12, 11), (2, 2), (2, 2), (0, 0, 1, 1), True, True),
]


def ort_pool(kind, x, kernel, strides, pads, ceil_mode, count_include_pad):
    attrs = {
        "kernel_shape": list(kernel),
        "strides": list(strides),
        "ceil_mode": int(ceil_mode),
        "pads": [pads[0], pads[1], pads[2], pads[3]],
    }
    if kind == "avg":
        attrs["count_include_pad"] = int(count_include_pad)
    node = helper.make_node("MaxPool" if kind == "max" else "AveragePool", ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        f"{c[0]}-{'x'.join(map(str, c[1]))}-"
        f"k{c[2][0]}{c[2][1]}-s{c[3][0]}-p{''.join(map(str, c[4]))}"
        f"-ceil{int(c[5])}-inc{int(c[6])}"
    ),
)
def test_pool_matches_onnxruntime(isa: str, case) -> None:
    kind, shape, kernel, strides, pads, ceil_mode, include = case
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    want = ort_pool(kind, x, kernel, strides, pads, ceil_mode, include)
    for reference in (False, True):
        for threads in (1, 2):
            got = K.pool2d(
                x,
                kind,
                list(kernel),
                list(strides),
                list(pads),
                [1, 1],
                ceil_mode,
                include,
                reference,
                threads,
            )
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_dilated_max_pool_matches_onnxruntime(isa: str) -> None:
    x = np.random.default_rng(1).standard_normal((1, 3, 15, 16), dtype=np.float32)
    node = helper.make_node(
        "MaxPool",
        ["x"],
        ["y"],
        kernel_shape=[3, 3],
        strides=[1, 2],
        dilations=[2, 2],
        pads=[1, 1, 1, 1],
    )
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    got = K.pool2d(x, "max", [3, 3], [1, 2], [1, 1, 1, 1], [2, 2])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_a_window_all_in_the_padding_matches_the_reference(isa: str, kind: str) -> None:
    """Dilation can put every tap of a window in the padding (the last output row reads rows
    -1 and 2 of a 2-row input, after rows that read data): the kernels read no row for it
    and give the reference's -inf / 0."""
    x = np.random.default_rng(2).standard_normal((2, 3, 2, 8), dtype=np.float32)
    args = (kind, [2, 1], [1, 1], [3, 0, 1, 0], [3, 1], False, False)
    want = K.pool2d(x, *args, True, 1)
    for threads in (1, 2):
        np.testing.assert_array_equal(K.pool2d(x, *args, False, threads), want)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": [9, 9]}, "larger than the padded input"),
        ({"kernel": [3, 3], "pads": [3, 0, 0, 0]}, "padding must be smaller"),
        ({"kernel": [3, 3], "strides": [0, 1]}, "strides must be >= 1"),
        ({"kernel": [3]}, "kernel \\(2\\)"),
    ],
)
def test_pool_rejects_bad_parameters(kwargs, message) -> None:
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match=message):
        K.pool2d(x, "max", **kwargs)


def _before_guard_page(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array whose last byte is the last before an unreadable page: a kernel that
    reads past the tensor crashes here instead of reading a neighbour's bytes."""
    import ctypes
    import mmap

    nbytes = int(np.prod(shape)) * 4
    page = mmap.PAGESIZE
    span = (nbytes + page - 1) // page * page
    buf = mmap.mmap(-1, span + page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(ctypes.c_void_p(base + span), page, 0) == 0
    # the array holds the mapping (its base) for as long as it lives
    return np.frombuffer(buf, dtype=np.float32, count=nbytes // 4,
                         offset=span - nbytes).reshape(shape)


@pytest.mark.parametrize("shape", [(1, 64, 111, 111), (1, 3, 9, 13), (2, 5, 33, 17)])
def test_unpadded_pool_reads_nothing_past_the_input(isa: str, shape) -> None:
    # unpadded windows read the input in place (no padded copy), over-reading a little past
    # each plane: the last planes must still go through the copy
    x = _before_guard_page(shape)
    x[...] = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    for kind in ("max", "avg"):
        want = ort_pool(kind, np.array(x), (3, 3), (2, 2), (0, 0, 0, 0), False, False)
        for threads in (1, 2):
            got = K.pool2d(x, kind, [3, 3], [2, 2], [0, 0, 0, 0], [1, 1], False, False,
                           False, threads)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
