"""The .kiln artifact: round trip, tamper and truncation detection, hostile names, versions."""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import ArtifactError
from kiln.runtime import artifact as art


def _model() -> ir.Model:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.from_proto(proto)


SIG_IN = [{"name": "x", "dtype": "float32", "shape": [2, 3]}]
SIG_OUT = [{"name": "y", "dtype": "float32", "shape": [2, 4]}]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    blobs = tmp_path / "blobs_src"
    (blobs / "sub").mkdir(parents=True)
    (blobs / "plan.bin").write_bytes(bytes(range(256)) * 8)
    (blobs / "sub" / "weights.bin").write_bytes(b"\x01\x02" * 1000)
    return art.save_artifact(
        tmp_path / "m.kiln", _model(), backend="native", backend_version="0.1.0",
        target="cpu:avx2,fma", source_sha256="ab" * 32, pipeline=["fold-constants"], level=2,
        options={"precision": "fp32"}, inputs=SIG_IN, outputs=SIG_OUT,
        placement={"native": 1}, blob_dir=blobs)


def test_round_trip(saved: Path, tmp_path: Path):
    loaded = art.load_artifact(saved, extract_to=tmp_path / "out")
    m = loaded.manifest
    assert m["format_version"] == {"major": art.FORMAT_MAJOR, "minor": art.FORMAT_MINOR}
    assert m["backend"] == {"name": "native", "version": "0.1.0"}
    assert m["target"] == "cpu:avx2,fma" and m["source"]["sha256"] == "ab" * 32
    assert m["pipeline"] == {"level": 2, "passes": ["fold-constants"],
                             "options": {"precision": "fp32"}}
    assert m["inputs"] == SIG_IN and m["outputs"] == SIG_OUT and m["placement"] == {"native": 1}
    assert set(m["members"]) == {"model.onnx", "blobs/plan.bin", "blobs/sub/weights.bin"}
    assert (tmp_path / "out" / "plan.bin").read_bytes() == bytes(range(256)) * 8
    assert (tmp_path / "out" / "sub" / "weights.bin").read_bytes() == b"\x01\x02" * 1000
    x = np.ones((2, 3), np.float32)
    want = ort.InferenceSession(ir.to_proto(_model()).SerializeToString()).run(None, {"x": x})
    got = ort.InferenceSession(ir.to_proto(loaded.model()).SerializeToString()).run(
        None, {"x": x})
    np.testing.assert_array_equal(want[0], got[0])
    assert not list(saved.parent.glob(".m.kiln.*"))  # no temporary file left behind


