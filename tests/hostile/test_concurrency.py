"""One Session shared by 8 Python threads gives bit-identical results to serial runs, on
every CPU backend, with no crash."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln
from kiln.backends import registry

from .cases import CPU_BACKENDS, model, vi

THREADS, RUNS = 8, 12


def mlp():
    """x[N,64] -> MatMul -> Add -> Relu -> MatMul -> Add -> Softmax."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (64, 128)), ("b1", (128,)), ("w2", (128, 16)), ("b2", (16,)))]
    nodes = [h.make_node("MatMul", ["x", "w1"], ["m1"]), h.make_node("Add", ["m1", "b1"], ["a1"]),
             h.make_node("Relu", ["a1"], ["r1"]), h.make_node("MatMul", ["r1", "w2"], ["m2"]),
             h.make_node("Add", ["m2", "b2"], ["a2"]), h.make_node("Softmax", ["a2"], ["y"])]
    return model(nodes, [vi("x", ["N", 64])], [vi("y", ["N", 16])], inits=inits)


def elementwise():
    """What every native engine runs: y = Relu(x + x) + x, on x[N,64]."""
    nodes = [h.make_node("Add", ["x", "x"], ["s"]), h.make_node("Relu", ["s"], ["r"]),
             h.make_node("Add", ["r", "x"], ["y"])]
    return model(nodes, [vi("x", ["N", 64])], [vi("y", ["N", 64])])


def _session(backend: str) -> kiln.Session:
    try:
        return kiln.Session(mlp(), backend=backend, fallback=None) if backend == "native" \
            else kiln.Session(mlp(), backend=backend)
    except kiln.UnsupportedError:  # a native engine without MatMul/Softmax yet
        return kiln.Session(elementwise(), backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_eight_threads_bit_identical_to_serial(backend):
    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    session = _session(backend)
    rng = np.random.default_rng(1)
    feeds = [[{"x": rng.standard_normal((1 + (t + r) % 5, 64)).astype(np.float32)}
              for r in range(RUNS)] for t in range(THREADS)]
    serial = [[session.run(None, f)[0] for f in per_thread] for per_thread in feeds]
    results: list[list] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for f in feeds[t]:
                results[t].append(session.run(None, f)[0])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a run hung"
    assert not errors, errors[0]
    for t in range(THREADS):
        for r in range(RUNS):
            got, want = results[t][r], serial[t][r]
            assert got.shape == want.shape and got.dtype == want.dtype
            assert got.tobytes() == want.tobytes(), f"thread {t} run {r} differs from serial"
