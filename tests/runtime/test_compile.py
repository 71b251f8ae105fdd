"""kiln.compile: the steps in order, int8 / fp16 / pruned models behind a real Session (speed
gate included), and the manifest written from what compile decided."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.compiler.calibrate import RandomCalibrationWarning
from kiln.compiler.reduce import ReduceOptions
from kiln.runtime import compile as compile_module


def cnn_file(tmp_path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (16, 3, 3, 3)), ("b1", (16,)), ("w2", (16, 16, 3, 3)), ("b2", (16,)),
              ("wf", (10, 16)), ("bf", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "cnn.onnx"
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_with_speed_gate(tmp_path, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomCalibrationWarning)
        compiled = kiln.compile(cnn_file(tmp_path), backend=backend, precision="int8",
                                threads=1, reduce=ReduceOptions(calibration="random:4",
                                                                speed_gate=True))
    session, result = kiln.Session(compiled), compiled.reduction
    gate = result.quantization.gate
    assert gate is not None and gate.decisions
    assert all(d.quantized_s > 0 and d.fp32_s > 0 for d in gate.decisions)
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == (1, 10) and np.isfinite(y).all()


def test_prune_and_fp16_on_onnxruntime(tmp_path):
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    session = kiln.Session(cnn_file(tmp_path), backend="onnxruntime", precision="fp16",
                           prune="channels:0.25", eval_samples=[{"x": x}])
    result = session.reduction
    assert result.prune.macs_after < result.prune.macs_before
    assert result.precision.checker == "ok"
    (y,) = session.run(None, {"x": x})
    assert y.shape == (1, 10)


def test_the_manifest_records_what_compile_decided(tmp_path, monkeypatch):
    """Saving asks no backend again: the placement is the whole graph on the backend that
    compiled it, and the reduce options are recorded."""
    from kiln.runtime import placement
    from kiln.runtime.artifact import load_artifact

    source = cnn_file(tmp_path)
    compiled = kiln.compile(source, backend="onnxruntime", precision="fp16",
                            reduce=ReduceOptions(prune="channels:0.25", exclude=["Gemm"]))
    assert compiled.choice.name == "onnxruntime" and compiled.choice.reason == "requested"
    assert compiled.reduction is not None and compiled.placement is None

    def asked(*args, **kwargs):
        raise AssertionError("save re-ran the partitioner")

    monkeypatch.setattr(placement, "plan_for", asked)
    manifest = load_artifact(compiled.save(tmp_path / "cnn.kiln")).manifest
    assert manifest["placement"]["backends"] == ["onnxruntime"]
    assert manifest["placement"]["nodes_per_backend"] == {"onnxruntime": len(compiled.model.graph)}
    assert manifest["reduce"]["prune"] == "channels:0.25"
    assert manifest["reduce"]["exclude"] == ["Gemm"]
    assert manifest["pipeline"]["options"]["precision"] == "fp16"
    with open(source, "rb") as f:  # the source's hash, not the reduced graph's
        assert manifest["source"]["sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_choose_backends_reads_names_lists_and_auto():
    target = kiln.compiler.target.Target.parse("cpu")
    options = {"fallback": None, "min_partition_nodes": 1, "device": "CPU"}
    choice = compile_module.choose_backends("native,onnxruntime", target, options)
    assert choice.partitioned and choice.backends == ("native", "onnxruntime")
    assert choice.fallback is None and choice.min_partition_nodes == 1
    assert options == {"device": "CPU"}  # the list's own options are taken out
    auto = compile_module.choose_backends("auto", target, {})
    assert not auto.partitioned and auto.reason.startswith("auto:")
    with pytest.raises(kiln.KilnError, match="unknown backend"):
        compile_module.choose_backends("tensorflow", target, {})


def test_bad_arguments_and_reducing_an_artifact_are_refused(tmp_path):
    with pytest.raises(kiln.KilnError, match="unknown precision"):
        kiln.compile(cnn_file(tmp_path), precision="int4")
    with pytest.raises(kiln.KilnError, match="threads"):
        kiln.compile(cnn_file(tmp_path), threads=0)
    with pytest.raises(kiln.InputError, match="max_accuracy_drop"):
        ReduceOptions(max_accuracy_drop=1.5)
    path = kiln.compile(cnn_file(tmp_path), backend="onnxruntime").save(tmp_path / "m.kiln")
    with pytest.raises(kiln.KilnError, match="already compiled"):
        kiln.compile(path, prune="channels:0.5")
    loaded = kiln.compile(path)
    assert loaded.artifact is not None and loaded.rebuild_reason is None


def test_needs_reduction_only_for_what_the_graph_lacks(tmp_path):
    from kiln.compiler.frontend import import_model
    from kiln.compiler.reduce import needs_reduction

    model = import_model(cnn_file(tmp_path))
    assert not needs_reduction(model, "fp32", frozenset(), None)
    assert needs_reduction(model, "fp32", frozenset(), ReduceOptions(prune="channels:0.5"))
    assert needs_reduction(model, "int8", frozenset(), None)
    assert not needs_reduction(model, "fp16", frozenset({"fp16"}), None)  # the engine's hint
    assert needs_reduction(model, "fp16", frozenset({"fp16"}),
                           ReduceOptions(convert_precision=True))


def test_an_artifact_for_a_subset_of_this_cpu_loads_as_compiled(tmp_path):
    """Compiled for cpu:avx2,fma, loaded on a machine that has both: its blobs are used and
    it runs for the target it was compiled for; asked for another target, it is rebuilt."""
    from kiln.compiler.target import Target

    here = Target.detect()
    if not {"avx2", "fma"} <= here.features:
        pytest.skip("this CPU lacks AVX2/FMA")
    path = kiln.compile(cnn_file(tmp_path), backend="onnxruntime",
                        target="cpu:avx2,fma").save(tmp_path / "avx2.kiln")
    loaded = kiln.Session(path)
    assert str(loaded.target) == "cpu:avx2,fma" and loaded.rebuild_reason is None
    assert compile_module.artifact_target("auto", "cpu:avx2,fma") == Target.parse("cpu:avx2,fma")
    assert compile_module.artifact_target("auto", "gpu:sm90") == here
    assert compile_module.artifact_target("cpu", "cpu:avx2,fma") == Target.parse("cpu")
    rebuilt = kiln.Session(path, target="cpu")
    assert "target" in rebuilt.rebuild_reason


def test_a_loaded_artifact_drops_its_model_bytes_once_parsed(tmp_path):
    from kiln.runtime.artifact import load_artifact

    path = kiln.compile(cnn_file(tmp_path), backend="onnxruntime").save(tmp_path / "m.kiln")
    artifact = load_artifact(path)
    graph = compile_module.artifact_graph(artifact, ["onnxruntime"])
    assert artifact.model_bytes == b""  # not held beside the parsed proto and graph
    assert len(graph.model().graph) > 0
    with pytest.raises(kiln.errors.ArtifactError, match="released"):
        artifact.model()


def _counting(monkeypatch, owner, name: str) -> list:
    calls: list = []
    inner = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return inner(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_native_kiln_is_validated_and_parsed_once_unless_its_ops_are_expanded(
        tmp_path, monkeypatch):
    import onnx_ir

    from kiln.backends import registry
    from kiln.compiler import validate
    from kiln.compiler.capabilities import KILN_DOMAIN
    from kiln.runtime.artifact import load_artifact

    path = kiln.compile(cnn_file(tmp_path), backend="native").save(tmp_path / "n.kiln")
    validated = _counting(monkeypatch, validate, "validate_proto")
    parsed = _counting(monkeypatch, onnx_ir, "from_proto")
    kept = registry.get_backend("native").caps().kiln_ops
    graph = compile_module.artifact_graph(load_artifact(path), ["native"], kept).model()
    assert any(n.domain == KILN_DOMAIN for n in graph.graph)  # run as compiled
    assert (len(validated), len(parsed)) == (1, 1)
    standard = compile_module.artifact_graph(load_artifact(path), ["onnxruntime"], frozenset())
    assert not any(n.domain == KILN_DOMAIN for n in standard.model().graph)  # standard ONNX
    assert (len(validated), len(parsed)) == (3, 3)  # checked before and after the rewrite
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    for backend in ("native", "onnxruntime"):
        session = kiln.Session(str(path), backend=backend)
        np.testing.assert_allclose(session(x=x)["y"], kiln.Session(cnn_file(tmp_path))(x=x)["y"],
                                   rtol=1e-4, atol=1e-4)


def test_expands_only_when_a_kiln_op_is_not_kept_or_the_kiln_import_is_unused():
    from kiln.compiler.capabilities import KILN_DOMAIN

    def model(*ops: str, kiln_import: bool = True) -> onnx.ModelProto:
        nodes = [helper.make_node(op, ["x"], [f"y{i}"], domain=KILN_DOMAIN)
                 for i, op in enumerate(ops)]
        graph = helper.make_graph(nodes, "g", [], [])
        imports = [helper.make_opsetid("", 17)] + (
            [helper.make_opsetid(KILN_DOMAIN, 1)] if kiln_import else [])
        return helper.make_model(graph, opset_imports=imports)

    keep = frozenset({"FusedConv"})
    assert not compile_module._expands(model("FusedConv"), keep)
    assert compile_module._expands(model("FusedConv", "QGemm"), keep)
    assert compile_module._expands(model(), keep)  # an import no node uses is dropped
    assert not compile_module._expands(model(kiln_import=False), keep)


# --- a .kiln opened on the engines that read ONNX: no copy of the weights on the way ---------

def _mlp_file(tmp_path, width: int = 768):
    """A two-MatMul model over MIN_OFFLOAD_BYTES of weights (``width`` 768: 2.3 MB)."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    w2 = rng.standard_normal((width, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path))
    x = rng.standard_normal((1, width)).astype(np.float32)
    return path, x, np.maximum(x @ w1, 0) @ w2


