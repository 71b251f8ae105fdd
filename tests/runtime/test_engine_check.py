"""An int8 compile checks that its engine computes the quantized graph as onnxruntime does
(runtime/engine_check.py): a placement the engine miscomputes is replaced by the chained one,
and an engine that miscomputes every placement is refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from model_builders import make_conv_model

import kiln
from kiln.backends import registry
from kiln.compiler.accuracy import cosine
from kiln.runtime import engine_check


def _needs(backend: str) -> None:
    status = registry.availability(backend)
    if not status.ok:
        pytest.skip(f"{backend} unavailable: {status.reason}")


PAGES = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)}
         for i in range(6)]


@pytest.mark.parametrize("backend", ["native", "openvino"])
def test_an_engine_that_agrees_is_kept_as_compiled(backend: str):
    _needs(backend)
    session = kiln.Session(make_conv_model().SerializeToString(), backend=backend,
                           precision="int8", calibration=PAGES)
    assert not any("placement" in line for line in session.reduction.lines())
    fp32 = kiln.Session(make_conv_model().SerializeToString(), backend=backend)
    assert cosine(fp32(**PAGES[0])["y"], session(**PAGES[0])["y"]) > 0.98


def test_agreement_finds_the_worst_float_output():
    class Engine:  # outputs as an engine returns them: one right, one sign-flipped
        def run(self, feeds):
            return {"a": np.ones(4, np.float32), "b": -np.ones(4, np.float32)}

    worst, where = engine_check.agreement({"a": np.ones(4), "b": np.ones(4)}, Engine(), {})
    assert (worst, where) == (-1.0, "b")


def _first_check_fails(monkeypatch):
    """The first agreement check of the compile reports a miscomputed graph (as OpenVINO
    2026.4's 'inputs' placement of a PP-OCRv4 detector on Zen 4 measured); later ones measure."""
    measured = engine_check.agreement
    calls = []

    def agreement(expected, engine, feeds):
        calls.append(1)
        return (0.05, "y") if len(calls) == 1 else measured(expected, engine, feeds)

    monkeypatch.setattr(engine_check, "agreement", agreement)
    return calls


def test_a_miscomputed_inputs_placement_is_replaced_by_the_chained_one(monkeypatch):
    _needs("openvino")
    calls = _first_check_fails(monkeypatch)
    session = kiln.Session(make_conv_model().SerializeToString(), backend="openvino",
                           precision="int8", calibration=PAGES)
    assert len(calls) == 2
    assert any("'inputs' Q/DQ placement differently" in line and "chained" in line
               for line in session.reduction.lines())
    fp32 = kiln.Session(make_conv_model().SerializeToString(), backend="openvino")
    assert cosine(fp32(**PAGES[0])["y"], session(**PAGES[0])["y"]) > 0.98


def test_an_engine_that_miscomputes_the_chained_placement_is_refused(monkeypatch):
    _needs("native")
    _first_check_fails(monkeypatch)
    with pytest.raises(kiln.KilnError, match=r"native computes this int8 graph differently"):
        kiln.Session(make_conv_model().SerializeToString(), backend="native", precision="int8",
                     calibration=PAGES)


def test_nan_or_a_missing_output_is_disagreement():
    class Engine:
        def run(self, feeds):
            return {"a": np.array([1.0, np.nan], np.float32)}

    assert engine_check.agreement({"a": np.ones(2)}, Engine(), {})[0] == -1.0
    assert engine_check.agreement({"b": np.ones(2)}, Engine(), {}) == (-1.0, "b")


def test_calibration_from_a_generator_serves_every_step(monkeypatch):
    """The check and a second placement read the samples after the quantizer did."""
    _needs("openvino")
    _first_check_fails(monkeypatch)
    session = kiln.Session(make_conv_model().SerializeToString(), backend="openvino",
                           precision="int8", calibration=(page for page in PAGES))
    assert any("chained" in line for line in session.reduction.lines())
