"""The benchmark engine on real backends: rows for every (backend, precision, scenario), the
report validated against docs/bench_schema.json, drift, inputs, and the scenario machinery.
No timing assertions: only structure, counts and numerics."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from model_builders import make_stride_detector

from kiln.errors import InputError, KilnError
from kiln.runtime import scenarios
from kiln.runtime.bench import BenchConfig, drift, load_inputs, run_bench
from kiln.runtime.bench_report import plot, to_markdown
from kiln.runtime.session import Session

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "bench_schema.json").read_text())

FAST = dict(iterations=4, block=2, warmup=1, multi_stream_samples=3, server_probe_seconds=0.2,
            server_max_probes=3, offline_samples=6, offline_batch=4, offline_rounds=1,
            latency_bound_ms=1000.0)


def _validate(report):
    jsonschema.validate(json.loads(json.dumps(report)), SCHEMA)


def test_every_pair_and_scenario_gets_a_row(conv_model):
    config = BenchConfig(backends=["onnxruntime", "openvino", "native", "tensorrt"],
                         scenarios=list(scenarios.SCENARIOS), **FAST)
    report = run_bench(conv_model.SerializeToString(), config)
    _validate(report)
    rows = {(r["backend"], r["scenario"]): r for r in report["results"]}
    assert len(report["results"]) == 16 and len(rows) == 16
    for scenario in scenarios.SCENARIOS:
        for backend in ("onnxruntime", "openvino"):
            row = rows[backend, scenario]
            assert row["status"] == "ok", row["reason"]
            assert row["latency_ms"]["p50"] > 0 and row["throughput_qps"] > 0
            assert row["compile_s"] > 0 and row["load_s"] >= 0 and row["peak_rss_mb"] > 0
        assert rows["onnxruntime", scenario]["max_abs_diff"] == 0
        assert rows["openvino", scenario]["max_abs_diff"] < 1e-4
        assert rows["openvino", scenario]["cosine"] > 0.9999
        assert rows["openvino", scenario]["top1_agreement"] == 1.0  # [1, 4] scores
        native = rows["native", scenario]
        assert native["status"] == "ok", native["reason"]
        assert native["max_abs_diff"] < 1e-4 and native["latency_ms"]["p50"] > 0
        assert rows["tensorrt", scenario]["status"] in ("unavailable", "ok")
        assert rows["tensorrt", scenario]["reason"]
    server = rows["onnxruntime", "server"]["detail"]
    assert server["latency_bound_ms"] == 1000.0 and 1 <= len(server["probes"]) <= 3
    assert server["max_qps"] == rows["onnxruntime", "server"]["throughput_qps"]
    best = max((p for p in server["probes"] if p["ok"]), key=lambda p: p["target_qps"])
    assert best["target_qps"] == server["max_qps"] and best["p99_ms"] <= 1000.0
    multi = rows["onnxruntime", "multi-stream"]
    assert multi["detail"] == {"samples_per_query": 3, "mode": "concurrent", "workers": 2} \
        or multi["detail"]["workers"] >= 1
    assert multi["samples"] == 3 * 4
    assert rows["openvino", "offline"]["detail"]["mode"] == "concurrent"  # batch dim is 1


def test_symbolic_batch_runs_batched(conv_model):
    for value in (conv_model.graph.input[0], conv_model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    config = BenchConfig(backends=["onnxruntime"], scenarios=["multi-stream", "offline"],
                         **FAST)
    report = run_bench(conv_model.SerializeToString(), config)
    _validate(report)
    multi, off = report["results"]
    assert multi["detail"]["mode"] == "batch" and off["detail"]["mode"] == "batch"
    assert off["detail"]["batch_size"] == 4 and off["samples"] == 6


def test_inputs_file_feeds_every_engine(tmp_path, conv_model):
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    config = BenchConfig(backends=["onnxruntime", "openvino"], **FAST)
    report = run_bench(conv_model.SerializeToString(), config,
                       inputs_path=str(tmp_path / "x.npz"))
    assert report["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8],
                                 "source": str(tmp_path / "x.npz")}]
    assert all(r["status"] == "ok" for r in report["results"])


def test_load_inputs_errors(tmp_path, conv_model):
    specs = Session(conv_model, backend="onnxruntime").inputs
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert load_inputs(tmp_path / "x.npy", specs)["x"].shape == (1, 3, 8, 8)
    np.savez(tmp_path / "bad.npz", y=np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InputError, match="unknown input"):
        load_inputs(tmp_path / "bad.npz", specs)
    np.save(tmp_path / "shape.npy", np.zeros((1, 3, 9, 8), np.float32))
    with pytest.raises(InputError, match="axis 2"):
        load_inputs(tmp_path / "shape.npy", specs)
    with pytest.raises(InputError, match="no such file"):
        load_inputs(tmp_path / "missing.npz", specs)
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(InputError, match=".npz or .npy"):
        load_inputs(tmp_path / "x.txt", specs)


def test_config_rejects_nonsense():
    with pytest.raises(KilnError, match="unknown scenario"):
        BenchConfig(backends=["onnxruntime"], scenarios=["burst"]).check()
    with pytest.raises(KilnError, match="iterations"):
        BenchConfig(backends=["onnxruntime"], iterations=0).check()
    with pytest.raises(KilnError, match="latency bound"):
        BenchConfig(backends=["onnxruntime"], latency_bound_ms=0).check()


def test_drift_fields():
    ref = {"p": np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], np.float32)}
    same = drift(ref, ref)
    assert same["max_abs_diff"] == 0 and same["cosine"] == pytest.approx(1.0)
    assert same["top1_agreement"] == 1.0
    flipped = drift(ref, {"p": np.array([[0.7, 0.1, 0.2], [0.5, 0.3, 0.2]], np.float32)})
    assert flipped["top1_agreement"] == 0.5
    assert flipped["max_abs_diff"] == pytest.approx(0.6)
    # ties in the reference: any of its top classes agrees
    tied = {"p": np.full((1, 4), 0.25, np.float32)}
    assert drift(tied, {"p": np.array([[0.1, 0.2, 0.6, 0.1]], np.float32)})["top1_agreement"] == 1
    # NaN on one side only is infinitely far off; no class scores -> no top-1
    nan = drift({"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, np.nan])})
    assert nan["max_abs_diff"] == np.inf and nan["top1_agreement"] is not None
    assert drift({"y": np.ones((2, 1))}, {"y": np.ones((2, 1))})["top1_agreement"] is None
    with pytest.raises(KilnError, match="shape"):
        drift({"y": np.ones(3)}, {"y": np.ones(4)})


def test_poisson_arrivals_are_seeded_and_at_rate():
    a = scenarios.poisson_arrivals(200.0, 20000, np.random.default_rng(1))
    b = scenarios.poisson_arrivals(200.0, 20000, np.random.default_rng(1))
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert 20000 / a[-1] == pytest.approx(200.0, rel=0.03)


def test_server_probe_counts_queueing(conv_model):
    session = Session(conv_model, backend="onnxruntime")
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}
    work = scenarios.Workload("ort", lambda f: session.run(None, f), feeds)
    easy = scenarios.server_probe(work, 20.0, 10, 10_000.0, np.random.default_rng(0))
    assert easy.ok and easy.queries == 10 and len(easy.latencies_ms) == 10
    # a rate no machine can serve within a microsecond bound is refused and stops early
    hard = scenarios.server_probe(work, 1e6, 2000, 0.001, np.random.default_rng(0))
    assert not hard.ok and hard.aborted and hard.queries < 2000


def test_failing_engine_is_an_error_row_and_others_go_on(conv_model):
    session = Session(conv_model, backend="onnxruntime")
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}

    def broken(_feeds):
        session.run(None, {"x": np.ones((1, 3, 4, 4), np.float32)})  # kiln refuses the shape

    works = scenarios.Workload("ok", lambda f: session.run(None, f), feeds)
    fails = scenarios.Workload("bad", broken, feeds)
    res = scenarios.single_stream([fails, works], iterations=4, block=2)
    assert "axis 2" in res["bad"].error and res["ok"].error is None
    assert len(res["ok"].latencies_ms) == 4


def test_markdown_and_plot(tmp_path, conv_model):
    config = BenchConfig(backends=["onnxruntime", "openvino", "tensorrt"],
                         scenarios=["single-stream", "server"], **FAST)
    report = run_bench(conv_model.SerializeToString(), config)
    md = to_markdown(report)
    assert "### single-stream" in md and "### server" in md
    assert "| onnxruntime | fp32 | ok |" in md and "1.00x" in md
    assert "tensorrt/fp32 unavailable" in md or "tensorrt | fp32 | ok" in md
    png = plot(report, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_artifact_rows_report_size_and_load_time(tmp_path, conv_model):
    from kiln.backends import registry
    from kiln.compiler.frontend import import_model
    from kiln.compiler.source_digest import source_sha256
    from kiln.runtime.artifact import save_artifact

    model = import_model(conv_model)
    path = save_artifact(tmp_path / "m.kiln", model, backend="onnxruntime",
                         backend_version=registry.availability("onnxruntime").version,
                         target="cpu", source_sha256=source_sha256(model),
                         options={"precision": "fp32"})
    config = BenchConfig(backends=["onnxruntime", "openvino"], **FAST)
    report = run_bench(str(path), config)
    _validate(report)
    assert report["model"]["artifact"] is True
    ort, ov = report["results"]
    for row in (ort, ov):
        assert row["status"] == "ok", row["reason"]
        assert row["artifact_bytes"] == path.stat().st_size and row["load_s"] > 0
        assert row["compile_s"] >= 0 and row["precision"] == "fp32"
    assert ort["max_abs_diff"] == 0 and ov["max_abs_diff"] < 1e-4
    assert "rebuilding" in ov["reason"]  # blobs were built by onnxruntime, not openvino


def test_ir_model_input_is_left_as_given(conv_model):
    from kiln.compiler.frontend import import_model

    model = import_model(conv_model)
    ops = [n.op_type for n in model.graph]
    report = run_bench(model, BenchConfig(backends=["onnxruntime", "openvino", "native"],
                                          **FAST))
    assert all(r["status"] == "ok" for r in report["results"]), report["results"]
    assert [n.op_type for n in model.graph] == ops


def test_native_artifact_drift_against_its_standard_graph(tmp_path, conv_model):
    """Every backend loads a native .kiln (kiln ops written back where it does not run them)
    and drift is measured against that graph on onnxruntime, even when onnxruntime is not
    benchmarked."""
    path = Session(conv_model, backend="native").save(tmp_path / "m.kiln")
    for backends in (["native"], ["onnxruntime", "openvino", "native"]):
        report = run_bench(str(path), BenchConfig(backends=backends, **FAST))
        _validate(report)
        assert not any(n.startswith("no drift") for n in report["notes"]), report["notes"]
        for row in report["results"]:
            assert row["status"] == "ok", row["reason"]
            assert row["max_abs_diff"] is not None and row["max_abs_diff"] < 1e-4
            assert row["cosine"] > 0.9999


def test_symbolic_dims_are_sized_or_named():
    detector = make_stride_detector().SerializeToString()
    with pytest.raises(InputError, match="'height', 'width'.*--dim height=SIZE --dim width"):
        run_bench(detector, BenchConfig(backends=["onnxruntime"], **FAST))
    report = run_bench(detector, BenchConfig(backends=["onnxruntime", "native"],
                                             dims={"height": 4, "width": 8}, **FAST))
    assert report["inputs"][0]["shape"] == [1, 3, 4, 8]
    assert "batch dim 'batch' of input 'x' set to 1 (--dim batch=SIZE for another)" \
        in report["notes"]
    odd = run_bench(detector, BenchConfig(backends=["native"], dims={"height": 3, "width": 3},
                                          **FAST))
    row = odd["results"][0]
    assert row["status"] == "error" and "height=3 (given), width=3 (given)" in row["reason"]