def _no_weights_file(monkeypatch):
    from kiln.runtime import weights

    mkdtemp = weights.tempfile.mkdtemp

    def refuse(*args, **kwargs):
        if kwargs.get("prefix") == "kiln-weights-":
            raise AssertionError("a weights file was written for a .kiln its engine reads")
        return mkdtemp(*args, **kwargs)

    monkeypatch.setattr(weights.tempfile, "mkdtemp", refuse)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("width", [768, 64])  # over and under MIN_OFFLOAD_BYTES
def test_a_kiln_opened_on_an_onnx_engine_writes_no_weights_file(backend, width, tmp_path,
                                                                 monkeypatch):
    from kiln.backends import registry
    from kiln.backends.onnx_export import WEIGHTS_DIR

    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    path, x, expected = _mlp_file(tmp_path, width)
    saved = kiln.compile(str(path), backend=backend).save(tmp_path / "mlp.kiln")
    _no_weights_file(monkeypatch)
    session = kiln.Session(str(saved), backend=backend)
    assert WEIGHTS_DIR not in session.model.meta
    np.testing.assert_allclose(session(x=x)["y"], expected, rtol=1e-3, atol=1e-3)
    if backend == "onnxruntime":  # saved again, its weights read from the first .kiln
        again = kiln.Session(str(session.save(tmp_path / "again.kiln")), backend=backend)
        np.testing.assert_allclose(again(x=x)["y"], expected, rtol=1e-3, atol=1e-3)


