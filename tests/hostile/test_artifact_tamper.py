"""Tampered, truncated, swapped, wrong-version and foreign .kiln artifacts are refused with
kiln.ArtifactError; forged artifacts whose hashes were recomputed still meet the model
validator and the resource guards; writes are atomic, even when the writer dies mid-write."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import ModelProto
from onnx import helper as h

import kiln
from kiln.backends import registry
from kiln.runtime import artifact as art

from .cases import CPU_BACKENDS, TP, const, model, relu_model, vi

X = -np.ones((2, 4), np.float32)


def _available(backend: str) -> None:
    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")


@pytest.fixture(params=CPU_BACKENDS)
def saved(request, tmp_path) -> Path:
    _available(request.param)
    return kiln.Session(relu_model(), backend=request.param).save(tmp_path / "m.kiln")


def _data_span(path: Path, name: str) -> tuple[int, int]:
    """(offset, size) of member ``name``'s stored bytes inside the zip file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _write(path: Path, members: dict[str, bytes], comment: bytes | None = None,
           rehash: bool = False) -> Path:
    """Write ``members`` as a zip; ``rehash`` recomputes every hash like a forger would."""
    if rehash:
        manifest = json.loads(members["manifest.json"])
        manifest["members"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                               for n, d in members.items() if n != "manifest.json"}
        members = {**members, "manifest.json": json.dumps(manifest).encode()}
        comment = b"kiln-manifest-sha256:" + hashlib.sha256(members["manifest.json"]) \
            .hexdigest().encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if comment is not None:
            zf.comment = comment
    return path


def test_untampered_artifact_loads_and_runs(saved):
    [y] = kiln.Session(str(saved)).run(None, {"x": X})
    assert y.sum() == 0


@pytest.mark.parametrize("member", ["model.onnx", "manifest.json"])
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_flipped_byte_in_each_member(saved, member, where):
    offset, size = _data_span(saved, member)
    data = bytearray(saved.read_bytes())
    data[offset + min(size - 1, int(size * where))] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(kiln.ArtifactError, match=r"damaged|modified|checksum|not a kiln"):
        kiln.Session(str(saved))


def test_flipped_byte_in_each_blob(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "a.bin").write_bytes(b"A" * 64)
    (blobs / "b.bin").write_bytes(b"B" * 64)
    path = art.save_artifact(tmp_path / "b.kiln", relu_model().SerializeToString(),
                             backend="onnxruntime", backend_version=None, target="cpu",
                             source_sha256="", blob_dir=blobs)
    assert set(art.load_artifact(path).blobs) == {"a.bin", "b.bin"}
    for name in ("blobs/a.bin", "blobs/b.bin"):
        copy = tmp_path / f"flip-{name[-5]}.kiln"
        data = bytearray(path.read_bytes())
        offset, size = _data_span(path, name)
        data[offset + size // 2] ^= 0x80
        copy.write_bytes(bytes(data))
        with pytest.raises(kiln.ArtifactError, match=rf"{name}.*(damaged|modified)"):
            art.load_artifact(copy)


def test_swapped_blobs_refused(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "a.bin").write_bytes(b"A" * 64)
    (blobs / "b.bin").write_bytes(b"B" * 64)
    path = art.save_artifact(tmp_path / "s.kiln", relu_model().SerializeToString(),
                             backend="onnxruntime", backend_version=None, target="cpu",
                             source_sha256="", blob_dir=blobs)
    members = _members(path)
    with zipfile.ZipFile(path) as zf:
        comment = zf.comment
    members["blobs/a.bin"], members["blobs/b.bin"] = members["blobs/b.bin"], \
        members["blobs/a.bin"]
    swapped = _write(tmp_path / "swapped.kiln", members, comment)
    with pytest.raises(kiln.ArtifactError, match=r"member blobs/a.bin does not match its sha256"):
        art.load_artifact(swapped)


def test_model_swapped_from_another_artifact_refused(saved, tmp_path):
    other = kiln.Session(relu_model((3, 4)), backend="onnxruntime").save(tmp_path / "o.kiln")
    members = _members(saved)
    with zipfile.ZipFile(saved) as zf:
        comment = zf.comment
    members["model.onnx"] = _members(other)["model.onnx"]
    with pytest.raises(kiln.ArtifactError, match="model.onnx does not match its sha256"):
        kiln.Session(str(_write(tmp_path / "x.kiln", members, comment)))


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -1])
def test_truncated(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep == -1 else data[:int(len(data) * keep)])
    with pytest.raises(kiln.ArtifactError, match=r"not a readable zip|damaged|truncated"):
        kiln.Session(str(saved))


