"""Every u8 x s8 GEMM kernel of the one list (kernels/ukernels.inc) against exact integers."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.native import _native as native

RNG = np.random.default_rng(3)


def test_the_list_holds_a_generic_kernel_and_this_cpus():
    names = native.kernels.u8s8_ukernels()
    assert names[0] == "kiln_u8s8_gemm_ukernel__generic"
    if native.best_isa() != "generic":
        assert "kiln_u8s8_gemm_ukernel__avx2" in names
    if native.cpu_features().get("avx512_vnni") and native.best_isa() == "avx512":
        assert "kiln_u8s8_gemm_ukernel__avx512vnni" in names


@pytest.mark.parametrize("name", native.kernels.u8s8_ukernels())
# n at each edge of the widths a kernel may use for a narrow panel (8, 16, 24, 32 columns)
@pytest.mark.parametrize(("rows", "k", "n"), [(1, 4, 1), (6, 64, 32), (5, 36, 17), (2, 8, 31),
                                              (6, 12, 8), (3, 20, 9), (6, 16, 16),
                                              (4, 28, 24), (6, 8, 25)])
def test_each_kernel_is_exact(name: str, rows: int, k: int, n: int):
    a = RNG.integers(0, 256, (rows, k), dtype=np.uint8)
    b = RNG.integers(-128, 128, (k, n), dtype=np.int8)
    a[0, :4] = 255  # the products vpmaddubsw would saturate
    b[:4, 0] = -128
    got = native.kernels.u8s8_ukernel(name, a, b)
    np.testing.assert_array_equal(got, a.astype(np.int32) @ b.astype(np.int32))


def test_a_kernel_outside_the_list_is_refused():
    a = np.zeros((1, 4), np.uint8)
    with pytest.raises(ValueError, match="no kernel"):
        native.kernels.u8s8_ukernel("kiln_u8s8_gemm_ukernel__sse9", a, np.zeros((4, 1), np.int8))
