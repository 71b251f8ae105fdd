"""CompileReport: totals, JSON and the text summary."""

from __future__ import annotations

import json

from kiln.compiler.report import CompileReport, PassRecord


def test_report_totals_and_json():
    report = CompileReport(level=2, target="cpu:avx2", backend="onnxruntime",
                           pipeline=["a", "b"])
    report.passes = [PassRecord("a", 0.25, 10, 8, True, {"R1": 2}),
                     PassRecord("b", 0.5, 8, 8, False, {"R1": 1, "R2": 3}, {"R2: why": 4})]
    assert report.seconds == 0.75
    assert report.fired() == {"R1": 3, "R2": 3}
    data = json.loads(json.dumps(report.to_json()))
    assert data["passes"][1]["rejected"] == {"R2: why": 4}
    text = report.summary()
    assert "O2 for cpu:avx2 / onnxruntime" in text and "R2 x3" in text