@pytest.mark.parametrize(("major", "word"), [(art.FORMAT_MAJOR + 1, "newer"), (0, "older")])
def test_wrong_format_version(saved, tmp_path, major, word):
    members = _members(saved)
    manifest = json.loads(members["manifest.json"])
    manifest["format_version"]["major"] = major
    members["manifest.json"] = json.dumps(manifest).encode()
    forged = _write(tmp_path / "v.kiln", members, rehash=True)
    with pytest.raises(kiln.ArtifactError, match=rf"artifact format {major}\.\d+ is {word}"):
        kiln.Session(str(forged))


def test_manifest_checksum_missing(saved, tmp_path):
    with pytest.raises(kiln.ArtifactError, match="checksum is missing"):
        kiln.Session(str(_write(tmp_path / "c.kiln", _members(saved), comment=b"")))


@pytest.mark.parametrize("kind", ["onnx_renamed", "empty", "zip_without_manifest",
                                  "zip_slip", "duplicate_member"])
def test_foreign_files(tmp_path, kind):
    path = tmp_path / "f.kiln"
    if kind == "onnx_renamed":
        path.write_bytes(relu_model().SerializeToString())
        match = "not a readable zip"
    elif kind == "empty":
        path.write_bytes(b"")
        match = "not a readable zip"
    elif kind == "zip_without_manifest":
        _write(path, {"model.onnx": relu_model().SerializeToString()})
        match = "has no manifest.json"
    elif kind == "zip_slip":
        _write(path, {"../evil.txt": b"x", "manifest.json": b"{}"})
        match = r"contains '\.\.'"
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("model.onnx", b"a")
            with pytest.warns(UserWarning):
                zf.writestr("model.onnx", b"b")
        match = "appears twice"
    with pytest.raises(kiln.ArtifactError, match=match):
        kiln.Session(str(path))
    assert not (tmp_path.parent / "evil.txt").exists()


def test_forged_artifact_with_garbage_model_is_a_kiln_error(saved, tmp_path):
    """Hashes recomputed by a forger: the chain holds, the model inside does not parse."""
    members = _members(saved)
    members["model.onnx"] = b"\xff\xfe not onnx"
    with pytest.raises(kiln.KilnError, match="model.onnx|ONNX"):
        kiln.Session(str(_write(tmp_path / "g.kiln", members, rehash=True)))


def test_forged_artifact_with_hostile_model_meets_the_guards(saved, tmp_path):
    """A consistent artifact is no proof of a benign model: the guards still apply."""
    members = _members(saved)
    bomb = model([h.make_node("ConstantOfShape", ["s"], ["y"])], [vi("x", [2, 4])],
                 [vi("y", ["a", "b", "c"])], inits=(const("s", [2**20] * 3),))
    members["model.onnx"] = bomb.SerializeToString()
    with pytest.raises(kiln.ResourceError, match="ConstantOfShape.*max_memory"):
        kiln.Session(str(_write(tmp_path / "b.kiln", members, rehash=True)))


def test_forged_artifact_with_invalid_graph_meets_the_validator(saved, tmp_path):
    members = _members(saved)
    bad = model([h.make_node("Add", ["x", "ghost"], ["y"])], [vi("x", [2, 4])],
                [vi("y", [2, 4])])
    members["model.onnx"] = bad.SerializeToString()
    with pytest.raises(kiln.ModelError, match="reads 'ghost'"):
        kiln.Session(str(_write(tmp_path / "i.kiln", members, rehash=True)))


@pytest.mark.parametrize("blobs", ["kept", "dropped"])
def test_forged_artifact_with_ill_typed_graph_is_refused(saved, tmp_path, blobs):
    """Input types an op's schema forbids (a complex64 Expand shape) are named by kiln's
    validator, whether or not a backend blob would serve the load."""
    members = _members(saved)
    if blobs == "dropped":
        members = {n: d for n, d in members.items() if not n.startswith(art.BLOBS)}
    bad = model([h.make_node("Expand", ["x", "s"], ["y"])], [vi("x", [1])], [vi("y", [2, 3])],
                inits=(const("s", [2 + 1j, 3], np.complex64),))
    members["model.onnx"] = bad.SerializeToString()
    forged = _write(tmp_path / "t.kiln", members, rehash=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy cast warning from a guard on the way
        with pytest.raises(kiln.ModelError, match=r"is complex64, but Expand-17 takes int64"):
            kiln.Session(str(forged))


# -- atomic writes ---------------------------------------------------------------------------
def test_failed_save_keeps_the_old_artifact_and_leaves_no_temp(tmp_path, monkeypatch):
    path = kiln.Session(relu_model(), backend="onnxruntime").save(tmp_path / "m.kiln")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail)
    with pytest.raises(OSError, match="No space left"):
        kiln.Session(relu_model((3, 4)), backend="onnxruntime").save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.kiln"]