def test_openvino_rebuilding_a_kiln_for_another_backend_still_reads_the_weights(tmp_path):
    from kiln.backends import registry

    if not registry.availability("openvino").ok:
        pytest.skip("openvino unavailable")
    path, x, expected = _mlp_file(tmp_path)
    saved = kiln.compile(str(path), backend="onnxruntime").save(tmp_path / "mlp.kiln")
    session = kiln.Session(str(saved), backend="openvino")  # no OpenVINO blob: rebuilt
    np.testing.assert_allclose(session(x=x)["y"], expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_damaged_weights_fail_the_load_though_they_are_hashed_beside_it(backend, tmp_path):
    import zipfile

    from kiln.backends import registry
    from kiln.errors import ArtifactError

    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    path, _, _ = _mlp_file(tmp_path)
    saved = kiln.compile(str(path), backend=backend).save(tmp_path / "mlp.kiln")
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("weights.bin")
    raw = bytearray(saved.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0x01
    saved.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="weights.bin does not match its sha256"):
        kiln.Session(str(saved), backend=backend)


def test_an_artifact_stores_the_batchnorms_its_engine_folded_at_compile_folded(tmp_path):
    """onnxruntime folds Conv -> BatchNormalization at its load (caps.folds_conv_batchnorm):
    a compile leaves them to it, and save folds them, so no load folds them again; the
    artifact runs as the compiled model does."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             *(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), n)
               for n in ("g", "be", "m")),
             numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "v")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = kiln.compile(model, backend="onnxruntime")
    assert "BatchNormalization" in [n.op_type for n in compiled.model.graph]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = kiln.Session(compiled)(x=x)["y"]
    path = compiled.save(tmp_path / "m.kiln")
    loaded = kiln.load(path)
    assert [n.op_type for n in loaded.model.graph] == ["Conv"]
    assert loaded.compiled.artifact.manifest["pipeline"]["passes"][-1] == \
        compile_module.ARTIFACT_FOLD_STEP
    np.testing.assert_allclose(loaded(x=x)["y"], want, rtol=1e-4, atol=1e-5)
    again = kiln.load(compiled.save(tmp_path / "again.kiln"))  # folded once, saved twice
    assert again.compiled.artifact.manifest["pipeline"]["passes"][-1] == \
        compile_module.ARTIFACT_FOLD_STEP


# --- a graph no step changed: the engine reads the user's file, as when used directly -------

def _add_relu_file(tmp_path, name="m.onnx", extra_nodes=(), batch=2, op="Relu"):
    """y = op(a + b + k); ``extra_nodes`` may define k from constants (else k is a weight)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), n)
             for n in (("k1", "k2") if extra_nodes else ("k",))]
    graph = helper.make_graph(
        [*extra_nodes, helper.make_node("Add", ["a", "b"], ["s"]),
         helper.make_node("Add", ["s", "k"], ["t"]), helper.make_node(op, ["t"], ["y"])],
        "add_relu",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 4]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], initializer=inits)
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _opened_by_onnxruntime(monkeypatch) -> list:
    from kiln.backends import onnxruntime as backend

    opened = []
    session = backend._session

    def recording(model, *args, **kwargs):
        opened.append(model)
        return session(model, *args, **kwargs)

    monkeypatch.setattr(backend, "_session", recording)
    return opened