def _data_span(path: Path, name: str) -> tuple[int, int]:
    """Byte offset and length of a stored member's data inside the zip file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                   info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


@pytest.mark.parametrize("member", ["manifest.json", "model.onnx", "blobs/plan.bin",
                                    "blobs/sub/weights.bin"])
@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_one_flipped_byte_in_any_member_is_refused(saved: Path, member: str, where: float):
    start, length = _data_span(saved, member)
    raw = bytearray(saved.read_bytes())
    raw[start + int(where * (length - 1))] ^= 0x01
    saved.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError):
        art.load_artifact(saved)


def test_flipped_byte_in_manifest_checksum_is_refused(saved: Path):
    raw = bytearray(saved.read_bytes())
    raw[-3] ^= 0x01  # inside the zip comment (the manifest's sha256)
    saved.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        art.load_artifact(saved)


def test_a_consistent_rezip_with_edited_member_is_refused(saved: Path, tmp_path: Path):
    # CRCs recomputed by the zip writer; only kiln's sha256 can tell
    with zipfile.ZipFile(saved) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
        comment = zf.comment
    files["blobs/plan.bin"] = b"evil" + files["blobs/plan.bin"][4:]
    forged = tmp_path / "forged.kiln"
    with zipfile.ZipFile(forged, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.comment = comment
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        art.load_artifact(forged)


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, 0.99])
def test_truncated_file_is_refused(saved: Path, keep):
    raw = saved.read_bytes()
    cut = int(keep * len(raw)) if isinstance(keep, float) else keep
    saved.write_bytes(raw[:cut])
    with pytest.raises(ArtifactError):
        art.load_artifact(saved)


@pytest.mark.parametrize("major", [art.FORMAT_MAJOR + 1, 0])
def test_wrong_major_version_is_refused(tmp_path: Path, major: int):
    manifest = {"format": art.FORMAT, "format_version": {"major": major, "minor": 0},
                "backend": {"name": "onnxruntime", "version": "1"}, "target": "cpu"}
    path = tmp_path / "v.kiln"
    art._pack(path, manifest, {"model.onnx": ir.to_proto(_model()).SerializeToString()})
    with pytest.raises(ArtifactError, match=f"format {major}.0 is"):
        art.load_artifact(path)


def test_newer_minor_version_loads(tmp_path: Path):
    manifest = {"format": art.FORMAT,
                "format_version": {"major": art.FORMAT_MAJOR, "minor": art.FORMAT_MINOR + 3},
                "backend": {"name": "onnxruntime", "version": "1"}, "target": "cpu"}
    path = tmp_path / "v.kiln"
    art._pack(path, manifest, {"model.onnx": ir.to_proto(_model()).SerializeToString()})
    assert art.load_artifact(path).blobs == {}


def test_foreign_files_are_refused(tmp_path: Path):
    text = tmp_path / "notes.kiln"
    text.write_text("hello")
    with pytest.raises(ArtifactError, match="not a readable zip"):
        art.load_artifact(text)
    other = tmp_path / "other.kiln"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("model.onnx", b"x")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        art.load_artifact(other)
    onnx_file = tmp_path / "m.onnx"
    onnx.save(ir.to_proto(_model()), onnx_file)
    with pytest.raises(ArtifactError):
        art.load_artifact(onnx_file)
    with pytest.raises(ArtifactError, match="does not exist"):
        art.load_artifact(tmp_path / "missing.kiln")


@pytest.mark.parametrize("name", ["../evil.bin", "/etc/evil", "blobs/../../evil", "C:/evil",
                                  "blobs\\..\\evil", "blobs/./x", "blobs//x"])
def test_hostile_member_names_are_refused(saved: Path, tmp_path: Path, name: str):
    with zipfile.ZipFile(saved) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
        comment = zf.comment
    hostile = tmp_path / "hostile.kiln"
    with zipfile.ZipFile(hostile, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
        zf.writestr(zipfile.ZipInfo(name), b"evil")
        zf.comment = comment
    out = tmp_path / "extract"
    with pytest.raises(ArtifactError, match="refused"):
        art.load_artifact(hostile, extract_to=out)
    assert not (tmp_path / "evil.bin").exists() and not out.exists()


def test_duplicate_members_are_refused(saved: Path, tmp_path: Path):
    with zipfile.ZipFile(saved) as zf:
        files = [(i.filename, zf.read(i)) for i in zf.infolist()]
        comment = zf.comment
    dup = tmp_path / "dup.kiln"
    with pytest.warns(UserWarning), zipfile.ZipFile(dup, "w") as zf:
        for n, data in files + [("blobs/plan.bin", b"second")]:
            zf.writestr(n, data)
        zf.comment = comment
    with pytest.raises(ArtifactError, match="appears twice"):
        art.load_artifact(dup)


def test_failed_write_leaves_the_old_artifact_intact(saved: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    before = saved.read_bytes()

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(art, "sha256_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        art.save_artifact(saved, _model(), backend="onnxruntime", backend_version="1",
                          target="cpu", source_sha256="00")
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir() if p.name.startswith(".")) == []


def test_blob_miss_explains_itself(saved: Path):
    loaded = art.load_artifact(saved)
    assert loaded.blob_miss("native", "0.1.0", "cpu:avx2,fma") is None
    assert "built by native 0.1.0, this machine has native 0.2.0" in loaded.blob_miss(
        "native", "0.2.0", "cpu:avx2,fma")
    assert "built for target 'cpu:avx2,fma', not 'cpu:avx512f'" in loaded.blob_miss(
        "native", "0.1.0", "cpu:avx512f")
    assert "backend 'native', not 'openvino'" in loaded.blob_miss("openvino", "0.1.0",
                                                                   "cpu:avx2,fma")


def test_manifest_is_plain_json(saved: Path):
    with zipfile.ZipFile(saved) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    assert manifest["kiln_version"]


@pytest.mark.parametrize("version_matches", [True, False])
def test_restore_rebuilds_with_a_reason_when_blobs_do_not_fit(tmp_path: Path,
                                                               version_matches: bool):
    from kiln.backends.base import CompileOptions
    from kiln.backends.registry import get_backend
    from kiln.compiler.target import Target

    backend = get_backend("onnxruntime")
    if not backend.is_available():
        pytest.skip("onnxruntime backend unavailable")
    real = backend.is_available().version
    target = Target.parse("cpu:avx2,fma")
    path = art.save_artifact(
        tmp_path / "r.kiln", _model(), backend="onnxruntime",
        backend_version=real if version_matches else "0.0.1", target=str(target),
        source_sha256="00", inputs=SIG_IN, outputs=SIG_OUT)
    messages: list[str] = []
    compiled, why = art.restore(art.load_artifact(path), backend, target, CompileOptions(),
                                log=messages.append)
    if version_matches:
        assert why is None and messages == []
    else:
        assert why == messages[0]
        assert f"the artifact was built by onnxruntime 0.0.1, this machine has onnxruntime " \
            f"{real}" in why and "rebuilding from model.onnx" in why
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(compiled.run({"x": x})["y"], x @ (np.arange(12).reshape(3, 4)
                                                                / 10).astype(np.float32),
                               rtol=1e-6)


def test_load_reads_members_into_memory_without_mapping_the_file(saved: Path, monkeypatch):
    # A map of the file would count its touched pages in RSS beside the bytes kiln keeps.
    import mmap

    def refuse(*args, **kwargs):
        raise AssertionError("load_artifact mapped the artifact")

    monkeypatch.setattr(mmap, "mmap", refuse)
    loaded = art.load_artifact(saved)
    assert type(loaded.model_bytes) is bytes
    assert onnx.load_model_from_string(loaded.model_bytes).graph.node[0].op_type == "MatMul"
    assert all(type(b) is bytes for b in loaded.blobs.values())
    assert loaded.blobs["plan.bin"] == bytes(range(256)) * 8


@pytest.mark.parametrize("member", ["blobs/plan.bin", "blobs/sub/weights.bin"])
def test_large_blobs_are_mapped_and_still_checked(saved: Path, monkeypatch, member: str):
    monkeypatch.setattr(art, "MAP_BLOB_BYTES", 1000)  # both blobs of the fixture are larger
    loaded = art.load_artifact(saved)
    assert all(type(b) is memoryview for b in loaded.blobs.values())
    assert bytes(loaded.blobs["plan.bin"]) == bytes(range(256)) * 8
    assert type(loaded.model_bytes) is bytes  # the graph is read, not mapped
    start, length = _data_span(saved, member)
    raw = bytearray(saved.read_bytes())
    raw[start + length // 2] ^= 0x01
    saved.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        art.load_artifact(saved)


def test_an_openvino_blob_mapped_from_the_artifact_imports_and_runs(tmp_path: Path, monkeypatch):
    import kiln
    from kiln.backends import registry

    if not registry.get_backend("openvino").is_available():
        pytest.skip("OpenVINO is not available here")
    model, w, b = _weighty_model()
    path = kiln.compile(model, backend="openvino").save(tmp_path / "ov.kiln")
    monkeypatch.setattr(art, "MAP_BLOB_BYTES", 0)  # map every blob, as a large model's would be
    # the graph's weights are in weights.bin: the blob is OpenVINO's weightless one
    assert type(art.load_artifact(path).blobs["openvino-weightless.blob"]) is memoryview
    x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    session = kiln.Session(str(path))
    assert session.rebuild_reason is None  # imported from the mapped blob, not recompiled
    [y] = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-4, atol=1e-4)


# --- format 2: the weights in their own member ------------------------------------------------

def _weighty_model() -> tuple[ir.Model, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 48)).astype(np.float32)   # 12 KiB: to weights.bin
    b = rng.standard_normal(48).astype(np.float32)         # 192 bytes: stays inline
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"],
                                                                         ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 48])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.from_proto(proto), w, b


@pytest.fixture
def weighty(tmp_path: Path) -> Path:
    model, _, _ = _weighty_model()
    return art.save_artifact(tmp_path / "w.kiln", model, backend="native",
                             backend_version="0.1.0", target="cpu", source_sha256="",
                             inputs=SIG_IN, outputs=SIG_OUT)


def test_large_weights_go_to_their_own_aligned_member_and_map_back(weighty: Path):
    model, w, b = _weighty_model()
    start, length = _data_span(weighty, art.WEIGHTS)
    assert start % art.MEMBER_ALIGN == 0 and length >= w.nbytes
    model_start, model_length = _data_span(weighty, art.MODEL)
    assert model_length < w.nbytes  # the graph without the weight's bytes
    loaded = art.load_artifact(weighty)
    assert loaded.weights == (start, length)
    graph = loaded.model().graph
    tensor = graph.initializers["w"].const_value
    assert isinstance(tensor, ir.ExternalTensor)  # mapped from the .kiln file itself
    assert Path(tensor.path).resolve() == weighty.resolve()
    assert (tensor.offset - start) % art.WEIGHT_ALIGN == 0
    np.testing.assert_array_equal(tensor.numpy(), w)
    np.testing.assert_array_equal(graph.initializers["b"].const_value.numpy(), b)


def test_blobs_written_beside_the_weights_read_them_where_a_load_maps_them(tmp_path: Path):
    model, w, b = _weighty_model()
    seen: dict[str, object] = {}

    def write_blobs(folder: Path, weights) -> list[str]:
        graph = onnx.load(str(weights.graph), load_external_data=False)
        [entry] = [t for t in graph.graph.initializer if t.name == "w"]
        seen["offset"] = {e.key: e.value for e in entry.external_data}["offset"]
        proto = onnx.load(str(weights.graph))  # its external data: the artifact being written
        [entry] = [t for t in proto.graph.initializer if t.name == "w"]
        seen["w"] = numpy_helper.to_array(entry)
        (folder / "engine.blob").write_bytes(b"compiled")
        return ["engine.blob"]

    path = art.save_artifact(tmp_path / "w.kiln", model, backend="native",
                             backend_version="0.1.0", target="cpu", source_sha256="",
                             inputs=SIG_IN, outputs=SIG_OUT, write_blobs=write_blobs)
    np.testing.assert_array_equal(seen["w"], w)
    loaded = art.load_artifact(path)
    assert loaded.blobs == {"engine.blob": b"compiled"}
    tensor = loaded.model().graph.initializers["w"].const_value
    assert int(seen["offset"]) == tensor.offset  # the same bytes of the same file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.kiln"]  # no graph file left


def test_a_blob_writer_is_told_when_there_is_no_weights_member(tmp_path: Path):
    told = []

    def write_blobs(folder: Path, weights) -> list[str]:
        told.append(weights)
        return []

    art.save_artifact(tmp_path / "m.kiln", _model(), backend="native",  # all inline
                      backend_version="0.1.0", target="cpu", source_sha256="",
                      inputs=SIG_IN, outputs=SIG_OUT, write_blobs=write_blobs)
    assert told == [None]
    assert art.load_artifact(tmp_path / "m.kiln").blobs == {}


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_a_flipped_byte_in_the_weights_member_is_refused(weighty: Path, where: float):
    start, length = _data_span(weighty, art.WEIGHTS)
    raw = bytearray(weighty.read_bytes())
    raw[start + int(where * (length - 1))] ^= 0x01
    weighty.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="weights.bin does not match its sha256"):
        art.load_artifact(weighty)


def test_weights_checked_beside_the_load_refuse_a_flipped_byte_when_awaited(weighty: Path):
    start, length = _data_span(weighty, art.WEIGHTS)
    sound = art.load_artifact(weighty, check_weights_later=True)
    sound.check_weights()
    sound.check_weights()  # once is enough; again is a no-op
    raw = bytearray(weighty.read_bytes())
    raw[start + length // 2] ^= 0x01
    weighty.write_bytes(bytes(raw))
    loaded = art.load_artifact(weighty, check_weights_later=True)  # the graph is checked
    with pytest.raises(ArtifactError, match="weights.bin does not match its sha256"):
        loaded.check_weights()


def _forge_model_member(path: Path, edit) -> None:
    """Rewrite model.onnx with ``edit(proto)`` and re-sign the manifest, as an attacker
    could: the checks that remain are the artifact reader's bounds and location checks."""
    import hashlib

    with zipfile.ZipFile(path) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    proto = onnx.load_model_from_string(files[art.MODEL])
    edit(proto)
    files[art.MODEL] = proto.SerializeToString()
    manifest = json.loads(files.pop(art.MANIFEST))
    manifest["members"][art.MODEL] = {"sha256": hashlib.sha256(files[art.MODEL]).hexdigest(),
                                      "size": len(files[art.MODEL])}
    del manifest["members"][art.WEIGHTS]
    weights = files.pop(art.WEIGHTS)
    layout = [(0, ir.tensor(np.frombuffer(weights, np.uint8), name="raw"))]
    art._pack(path, manifest, {k: v for k, v in files.items()}, (layout, len(weights)))


