"""bench_report: ranking, speed-ups against the baseline, markdown tables and the plot, from a
real bench run (onnxruntime and native measured, TensorRT unavailable on this machine)."""

from __future__ import annotations

import pytest
from model_builders import make_conv_model

from kiln.runtime.bench import BenchConfig, run_bench, score
from kiln.runtime.bench_report import plot, ranking, scenario_rows, speedup, to_markdown

FAST = dict(iterations=4, block=2, warmup=1, offline_samples=6, offline_batch=4,
            offline_rounds=1)


@pytest.fixture(scope="module")
def report():
    config = BenchConfig(backends=["onnxruntime", "native", "tensorrt"],
                         scenarios=["single-stream", "offline"], threads=1, **FAST)
    return run_bench(make_conv_model(batch="N").SerializeToString(), config)


def test_rows_group_by_scenario_in_run_order(report):
    grouped = scenario_rows(report)
    assert list(grouped) == ["single-stream", "offline"]
    assert [r["backend"] for r in grouped["offline"]] == ["onnxruntime", "native", "tensorrt"]


def test_ranking_and_speedup_against_the_baseline(report):
    best, base = ranking(report, "single-stream")
    ok = [r for r in scenario_rows(report)["single-stream"] if r["status"] == "ok"]
    assert best is max(ok, key=score)
    assert base["backend"] == "onnxruntime" and base["precision"] == "fp32"
    assert speedup(base, base) == pytest.approx(1.0)
    native = next(r for r in ok if r["backend"] == "native")
    assert speedup(native, base) == pytest.approx(score(native) / score(base))
    unavailable = next(r for r in report["results"] if r["backend"] == "tensorrt")
    assert speedup(unavailable, base) is None and speedup(native, None) is None


def test_markdown_has_one_table_per_scenario_with_the_fastest_in_bold(report):
    md = to_markdown(report, title="conv")
    lines = md.splitlines()
    assert lines[0] == "## conv"
    assert "### single-stream" in lines and "### offline" in lines
    single = lines.index("### single-stream")
    assert lines[single + 2].startswith("| backend | precision | status | p50 ms")
    offline = lines.index("### offline")
    assert lines[offline + 2].startswith("| backend | precision | status | QPS | p50 ms")
    best, _ = ranking(report, "single-stream")
    best_line = next(line for line in lines[single:offline]
                     if line.startswith(f"| {best['backend']} |"))
    assert f"**{best['latency_ms']['p50']:.3f}**" in best_line
    base_line = next(line for line in lines[single:offline]
                     if line.startswith("| onnxruntime | fp32 | ok |"))
    assert "| 1.00x |" in base_line
    # the unavailable backend is a row and a note saying why, never a number
    assert any(line.startswith("| tensorrt | fp32 | unavailable | - |") for line in lines)
    assert any(line.startswith("- tensorrt/fp32 unavailable: ") for line in lines)


def test_plot_writes_one_row_of_panels_per_report(report, tmp_path):
    from PIL import Image

    one = plot(report, tmp_path / "one.png")
    two = plot([report, report], tmp_path / "sub" / "two.png")
    w1, h1 = Image.open(one).size
    w2, h2 = Image.open(two).size
    assert w1 == w2 and h2 > 1.8 * h1  # two rows of the same two panels
