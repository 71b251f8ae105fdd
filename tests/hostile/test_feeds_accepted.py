"""Feeds kiln accepts on purpose, on every CPU backend: zero-size tensors, NaN/Inf (propagated
as the math says), non-contiguous views and big-endian arrays (converted, same answer)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper as h

import kiln
from kiln.backends import registry

from .cases import CPU_BACKENDS, model, vi


def _session(backend: str) -> kiln.Session:
    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    # y = Relu(a + b): both ops every native engine has.
    m = model([h.make_node("Add", ["a", "b"], ["s"]), h.make_node("Relu", ["s"], ["y"])],
              [vi("a", ["N", 4]), vi("b", ["N", 4])], [vi("y", ["N", 4])])
    return kiln.Session(m, backend=backend)


def _expected(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.maximum(a.astype(np.float32) + b.astype(np.float32), 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_zero_size(backend):
    [y] = _session(backend).run(None, {"a": np.ones((0, 4), np.float32),
                                       "b": np.ones((0, 4), np.float32)})
    assert y.shape == (0, 4) and y.dtype == np.float32


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nan_and_inf_propagate(backend):
    a = np.array([[np.nan, np.inf, -np.inf, 1.0], [np.inf, 2.0, np.nan, -1.0]], np.float32)
    b = np.array([[1.0, 1.0, 1.0, 1.0], [-np.inf, 0.0, 0.0, 0.0]], np.float32)
    [y] = _session(backend).run(None, {"a": a, "b": b})
    want = _expected(a, b)
    # inf - inf is NaN; Relu(NaN) is NaN in IEEE max-semantics engines, 0 is also seen (the
    # spec leaves it open), so NaN positions must be NaN or 0 and everything else exact.
    nan = np.isnan(want)
    assert np.array_equal(y[~nan], want[~nan])
    assert np.all(np.isnan(y[nan]) | (y[nan] == 0))
    assert y[0, 1] == np.inf


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_views(backend):
    rng = np.random.default_rng(0)
    big = rng.standard_normal((6, 8)).astype(np.float32)
    a = big[::2, ::2]                 # strided view
    b = np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32))
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    [y] = _session(backend).run(None, {"a": a, "b": b})
    np.testing.assert_array_equal(y, _expected(np.ascontiguousarray(a), np.ascontiguousarray(b)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_big_endian_converted(backend):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 4)).astype(">f4")
    b = rng.standard_normal((3, 4)).astype(">f4")
    [y] = _session(backend).run(None, {"a": a, "b": b})
    assert y.dtype == np.float32 and y.dtype.isnative
    np.testing.assert_array_equal(y, _expected(a, b))