@pytest.mark.parametrize("key, value, message", [
    ("location", "../secret.bin", "refers to external data"),
    ("location", "/etc/passwd", "refers to external data"),
    ("offset", str(1 << 40), "lie outside"),
    ("length", "4", "dims and type need"),
])
def test_model_references_outside_the_weights_member_are_refused(weighty: Path, key: str,
                                                                 value: str, message: str):
    def edit(proto):
        [tensor] = [t for t in proto.graph.initializer if t.name == "w"]
        for entry in tensor.external_data:
            if entry.key == key:
                entry.value = value

    _forge_model_member(weighty, edit)
    loaded = art.load_artifact(weighty)  # hashes match: the forger re-signed them
    with pytest.raises(ArtifactError, match=message):
        loaded.model()


def test_format_1_artifacts_with_inline_weights_still_load(tmp_path: Path, monkeypatch):
    model, w, b = _weighty_model()
    monkeypatch.setattr(art, "FORMAT_MAJOR", 1)
    path = art.save_artifact(tmp_path / "old.kiln", ir.to_proto(model).SerializeToString(),
                             backend="native", backend_version="0.1.0", target="cpu",
                             source_sha256="")
    monkeypatch.undo()
    loaded = art.load_artifact(path)
    assert loaded.manifest["format_version"]["major"] == 1 and loaded.weights is None
    np.testing.assert_array_equal(loaded.model().graph.initializers["w"].const_value.numpy(), w)


