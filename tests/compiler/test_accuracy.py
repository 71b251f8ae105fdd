"""The accuracy report: cosine, errors, top-k agreement, the drop used by budgets."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler import accuracy


def test_identical_outputs():
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    rep = accuracy.compare([{"y": x}], [{"y": x.copy()}], labels=[x.argmax(1)])
    o = rep.outputs[0]
    assert o.cosine_min == pytest.approx(1.0) and o.max_abs_error == 0.0
    assert o.top1_agreement == 1.0 and o.top5_agreement == 1.0
    assert o.reference_top1 == o.candidate_top1 == 1.0
    assert rep.drop() == 0.0


def test_disagreement_and_errors():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], np.float32)
    cand = np.array([[1.0, 3.0, 0.0], [0.0, 2.0, 1.0]], np.float32)
    rep = accuracy.compare([{"y": ref}], [{"y": cand}], labels=[np.array([0, 1])])
    o = rep.outputs[0]
    assert o.top1_agreement == 0.5
    assert o.reference_top1 == 1.0 and o.candidate_top1 == 0.5
    assert rep.drop() == pytest.approx(0.5)
    assert o.max_abs_error == pytest.approx(2.0)
    assert o.cosine_min == pytest.approx(6.0 / 10.0)  # first row: (3+3)/(sqrt10*sqrt10)


def test_embeddings_use_worst_row_cosine():
    ref = np.eye(3, 8, dtype=np.float32)
    cand = ref.copy()
    cand[2, 3] = 1.0  # third row at 45 degrees
    rep = accuracy.compare([{"e": ref}], [{"e": cand}], classifier=False)
    o = rep.outputs[0]
    assert o.top1_agreement is None
    assert o.cosine_min == pytest.approx(np.sqrt(0.5))
    assert rep.drop() == pytest.approx(1 - np.sqrt(0.5))


def test_nonfinite_values_are_counted():
    ref = np.ones((1, 4), np.float32)
    cand = ref.copy()
    cand[0, 1] = np.nan
    rep = accuracy.compare([{"y": ref}], [{"y": cand}])
    assert rep.outputs[0].nonfinite == 1
    assert "NaN/Inf" in rep.lines()[0]


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError):
        accuracy.compare([], [])


def test_zero_rows():
    a = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)
    b = np.array([[0.0, 0.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(accuracy.row_cosines(a, b), [1.0, 0.0])
