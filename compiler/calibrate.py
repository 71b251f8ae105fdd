"""Calibration: the value ranges of a model's float tensors, observed on real data.

The fp32 model runs on onnxruntime (the reference) with every tensor of interest exposed as an
extra output; an observer per tensor turns what it saw into a range ``(lo, hi)`` that the
quantize pass maps onto int8/uint8. Methods:

- ``minmax``: the smallest and largest value seen. Exact, but one outlier widens the step
  for every other value.
- ``percentile`` (default 99.99): clip each tail at that percentile of the values seen.
- ``entropy``: the clipping threshold ``t`` that minimises KL(P || Q), where P is the
  histogram of |x| clipped at ``t`` (outliers folded into the last bin) and Q is P squeezed
  into the number of int8 levels and expanded back.
- ``mse``: the ``t`` minimising the expected squared error ``sum_b n_b * e_b``, with
  ``e_b = step^2 / 12`` (rounding) for bins below ``t`` and ``(c_b - t)^2`` (clipping) above
  it, ``step = t / levels``.

All but ``minmax`` need a histogram, so they make two passes over the samples: one for the
min/max (which fixes the histogram range), one to fill it. Memory is one sample's
activations plus ``bins`` counters per tensor.

Calibration data is a folder of ``.npz`` files (one sample each, keys = input names) or
``.npy`` files (single-input models), or ``random:N`` for smoke tests only.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from kiln.errors import InputError, ModelError

METHODS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_PERCENTILE = 99.99

Sample = dict[str, np.ndarray]


class RandomCalibrationWarning(UserWarning):
    """Calibrating on random data: ranges mean nothing for real inputs."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Observed range of one tensor; ``lo <= 0 <= hi`` always holds (zero is exact)."""

    lo: float
    hi: float

    @property
    def amax(self) -> float:
        return max(-self.lo, self.hi)


# ------------------------------------------------------------------------------------------
# calibration data


def _input_specs(model: ir.Model) -> list[tuple[str, np.dtype, list[int | None] | None]]:
    specs = []
    for v in model.graph.inputs:
        if v.is_initializer():
            continue
        dtype = v.dtype.numpy() if v.dtype is not None else np.dtype(np.float32)
        dims = None if v.shape is None else [d if isinstance(d, int) else None for d in v.shape]
        specs.append((str(v.name), dtype, dims))
    return specs