@pytest.mark.parametrize("backend", ["native", "onnxruntime", ["native", "onnxruntime"]])
def test_a_weights_member_survives_a_session_round_trip(tmp_path: Path, monkeypatch, backend):
    import kiln

    model, w, b = _weighty_model()
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the artifact's tensors must not resolve against the cwd
    path = kiln.compile(model, backend=backend).save(tmp_path / "m.kiln")
    with zipfile.ZipFile(path) as zf:
        assert art.WEIGHTS in zf.namelist()
    [y] = kiln.Session(str(path)).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-4, atol=1e-4)


def _big_mlp(folder: Path) -> Path:
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:  # importlib mode keeps the repository root off sys.path
        sys.path.insert(0, root)
    from benchmarks.models import big_mlp

    return big_mlp(folder / "big.onnx")


def _big_reference(path: Path, x: np.ndarray, layers: int = 9, n: int = 8192) -> np.ndarray:
    weights = np.memmap(path.parent / (path.name + ".data"), np.float32, "r",
                        shape=(layers, n, n))
    for i in range(layers):
        x = x @ weights[i]
    return x


@pytest.mark.slow
def test_a_model_over_2_gib_saves_and_loads_with_its_weights_in_one_member(tmp_path: Path):
    import kiln

    source = _big_mlp(tmp_path)
    x = np.random.default_rng(1).standard_normal((1, 8192)).astype(np.float32)
    expected = _big_reference(source, x)
    compiled = kiln.compile(str(source), backend="native")
    np.testing.assert_allclose(kiln.Session(compiled).run(None, {"x": x})[0], expected,
                               rtol=1e-3, atol=1e-3)
    path = compiled.save(tmp_path / "big.kiln")
    del compiled
    with zipfile.ZipFile(path) as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    assert sizes[art.WEIGHTS] >= 9 * 8192 * 8192 * 4 > 2**31
    assert sizes[art.MODEL] < 1 << 20  # the graph alone, far below protobuf's limit
    for backend in ("native", "onnxruntime"):
        [y] = kiln.Session(str(path), backend=backend).run(None, {"x": x})
        np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-3)
