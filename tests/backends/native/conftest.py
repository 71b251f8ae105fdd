"""Shared fixtures for the native kernel tests: every ISA path this machine can run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

native = pytest.importorskip("kiln.backends.native._native")

_ORDER = ["generic", "avx2", "avx512"]


def runnable_isas() -> list[str]:
    """ISAs the CPU supports, slowest first (the generic path always runs)."""
    best = native.best_isa()
    return _ORDER[: _ORDER.index(best) + 1]


@pytest.fixture(params=_ORDER)
def isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """Caps kernel dispatch at one ISA for the test, then restores the best one."""
    name = request.param
    if name not in runnable_isas():
        pytest.skip(f"this CPU cannot run the {name} kernels")
    assert native.set_isa_cap(name) == name
    yield name
    native.set_isa_cap("avx512")