def _feeds():
    rng = np.random.default_rng(1)
    return {n: rng.standard_normal((2, 4)).astype(np.float32) for n in "ab"}


def _expected(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_a_graph_no_step_changed_goes_to_onnxruntime_as_its_file(tmp_path, monkeypatch):
    from kiln.compiler.source_digest import SOURCE_FILE

    path = _add_relu_file(tmp_path)
    opened = _opened_by_onnxruntime(monkeypatch)
    sess = kiln.Session(path, backend="onnxruntime")
    assert opened == [str(path)]
    assert not any(record.modified for record in sess.report.passes)
    assert SOURCE_FILE not in sess.model.meta  # only for the build
    feeds = _feeds()
    np.testing.assert_allclose(sess(**feeds)["y"], _expected(path, feeds), rtol=1e-6)


def test_a_graph_no_step_changed_goes_to_openvino_as_its_file(tmp_path, monkeypatch):
    import openvino as ov

    path = _add_relu_file(tmp_path)
    read = []
    original = ov.Core.read_model
    monkeypatch.setattr(ov.Core, "read_model",
                        lambda core, model, *a: read.append(model) or original(core, model, *a))
    sess = kiln.Session(path, backend="openvino")
    assert read == [str(path)]
    feeds = _feeds()
    np.testing.assert_allclose(sess(**feeds)["y"], _expected(path, feeds), rtol=1e-5)


def test_a_graph_a_pass_changed_goes_to_the_engine_as_kiln_wrote_it(tmp_path, monkeypatch):
    folded = helper.make_node("Add", ["k1", "k2"], ["k"])  # fold-constants folds it
    path = _add_relu_file(tmp_path, extra_nodes=[folded])
    opened = _opened_by_onnxruntime(monkeypatch)
    sess = kiln.Session(path, backend="onnxruntime")
    assert any(record.modified for record in sess.report.passes)
    assert len(opened) == 1 and opened[0] != str(path)
    feeds = _feeds()
    np.testing.assert_allclose(sess(**feeds)["y"], _expected(path, feeds), rtol=1e-6)


@pytest.mark.parametrize("how", ["normalized", "bytes", "dims", "opt_level"])
def test_a_graph_the_file_does_not_hold_as_compiled_is_not_handed_over(tmp_path, monkeypatch,
                                                                        how):
    """-1 dims the frontend makes dynamic, serialized bytes (no file), dims bound by the
    caller: kiln's serialization; opt_level=0 (no pass at all): the file."""
    path = _add_relu_file(tmp_path, batch={"normalized": -1, "dims": "N"}.get(how, 2))
    opened = _opened_by_onnxruntime(monkeypatch)
    source = path.read_bytes() if how == "bytes" else path
    options = {"dims": {"N": 2}} if how == "dims" else {}
    if how == "opt_level":
        options["opt_level"] = 0
    kiln.Session(source, backend="onnxruntime", **options)
    assert (opened == [str(path)]) == (how == "opt_level")


def test_a_file_rewritten_after_kiln_read_it_is_not_what_the_engine_runs(tmp_path, monkeypatch):
    """The file's identity, noted before kiln read it, is checked before and after the engine
    reads it: a rewritten file gives way to kiln's serialization of what kiln checked."""
    import os

    from kiln.backends.base import CompileOptions
    from kiln.backends.registry import get_backend
    from kiln.compiler.frontend import import_model
    from kiln.compiler.source_digest import SOURCE_DIGEST, SOURCE_FILE
    from kiln.compiler.target import Target

    path = _add_relu_file(tmp_path)
    graph = import_model(path)
    graph.meta[SOURCE_FILE] = graph.meta[SOURCE_DIGEST]
    feeds = _feeds()
    expected = _expected(path, feeds)
    _add_relu_file(tmp_path, op="Sigmoid")  # the same name, another model
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    opened = _opened_by_onnxruntime(monkeypatch)
    engine = get_backend("onnxruntime").compile(graph, Target.parse("cpu"), CompileOptions())
    assert str(path) not in opened
    np.testing.assert_allclose(engine.run(feeds)["y"], expected, rtol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "native"])
