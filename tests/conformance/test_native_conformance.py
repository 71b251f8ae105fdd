"""onnx's backend-test cases through ``kiln.backend.prepare(..., backend="native",
fallback=None)``.

The cases: every node case from ``onnx.backend.test.case.node.collect_testcases`` plus the
pytorch-converted, pytorch-operator and simple data folders, each checked with its own
rtol/atol the way onnx's BackendTest does (same element type, allclose).

A case whose model the native backend refuses (``UnsupportedError`` at prepare: an op,
element type or attribute it does not implement), or that kiln's importer refuses
(``ModelError``, e.g. untyped values in control-flow subgraphs), is skipped with the refusal
as reason; every case that reaches the backend must match. The default run covers a fast
subset of common operators; ``-m slow`` runs every case.

``python tests/conformance/test_native_conformance.py [backend ...]`` counts the passing
cases per backend on the same case list (default: native and onnxruntime).
"""

from __future__ import annotations

import functools
import glob
import os
import sys
import warnings
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import kiln
import kiln.backend

FAST_PREFIXES = ("test_relu", "test_add", "test_conv_", "test_gemm", "test_matmul",
                 "test_softmax", "test_maxpool", "test_averagepool", "test_concat",
                 "test_reshape", "test_transpose", "test_gather_", "test_slice",
                 "test_batchnorm", "test_layer_normalization", "test_globalaveragepool",
                 "test_lrn", "test_operator_conv", "test_Conv2d")


class Case:
    """One conformance case: a model and its (inputs, expected outputs) pairs."""

    def __init__(self, name: str, kind: str, load: Callable[[], tuple], rtol: float,
                 atol: float) -> None:
        self.name, self.kind, self._load, self.rtol, self.atol = name, kind, load, rtol, atol

    @functools.cached_property
    def content(self) -> tuple[onnx.ModelProto, list[tuple[list, list]]]:
        return self._load()


def _load_dir(model_dir: str) -> tuple[onnx.ModelProto, list[tuple[list, list]]]:
    model = onnx.load(os.path.join(model_dir, "model.onnx"))
    sets = []
    for folder in sorted(glob.glob(os.path.join(model_dir, "test_data_set_*"))):
        ins = [_read(p) for p in sorted(glob.glob(os.path.join(folder, "input_*.pb")),
                                        key=_index)]
        outs = [_read(p) for p in sorted(glob.glob(os.path.join(folder, "output_*.pb")),
                                         key=_index)]
        sets.append((ins, outs))
    return model, sets


def _index(path: str) -> int:
    return int(os.path.basename(path).split("_")[1].split(".")[0])


def _read(path: str) -> np.ndarray:
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


@functools.lru_cache(maxsize=1)
def all_cases() -> list[Case]:
    from onnx.backend.test.case.node import collect_testcases
    from onnx.backend.test.loader import load_model_tests

    cases = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node_cases = collect_testcases(None)
    for tc in node_cases:
        cases.append(Case(tc.name, "node", (lambda tc=tc: (tc.model, tc.data_sets)),
                          tc.rtol, tc.atol))
    for kind in ("pytorch-converted", "pytorch-operator", "simple"):
        for tc in load_model_tests(kind=kind):
            cases.append(Case(tc.name, kind, (lambda d=tc.model_dir: _load_dir(d)),
                              tc.rtol, tc.atol))
    return cases


class Refused(Exception):
    """The backend declined the model at prepare time (UnsupportedError)."""


def _array(value: object) -> np.ndarray:
    """A case value as an array; sequences and optionals are outside this suite's scope."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    raise Refused(f"{type(value).__name__} values (sequences, optionals) are not tensors")


def run_case(case: Case, backend: str, **options: object) -> None:
    """Runs ``case`` on ``backend``; raises Refused, or AssertionError on a wrong answer."""
    model, raw_sets = case.content
    data_sets = [([_array(x) for x in ins], [_array(x) for x in outs]) for ins, outs in raw_sets]
    try:
        rep = kiln.backend.prepare(model, "CPU", backend=backend, **options)
    except kiln.UnsupportedError as exc:
        raise Refused(str(exc)) from exc
    except kiln.ModelError as exc:  # kiln's importer refused the model before any backend
        raise Refused(f"kiln's importer: {exc}") from exc
    for inputs, expected in data_sets:
        outputs = rep.run(list(inputs))
        assert len(outputs) == len(expected), f"{len(outputs)} outputs, {len(expected)} expected"
        for out, ref in zip(outputs, expected):
            out = np.asarray(out)
            assert out.dtype == ref.dtype, f"dtype {out.dtype}, expected {ref.dtype}"
            if ref.dtype == object:
                np.testing.assert_array_equal(out, ref)
            else:
                np.testing.assert_allclose(out, ref, rtol=case.rtol, atol=case.atol)


def _param(case: Case):
    marks = [] if case.name.startswith(FAST_PREFIXES) else [pytest.mark.slow]
    return pytest.param(case, id=f"{case.kind}:{case.name}", marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in all_cases()])
def test_native_case(case: Case):
    try:
        run_case(case, "native", fallback=None)
    except Refused as exc:
        pytest.skip(f"native refuses: {str(exc)[:200]}")


def count(backend: str, **options: object) -> dict[str, list[str]]:
    """Case names per outcome: passed, refused, failed (wrong answer or error)."""
    result: dict[str, list[str]] = {"passed": [], "refused": [], "failed": []}
    for case in all_cases():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_case(case, backend, **options)
            result["passed"].append(case.name)
        except Refused:
            result["refused"].append(case.name)
        except Exception as exc:  # a failure of any kind counts against the backend
            result["failed"].append(f"{case.name}: {type(exc).__name__}: {str(exc)[:160]}")
    return result


if __name__ == "__main__":
    total = len(all_cases())
    for name in sys.argv[1:] or ["native", "onnxruntime"]:
        opts = {"fallback": None} if name == "native" else {}
        outcome = count(name, **opts)
        print(f"{name}: {len(outcome['passed'])} of {total} passed, "
              f"{len(outcome['refused'])} refused, {len(outcome['failed'])} failed")
        if os.environ.get("KILN_CONFORMANCE_VERBOSE"):
            for line in outcome["failed"]:
                print("  FAIL", line)
