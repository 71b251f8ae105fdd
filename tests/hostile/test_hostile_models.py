"""Every hostile model and feed in ``cases.py``, on every CPU backend: the exact kiln error
class and a message naming the problem; no crash, no hang (risky cases run in a child)."""

from __future__ import annotations

import re

import pytest

from kiln.backends import registry

from . import cases
from .isolated import run_isolated

SAFE = [c for c in cases.CASES if not c.risky]
RISKY = [c for c in cases.CASES if c.risky]


def _params(selected):
    return [pytest.param(c, b, id=f"{c.name}-{b}") for c in selected for b in cases.CPU_BACKENDS]


def _skip_unless_applies(case, backend):
    if not registry.availability(backend).ok:
        pytest.skip(f"backend {backend} unavailable: {registry.availability(backend).reason}")
    if backend not in case.backends:
        pytest.skip(f"{case.name} is within {backend}'s limits (hostile only for "
                    f"{', '.join(case.backends)})")
    reason = case.moot(backend) if case.moot is not None else None
    if reason:
        pytest.skip(f"{case.name}: {reason}")


def _assert_refused(case, backend, outcome, message):
    error, pattern = cases.expected(case, backend)
    assert outcome == error, f"{case.name} on {backend}: expected {error}, got {outcome}: " \
                             f"{message[:500]}"
    assert re.search(pattern, message), f"{case.name} on {backend}: message {message!r} does " \
                                        f"not match {pattern!r}"


def test_at_least_forty_distinct_cases():
    names = [c.name for c in cases.CASES]
    assert len(set(names)) == len(names)
    assert len(names) >= 40
    assert {c.category for c in cases.CASES} >= {"protobuf", "version", "structure", "subgraph",
                                                  "dims", "resource", "feeds", "bounds"}


@pytest.mark.parametrize(("case", "backend"), _params(SAFE))
def test_refused(case, backend, tmp_path):
    _skip_unless_applies(case, backend)
    outcome, message = cases.run_case(case, backend, tmp_path)
    _assert_refused(case, backend, outcome, message)


@pytest.fixture(scope="module")
def isolated_results():
    """One child process per backend runs every risky case (restarted after a crash); the
    three children run at once."""
    from concurrent.futures import ThreadPoolExecutor

    backends = [b for b in cases.CPU_BACKENDS if registry.availability(b).ok]
    with ThreadPoolExecutor(len(backends) or 1) as pool:
        futures = {b: pool.submit(run_isolated, b, [c.name for c in RISKY if b in c.backends])
                   for b in backends}
        return {b: future.result() for b, future in futures.items()}


@pytest.mark.parametrize(("case", "backend"), _params(RISKY))
def test_refused_in_child(case, backend, isolated_results):
    _skip_unless_applies(case, backend)
    outcome, message = isolated_results[backend][case.name]
    _assert_refused(case, backend, outcome, message)