_DIE_MID_WRITE = """
import os, sys, zipfile
sys.path[:0] = [{hostile!r}, {tests!r}]
import cases, kiln
real = zipfile.ZipFile.writestr
def die(self, name, *args, **kwargs):
    if name == "manifest.json":   # model.onnx already written: the file is half done
        os._exit(9)
    return real(self, name, *args, **kwargs)
zipfile.ZipFile.writestr = die
kiln.Session(cases.relu_model((3, 4)), backend="onnxruntime").save({path!r})
"""


def test_writer_killed_mid_write_leaves_no_half_artifact(tmp_path):
    path = kiln.Session(relu_model(), backend="onnxruntime").save(tmp_path / "m.kiln")
    before = path.read_bytes()
    code = _DIE_MID_WRITE.format(hostile=str(Path(__file__).parent),
                                 tests=str(Path(__file__).parents[1]), path=str(path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == 9, result.stderr.decode()[-2000:]
    assert path.read_bytes() == before  # the final name still holds the complete old file
    [y] = kiln.Session(str(path)).run(None, {"x": X})
    assert y.shape == (2, 4)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m.kiln"]
    assert all(name.startswith(".m.kiln.") and name.endswith(".tmp") for name in leftovers)
    fresh = tmp_path / "new.kiln"
    code = _DIE_MID_WRITE.format(hostile=str(Path(__file__).parent),
                                 tests=str(Path(__file__).parents[1]), path=str(fresh))
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert not fresh.exists()


def test_int64_input_artifact_roundtrip(tmp_path):
    """An artifact keeps the runtime bounds checks: they are rebuilt from its model."""
    data = const("data", np.arange(15, dtype=np.float32).reshape(5, 3), np.float32)
    m = model([h.make_node("Gather", ["data", "idx"], ["y"])], [vi("idx", [2], TP.INT64)],
              [vi("y", ["a", "b"])], inits=(data,))
    path = kiln.Session(m, backend="onnxruntime", opt_level=0).save(tmp_path / "g.kiln")
    with pytest.raises(kiln.InputError, match="index 7, out of range for axis 0 of size 5"):
        kiln.Session(str(path)).run(None, {"idx": np.array([0, 7], np.int64)})


def _weighted_model() -> ModelProto:
    w = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)  # 1 KiB: weights.bin
    return model([h.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 4])],
                 [vi("y", [2, 64])], inits=(const("w", w, np.float32),))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_flipped_byte_in_the_weights_member(tmp_path, backend, where):
    _available(backend)
    saved = kiln.Session(_weighted_model(), backend=backend).save(tmp_path / "w.kiln")
    offset, size = _data_span(saved, art.WEIGHTS)
    data = bytearray(saved.read_bytes())
    data[offset + min(size - 1, int(size * where))] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(kiln.ArtifactError, match="weights.bin does not match its sha256"):
        kiln.Session(str(saved))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_forged_weights_member_of_another_size_is_refused(tmp_path, backend):
    _available(backend)
    saved = kiln.Session(_weighted_model(), backend=backend).save(tmp_path / "w.kiln")
    members = _members(saved)
    members[art.WEIGHTS] = members[art.WEIGHTS][:512]  # rehashed: only the bounds tell
    forged = _write(tmp_path / "f.kiln", members, rehash=True)
    with pytest.raises(kiln.ArtifactError, match="outside weights.bin"):
        kiln.Session(str(forged))


@pytest.mark.parametrize(("key", "value", "match"), [
    ("offset", str(2**40), "of blobs/onnxruntime-extended.onnx: .*outside weights.bin"),
    ("location", "../../etc/passwd", "refers to external data '../../etc/passwd'")])
def test_forged_onnxruntime_blob_reading_beyond_the_weights_is_refused(tmp_path, key, value,
                                                                        match):
    """onnxruntime's extended blob refers to the weights member as model.onnx does, and its
    references are checked the same way before onnxruntime reads anything."""
    from onnx import TensorProto

    from kiln.backends.onnxruntime import EXTENDED_BLOB_FILE

    _available("onnxruntime")
    w = np.ones((2**19, 1), np.float32) * 0.5  # 2 MiB: large enough for the extended blob
    big = model([h.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 2**19])],
                [vi("y", [1, 1])], inits=(const("w", w, np.float32),))
    saved = kiln.Session(big, backend="onnxruntime").save(tmp_path / "w.kiln")
    members = _members(saved)
    name = f"{art.BLOBS}{EXTENDED_BLOB_FILE}"
    blob = ModelProto.FromString(members[name])
    tensor = next(t for t in blob.graph.initializer
                  if t.data_location == TensorProto.EXTERNAL)
    next(e for e in tensor.external_data if e.key == key).value = value
    members[name] = blob.SerializeToString()
    forged = _write(tmp_path / "f.kiln", members, rehash=True)
    with pytest.raises(kiln.ArtifactError, match=match):
        kiln.Session(str(forged), backend="onnxruntime")
