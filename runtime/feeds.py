"""Feeds checked against a model's input signature before any backend sees them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kiln.backends.base import TensorSpec
from kiln.errors import InputError


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Validate ``feeds`` against ``specs`` and return them as contiguous native-endian arrays.

    Raises InputError naming the input for: an unknown or missing name, a non-array value, a
    wrong dtype, rank or fixed dim, and a symbolic dim bound to different sizes by two inputs.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a mapping of input name to numpy array, not "
                         f"{type(feeds).__name__}")
    expected = {spec.name: spec for spec in specs}
    unknown = [name for name in feeds if name not in expected]
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; the model's inputs are "
                         f"{[s.describe() for s in specs]}")
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise InputError(f"missing input(s) {missing}; expected "
                         f"{[expected[m].describe() for m in missing]}")
    symbols: dict[str, tuple[int, str]] = {}
    checked: dict[str, np.ndarray] = {}
    for name, spec in expected.items():
        value = feeds[name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"input '{name}' must be a numpy.ndarray, not "
                             f"{type(value).__name__} (expected {spec.describe()})")
        if value.dtype.newbyteorder("=") != np.dtype(spec.dtype):
            raise InputError(f"input '{name}' has dtype {value.dtype.name}, expected "
                             f"{np.dtype(spec.dtype).name} ({spec.describe()})")
        if spec.shape is not None:
            if value.ndim != len(spec.shape):
                raise InputError(f"input '{name}' has rank {value.ndim} (shape "
                                 f"{list(value.shape)}), expected rank {len(spec.shape)} "
                                 f"({spec.describe()})")
            for axis, (got, want) in enumerate(zip(value.shape, spec.shape)):
                if isinstance(want, int) and got != want:
                    raise InputError(f"input '{name}' has size {got} at axis {axis}, expected "
                                     f"{want} ({spec.describe()}; got shape {list(value.shape)})")
                if isinstance(want, str):
                    bound = symbols.setdefault(want, (got, name))
                    if bound[0] != got:
                        raise InputError(
                            f"input '{name}' axis {axis} is dim '{want}' = {got}, but input "
                            f"'{bound[1]}' already bound '{want}' = {bound[0]}")
        if value.dtype.kind != "O" and not value.dtype.isnative:
            value = value.astype(value.dtype.newbyteorder("="))
        checked[name] = np.asarray(value, order="C")  # keeps a 0-d feed 0-d
    return checked
