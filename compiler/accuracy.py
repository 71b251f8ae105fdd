"""Accuracy report: how far a reduced-precision or pruned model drifts from its fp32 original.

Per output, over a list of samples: cosine similarity per batch item (mean and worst), max
absolute error, max relative error ``|a - b| / max(|a|, eps)`` with
``eps = 1e-3 * max|a|`` (so near-zero reference values do not dominate), and, for
classifier-shaped outputs (``[N, C]`` with C >= 2), top-1 and top-5 agreement with fp32 and,
when labels are given, top-1 accuracy of both models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[Feeds], Mapping[str, np.ndarray]]


@dataclasses.dataclass
class OutputAccuracy:
    name: str
    cosine_mean: float
    cosine_min: float
    max_abs_error: float
    max_rel_error: float
    nonfinite: int
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    reference_top1: float | None = None
    candidate_top1: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AccuracyReport:
    samples: int
    outputs: list[OutputAccuracy]

    def worst_cosine(self) -> float:
        return min(o.cosine_min for o in self.outputs)

    def drop(self) -> float:
        """Accuracy lost, in [0, 1]: the labelled top-1 drop when labels were given, else the
        top-1 disagreement for classifiers, else 1 - the worst sample's cosine; the worst
        output counts."""
        worst = 0.0
        for o in self.outputs:
            if o.reference_top1 is not None and o.candidate_top1 is not None:
                d = o.reference_top1 - o.candidate_top1
            elif o.top1_agreement is not None:
                d = 1.0 - o.top1_agreement
            else:
                d = 1.0 - o.cosine_min
            worst = max(worst, d)
        return worst

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "drop": self.drop(),
                "outputs": [o.to_json() for o in self.outputs]}

    def lines(self) -> list[str]:
        out = []
        for o in self.outputs:
            text = (f"{o.name}: cosine mean {o.cosine_mean:.6f} min {o.cosine_min:.6f}, "
                    f"max abs {o.max_abs_error:.3g}, max rel {o.max_rel_error:.3g}")
            if o.top1_agreement is not None:
                text += f", top-1 agree {o.top1_agreement * 100:.2f}%"
            if o.top5_agreement is not None:
                text += f", top-5 agree {o.top5_agreement * 100:.2f}%"
            if o.reference_top1 is not None:
                text += (f", top-1 acc fp32 {o.reference_top1 * 100:.2f}% -> "
                         f"{(o.candidate_top1 or 0.0) * 100:.2f}%")
            if o.nonfinite:
                text += f", {o.nonfinite} NaN/Inf values"
            out.append(text)
        return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine per leading index (e.g. per sentence embedding)."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    num = np.sum(a * b, axis=1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(na * nb > 0, num / np.maximum(na * nb, 1e-300), 0.0)
    return np.where(both_zero, 1.0, cos)


def _classifier(x: np.ndarray) -> bool:
    return x.ndim == 2 and x.shape[1] >= 2


def compare(reference: Sequence[Mapping[str, np.ndarray]],
            candidate: Sequence[Mapping[str, np.ndarray]],
            labels: Sequence[np.ndarray] | None = None,
            classifier: bool | None = None) -> AccuracyReport:
    """Compare lists of output dicts (one per sample, same keys). ``classifier`` says whether
    [N, C] outputs are class scores (None: assume so for every [N, C >= 2] output)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError("compare needs the same, non-zero number of reference and candidate "
                         "results")
    outputs = []
    for name in reference[0]:
        refs = [np.asarray(r[name]) for r in reference]
        cands = [np.asarray(c[name]) for c in candidate]
        # one cosine per batch item (a sentence, an image), or per sample for scalars
        cos = [float(x) for r, c in zip(refs, cands)
               for x in (row_cosines(r, c) if r.ndim >= 2 else [cosine(r, c)])]
        nonfinite = int(sum(np.size(c) - np.isfinite(c).sum() for c in cands
                            if np.issubdtype(c.dtype, np.floating)))
        abs_err = max(float(np.max(np.abs(r.astype(np.float64) - c))) if r.size else 0.0
                      for r, c in zip(refs, cands))
        rel = []
        for r, c in zip(refs, cands):
            r64 = r.astype(np.float64)
            eps = 1e-3 * max(float(np.max(np.abs(r64))) if r.size else 0.0, 1e-12)
            rel.append(float(np.max(np.abs(r64 - c) / np.maximum(np.abs(r64), eps)))
                       if r.size else 0.0)
        acc = OutputAccuracy(name, float(np.mean(cos)), float(np.min(cos)), abs_err, max(rel),
                             nonfinite)
        if classifier is not False and all(_classifier(r) for r in refs):
            r_all = np.concatenate(refs)
            c_all = np.concatenate(cands)
            ref_top1 = r_all.argmax(1)
            acc.top1_agreement = float(np.mean(ref_top1 == c_all.argmax(1)))
            if r_all.shape[1] > 5:
                top5 = np.argsort(-c_all, axis=1)[:, :5]
                acc.top5_agreement = float(np.mean([t in row for t, row in zip(ref_top1, top5)]))
            if labels is not None:
                y = np.concatenate([np.atleast_1d(lb) for lb in labels])
                if y.shape[0] == r_all.shape[0]:
                    acc.reference_top1 = float(np.mean(ref_top1 == y))
                    acc.candidate_top1 = float(np.mean(c_all.argmax(1) == y))
        outputs.append(acc)
    return AccuracyReport(len(reference), outputs)


def evaluate(reference: Runner, candidate: Runner, samples: Sequence[Feeds],
             labels: Sequence[np.ndarray] | None = None,
             classifier: bool | None = None) -> AccuracyReport:
    """Run both models on every sample and compare their outputs."""
    refs = [dict(reference(s)) for s in samples]
    cands = [dict(candidate(s)) for s in samples]
    return compare(refs, cands, labels, classifier)


def onnxruntime_runner(model: Any, optimize: bool = True) -> Runner:
    """A runner over an ``onnx_ir.Model`` or ``onnx.ModelProto`` on onnxruntime's CPU EP."""
    from kiln.compiler.reference import reference_session

    session = reference_session(model, optimize)
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, dict(feeds))))

    return run
