"""A model file's sha256 is taken when first asked for, and only while the file is still the
one the compile read: a file rewritten, replaced or removed since has an unknown digest ("")
and a warning, never the digest of other contents."""

from __future__ import annotations

import hashlib
import os

import onnx
import pytest

import kiln
from kiln.compiler.frontend import import_model
from kiln.compiler.source_digest import SourceChangedWarning, SourceDigest, source_sha256


def _file(tmp_path, data: bytes = b"model bytes") -> tuple:
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    # written in an earlier clock tick than any rewrite below (file times are coarse)
    os.utime(path, ns=(10**18, 10**18))
    return path, SourceDigest.of_file(path, path.stat())


def test_a_file_is_hashed_when_asked_for_and_once(tmp_path, monkeypatch):
    path, digest = _file(tmp_path, os.urandom(3 << 20))  # more than one read's chunk
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest.hexdigest() == expected
    path.unlink()  # already hashed: the file is not read again
    assert digest.hexdigest() == expected


def test_bytes_are_hashed_at_once():
    assert SourceDigest.of_bytes(b"abc").hexdigest() == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("change", ["rewritten", "replaced", "removed"])
def test_a_file_changed_since_it_was_read_has_no_digest(tmp_path, change):
    path, digest = _file(tmp_path)
    if change == "rewritten":  # same size and file, new contents
        path.write_bytes(b"other bytes")
    elif change == "replaced":
        other = tmp_path / "other.onnx"
        other.write_bytes(b"model bytes")
        os.replace(other, path)
    else:
        path.unlink()
    with pytest.warns(SourceChangedWarning, match="m.onnx changed after kiln read it"):
        assert digest.hexdigest() == ""


def test_a_compiled_model_records_its_file_digest(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, path)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert source_sha256(import_model(path)) == expected
    compiled = kiln.compile(path, backend="onnxruntime")
    assert kiln.Session(compiled).source_sha256 == expected
    saved = compiled.save(tmp_path / "m.kiln")
    assert kiln.Session(saved).source_sha256 == expected


def test_a_model_not_read_from_a_source_has_no_digest(conv_model):
    import onnx_ir as ir

    assert source_sha256(ir.from_proto(conv_model)) == ""


def test_a_model_with_external_data_is_as_read_while_its_data_files_are(tmp_path):
    """An engine may open a model's files itself while the .onnx and the external-data files
    it names keep the identity they had when kiln read them."""
    import numpy as np
    from model_builders import save_matmul_model

    from kiln.compiler.source_digest import GRAPH_AS_READ, SOURCE_DIGEST

    weight = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    path = save_matmul_model(tmp_path / "m.onnx", weight, save_as_external_data=True,
                             location="m.data", size_threshold=0)
    data = tmp_path / "m.data"
    os.utime(data, ns=(10**18, 10**18))  # an earlier clock tick than the rewrite below
    model = import_model(path)
    digest = model.meta[SOURCE_DIGEST]
    assert model.meta.get(GRAPH_AS_READ) and digest.file_as_read() == path
    data.write_bytes(data.read_bytes())  # rewritten: the model is no longer as read
    assert digest.file_as_read() is None