def random_samples(model: ir.Model, count: int, seed: int = 0,
                   dims: Mapping[str, int] | None = None) -> list[Sample]:
    """``count`` random feeds (uniform [0, 1) floats, small ints). Smoke tests only.

    Symbolic dims take their value from ``dims`` (by symbol name) or 1.
    """
    warnings.warn("calibrating on random data: the int8 ranges will not fit real inputs; use "
                  "this for smoke tests only and pass --calibration DIR for a real compile",
                  RandomCalibrationWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    out = []
    for _ in range(count):
        feed = {}
        for v in model.graph.inputs:
            if v.is_initializer():
                continue
            shape = []
            for d in (v.shape or []):
                shape.append(d if isinstance(d, int) else dims.get(str(d), 1))
            dtype = v.dtype.numpy() if v.dtype is not None else np.dtype(np.float32)
            if np.issubdtype(dtype, np.floating):
                feed[str(v.name)] = rng.random(shape, dtype=np.float32).astype(dtype)
            else:
                feed[str(v.name)] = rng.integers(0, 2, shape).astype(dtype)
        out.append(feed)
    return out


def load_samples(folder: str | Path, model: ir.Model) -> list[Sample]:
    """Read a calibration folder: ``*.npz`` (keys = input names) or ``*.npy`` (one input).

    Raises InputError naming the file and the input when a sample does not fit the model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration data {str(folder)!r} is not a folder; pass a folder of "
                         ".npz/.npy samples or random:N")
    specs = _input_specs(model)
    names = [s[0] for s in specs]
    files = sorted(p for p in folder.iterdir() if p.suffix in (".npz", ".npy"))
    if not files:
        raise InputError(f"calibration folder {str(folder)!r} holds no .npz or .npy files")
    samples = []
    for path in files:
        if path.suffix == ".npy":
            if len(names) != 1:
                raise InputError(f"{path.name}: .npy samples only fit single-input models; this "
                                 f"model has inputs {names}; use .npz with those keys")
            feed = {names[0]: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as z:
                feed = {k: z[k] for k in z.files}
        missing = [n for n in names if n not in feed]
        if missing:
            raise InputError(f"{path.name}: missing input(s) {missing}; keys are {list(feed)}")
        for name, dtype, dims in specs:
            arr = feed[name]
            if dims is not None and (arr.ndim != len(dims) or any(
                    d is not None and d != a for d, a in zip(dims, arr.shape))):
                raise InputError(f"{path.name}: input {name!r} has shape {list(arr.shape)}, "
                                 f"the model expects {['?' if d is None else d for d in dims]}")
            feed[name] = arr.astype(dtype, copy=False)
        samples.append({n: feed[n] for n in names})
    return samples


def parse_calibration(spec: str | Path, model: ir.Model, seed: int = 0) -> list[Sample]:
    """``random:N`` or a folder path, as given to ``--calibration``."""
    text = str(spec)
    if text.startswith("random:"):
        try:
            count = int(text.split(":", 1)[1])
        except ValueError:
            count = 0
        if count <= 0:
            raise InputError(f"bad calibration {text!r}: expected random:N with N > 0")
        return random_samples(model, count, seed)
    return load_samples(text, model)


# ------------------------------------------------------------------------------------------
# running the fp32 model


def float_tensors(model: ir.Model) -> list[str]:
    """Names of every float32 value computed by a node or fed as a graph input."""
    proto = ir.serde.serialize_model(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is best effort; declared types still count
        pass
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)}
    names = [str(v.name) for v in model.graph.inputs if v.dtype == ir.DataType.FLOAT]
    for node in model.graph:
        for v in node.outputs:
            known = v.dtype if v.dtype is not None else (
                ir.DataType(types[v.name]) if types.get(v.name) else None)
            if v.name and known == ir.DataType.FLOAT:
                names.append(v.name)
    return list(dict.fromkeys(names))


class TensorTap:
    """An onnxruntime session over ``model`` that also returns the named intermediate tensors."""

    def __init__(self, model: ir.Model, tensors: Sequence[str]) -> None:
        from kiln.compiler.reference import reference_session

        proto = ir.serde.serialize_model(model)
        present = {o.name for o in proto.graph.output}
        known = {v.name: v for v in proto.graph.value_info}
        for name in tensors:
            if name in present:
                continue
            if name in known:
                proto.graph.output.append(known[name])
            else:
                proto.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        try:
            self._session = reference_session(proto, optimize=False)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot run the fp32 model for calibration: {exc}") \
                from exc
        self.tensors = list(tensors)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self.tensors, dict(feed))
        return dict(zip(self.tensors, values))


# ------------------------------------------------------------------------------------------
# observers


def _kl_threshold(hist: np.ndarray, width: float, levels: int) -> float:
    """Threshold (in value units) minimising KL(P || Q) for a histogram of |x|."""
    nbins = len(hist)
    best, best_t = np.inf, nbins
    total = hist.sum()
    if total == 0:
        return width * nbins
    for t in range(max(levels, 16), nbins + 1, max(1, nbins // 256)):
        inside = hist[:t].astype(np.float64)
        p = inside.copy()
        p[-1] += hist[t:].sum()  # clipped outliers land in the last bin
        # squeeze the unclipped bins into `levels` groups, spread each group's mass evenly
        # over its non-empty bins: what int8 can represent of P
        edges = np.linspace(0, t, levels + 1).astype(int)
        q = np.zeros(t)
        for a, b in zip(edges[:-1], edges[1:]):
            if b <= a:
                continue
            nz = p[a:b] > 0
            if nz.any():
                q[a:b][nz] = inside[a:b].sum() / nz.sum()
        pn, qn = p / p.sum(), q / max(q.sum(), 1e-30)
        mask = pn > 0
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / np.maximum(qn[mask], 1e-12))))
        if kl < best:
            best, best_t = kl, t
    return best_t * width


def _mse_threshold(hist: np.ndarray, width: float, levels: int) -> float:
    """Threshold minimising expected squared quantisation error for a histogram of |x|."""
    centers = (np.arange(len(hist)) + 0.5) * width
    best, best_t = np.inf, len(hist) * width
    for t in np.arange(1, len(hist) + 1) * width:
        step = t / levels
        inside = centers <= t
        err = (hist[inside].sum() * step * step / 12.0
               + np.sum(hist[~inside] * (centers[~inside] - t) ** 2))
        if err < best:
            best, best_t = err, t
    return float(best_t)


class Observer:
    """Accumulates one tensor's statistics over the calibration samples."""

    def __init__(self, method: str, percentile: float, bins: int, levels: int) -> None:
        self.method, self.percentile, self.bins, self.levels = method, percentile, bins, levels
        self.lo, self.hi = np.inf, -np.inf
        self.hist: np.ndarray | None = None
        self.edges: np.ndarray | None = None

    def observe_minmax(self, x: np.ndarray) -> None:
        if x.size:
            finite = x[np.isfinite(x)] if not np.isfinite(x).all() else x
            if finite.size:
                self.lo = min(self.lo, float(finite.min()))
                self.hi = max(self.hi, float(finite.max()))

    @property
    def needs_histogram(self) -> bool:
        if self.method == "minmax" or not np.isfinite(self.lo) or not self.hi > self.lo:
            return False
        # Bins narrower than float32 resolution cannot be told apart (numpy refuses them): a
        # range that narrow is a constant for int8, and min/max already gives its scale.
        lo, hi = (self.lo, self.hi) if self.method == "percentile" else \
            (0.0, max(-self.lo, self.hi))
        resolution = np.finfo(np.float32).eps * max(abs(lo), abs(hi))
        return hi - lo > 8 * self.bins * max(resolution, float(np.finfo(np.float32).tiny))

    def observe_histogram(self, x: np.ndarray) -> None:
        if self.method == "percentile":
            h, self.edges = np.histogram(x, bins=self.bins, range=(self.lo, self.hi))
        else:
            amax = max(-self.lo, self.hi)
            # exact zeros (ReLU outputs, padding) are exact in int8 whatever the threshold;
            # left in, their spike pulls the KL and MSE optimum towards tiny thresholds
            mags = np.abs(x)
            h, self.edges = np.histogram(mags[mags != 0], bins=self.bins, range=(0.0, amax))
        self.hist = h if self.hist is None else self.hist + h

    def range(self) -> Range:
        if not np.isfinite(self.lo):  # never saw a finite value
            return Range(0.0, 0.0)
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if self.method == "minmax" or self.hist is None or self.edges is None:
            return Range(lo, hi)
        if self.method == "percentile":
            cdf = np.cumsum(self.hist) / max(self.hist.sum(), 1)
            tail = (100.0 - self.percentile) / 100.0
            lo_i = int(np.searchsorted(cdf, tail))
            hi_i = int(np.searchsorted(cdf, 1.0 - tail))
            plo = float(self.edges[min(lo_i, len(self.edges) - 1)])
            phi = float(self.edges[min(hi_i + 1, len(self.edges) - 1)])
            return Range(min(max(plo, lo), 0.0), max(min(phi, hi), 0.0))
        width = float(self.edges[1] - self.edges[0])
        levels = self.levels if self.lo < 0 else 2 * self.levels + 1
        if self.method == "entropy":
            t = _kl_threshold(self.hist, width, levels)
        else:
            t = _mse_threshold(self.hist, width, levels)
        return Range(max(lo, -t), min(hi, t))


def collect_ranges(model: ir.Model, samples: Iterable[Sample], tensors: Sequence[str] | None = None,
                   method: str = "percentile", percentile: float = DEFAULT_PERCENTILE,
                   bins: int = 2048) -> dict[str, Range]:
    """Run the fp32 ``model`` on ``samples`` and return a Range for every tensor in ``tensors``
    (default: every float tensor)."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose one of {METHODS}")
    if not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")
    samples = list(samples)
    if not samples:
        raise InputError("calibration needs at least one sample")
    names = list(tensors) if tensors is not None else float_tensors(model)
    tap = TensorTap(model, names)
    observers = {n: Observer(method, percentile, bins, levels=127) for n in names}
    for feed in samples:
        for name, value in tap.run(feed).items():
            if np.issubdtype(value.dtype, np.floating):
                observers[name].observe_minmax(value)
    if method != "minmax":
        hist_names = [n for n, o in observers.items() if o.needs_histogram]
        for feed in samples:
            for name, value in tap.run(feed).items():
                if name in hist_names and np.issubdtype(value.dtype, np.floating):
                    observers[name].observe_histogram(value)
    return {n: o.range() for n, o in observers.items()}