def test_an_ir_model_read_from_a_large_file_compiles(backend, tmp_path, monkeypatch):
    """import_model parses a large file a field at a time and leaves its weights in kiln's
    own folder (external data of kiln's); compiling that IR model keeps them there instead of
    refusing it as unresolved external data (every model file of 8 MB or more failed so:
    ``kiln compare`` on PP-OCRv6's detector, or ``kiln.Session(import_model(path))``)."""
    from kiln.backends import registry
    from kiln.compiler import frontend

    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    import onnxruntime as ort

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    path = cnn_file(tmp_path)
    model = frontend.import_model(path)
    assert frontend.aside_tensors(model)  # w2 (9 KB) went aside
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    [expected] = ort.InferenceSession(str(path)).run(None, {"x": x})
    for _ in range(2):  # the caller's model stays as given: a second compile reads it too
        session = kiln.Session(model, backend=backend)
        np.testing.assert_allclose(session(x=x)["y"], expected, rtol=1e-4, atol=1e-4)


def test_an_ir_model_with_external_data_of_its_own_is_still_refused(tmp_path):
    """Only what kiln's parse set aside may stay external: a tensor the caller points at a
    file is refused as before (external data is read, confined, by the frontend alone)."""
    import onnx_ir as ir

    from kiln.compiler import frontend

    model = frontend.import_model(cnn_file(tmp_path))
    value = model.graph.initializers["w2"]
    (tmp_path / "w2.bin").write_bytes(value.const_value.numpy().tobytes())
    value.const_value = ir.ExternalTensor("w2.bin", 0, 16 * 16 * 9 * 4, ir.DataType.FLOAT,
                                          shape=ir.Shape([16, 16, 3, 3]), name="w2",
                                          base_dir=str(tmp_path))
    with pytest.raises(kiln.ModelError, match="external data was not resolved"):
        kiln.Session(model, backend="onnxruntime")
