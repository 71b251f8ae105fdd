"""kiln.runtime.guards: the estimate, the limits and the timeout.

The hostile cases themselves (one per refusal) live in tests/hostile/."""

from __future__ import annotations

import threading
import time

import pytest

from kiln.errors import ModelError, ResourceError
from kiln.runtime import guards


def test_default_max_memory_is_three_quarters_of_the_machine():
    assert guards.default_max_memory() == guards.machine_memory() * 3 // 4
    assert guards.machine_memory() > 2**28


def test_from_options_pops_only_its_own():
    options = {"max_memory": 2**30, "timeout": 5, "device": "CPU"}
    g = guards.Guards.from_options(options)
    assert (g.max_memory, g.timeout) == (2**30, 5.0)
    assert options == {"device": "CPU"}


@pytest.mark.parametrize(("start", "limit", "delta", "n"), [
    (0, 10, 3, 4), (10, 0, -3, 4), (0, 10, -1, 0), (0, 10**18, 1, 10**18), (0.0, 1.0, 0.25, 4)])
def test_range_length_is_exact(start, limit, delta, n):
    assert guards.range_length(start, limit, delta, "r", ModelError) == n


def test_range_delta_zero():
    with pytest.raises(ModelError, match="delta 0"):
        guards.range_length(0, 1, 0, "r", ModelError)


def test_timeout_returns_while_the_work_goes_on():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(ResourceError, match="did not finish within the timeout of 0.2 s"):
        guards.call_with_timeout(lambda: release.wait(30), 0.2, "run")
    assert time.monotonic() - started < 10
    release.set()


def test_timeout_passes_results_and_errors_through():
    assert guards.call_with_timeout(lambda: 7, 5, "run") == 7
    with pytest.raises(ModelError, match="boom"):
        guards.call_with_timeout(lambda: (_ for _ in ()).throw(ModelError("boom")), 5, "run")


def test_only_integer_inputs_are_read_to_fold_shape_arithmetic(monkeypatch):
    """A float constant beside shape arithmetic (a bias mapped from a file) is never read;
    the integer shape it feeds into is still folded, and its size still checked."""
    import numpy as np
    from model_builders import float_model
    from onnx import helper

    nodes = [helper.make_node("Add", ["x", "bias"], ["b"]),
             helper.make_node("Mul", ["n", "n"], ["nn"]),
             helper.make_node("ConstantOfShape", ["nn"], ["y"])]
    model = float_model(nodes, {"x": [4]}, {"b": [4], "y": [None]},
                        {"bias": np.ones(4, np.float32), "n": np.array([2**20], np.int64)})
    read = []
    kind = type(model.graph.initializers["bias"].const_value)
    numpy = kind.numpy
    monkeypatch.setattr(kind, "numpy", lambda t: read.append(t.name) or numpy(t))
    guards.check_model(model, guards.Guards(max_memory=2**43), "onnxruntime")
    assert read == ["n"]
    with pytest.raises(ResourceError, match="ConstantOfShape"):
        guards.check_model(model, guards.Guards(max_memory=2**41), "onnxruntime")
