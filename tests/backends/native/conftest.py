"""Shared fixtures for the native tests: every ISA path this machine can run, and the
small-model helpers in native_cases.py (importlib mode keeps test folders off sys.path, so
this folder is put there for them)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.backends.native import _native as native

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_ORDER = ["generic", "avx2", "avx512"]


def runnable_isas() -> list[str]:
    """ISAs the CPU supports, slowest first (the generic path always runs)."""
    best = native.best_isa()
    return _ORDER[: _ORDER.index(best) + 1]


if os.environ.get("KILN_NATIVE_ISA"):  # the whole run on one ISA path (kernels capped)
    native.set_isa_cap(os.environ["KILN_NATIVE_ISA"])


@pytest.fixture(params=_ORDER)
def isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """Caps kernel dispatch at one ISA for the test, then restores the best one."""
    name = request.param
    if name not in runnable_isas():
        pytest.skip(f"this CPU cannot run the {name} kernels")
    assert native.set_isa_cap(name) == name
    yield name
    native.set_isa_cap(os.environ.get("KILN_NATIVE_ISA", "avx512"))
