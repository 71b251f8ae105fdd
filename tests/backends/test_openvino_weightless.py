"""The OpenVINO .kiln holds the weights once: its blob is OpenVINO's weightless export, whose
constants a load takes from the artifact's weights member; a blob that does not import, or whose
weights are not where it expects them, is compiled from model.onnx instead, saying why."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.backends import openvino as ov_backend
from kiln.backends import registry
from kiln.runtime import artifact as art


@pytest.fixture(autouse=True)
def _needs_openvino():
    status = registry.availability("openvino")
    if not status.ok:
        pytest.skip(f"openvino unavailable: {status.reason}")


def _model() -> bytes:
    """Conv -> Relu -> Reshape -> MatMul + bias: 9 KiB and 256 KiB of weights (to weights.bin)
    and small tensors that stay inline in model.onnx."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((32, 8, 3, 3)).astype(np.float32),
              "b": rng.standard_normal(32).astype(np.float32),
              "fc": rng.standard_normal((32 * 4 * 4, 128)).astype(np.float32) * 0.05,
              "fcb": rng.standard_normal(128).astype(np.float32),
              "shape": np.array([1, -1], dtype=np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["m"]),
             helper.make_node("Add", ["m", "fcb"], ["y"])]
    graph = helper.make_graph(
        nodes, "weighty",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
        [numpy_helper.from_array(a, name) for name, a in arrays.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 8, 4, 4)).astype(np.float32)


def _members(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: info.file_size for info in zf.infolist()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_artifact_holds_the_weights_once_and_loads_equal(
        tmp_path: Path, x: np.ndarray, precision: str):
    cold = kiln.Session(_model(), backend="openvino", precision=precision)
    path = cold.save(tmp_path / "m.kiln")
    members = _members(path)
    blob = members[f"blobs/{ov_backend.WEIGHTLESS_BLOB_FILE}"]
    assert f"blobs/{ov_backend.BLOB_FILE}" not in members
    # the 265 KiB of weights live in weights.bin alone; the blob keeps the compiled graph
    assert members[art.WEIGHTS] > 270_000 and blob < members[art.WEIGHTS] // 4
    warm = kiln.Session(path)
    assert warm.rebuild_reason is None  # imported, constants read from the .kiln
    np.testing.assert_array_equal(warm(x=x)["y"], cold(x=x)["y"])


def test_kiln_inspect_lists_the_small_blob_beside_the_weights(tmp_path: Path):
    from kiln.runtime.inspect_artifact import describe_artifact

    path = kiln.Session(_model(), backend="openvino").save(tmp_path / "m.kiln")
    sizes = describe_artifact(path)["members"]
    assert sizes[f"blobs/{ov_backend.WEIGHTLESS_BLOB_FILE}"] < sizes[art.WEIGHTS] // 4


def test_a_blob_that_does_not_import_is_compiled_from_the_graph(
        tmp_path: Path, x: np.ndarray, monkeypatch):
    cold = kiln.Session(_model(), backend="openvino")
    with monkeypatch.context() as patch:  # a blob this OpenVINO cannot read, hashed as kiln's
        patch.setattr(ov_backend, "_exported", lambda compiled: b"not an OpenVINO blob")
        path = cold.save(tmp_path / "m.kiln")
    warm = kiln.Session(path)
    assert warm.rebuild_reason is not None
    assert f"did not import {ov_backend.WEIGHTLESS_BLOB_FILE}" in warm.rebuild_reason
    np.testing.assert_allclose(warm(x=x)["y"], cold(x=x)["y"], rtol=1e-5, atol=1e-5)


def test_weights_elsewhere_than_the_blob_expects_are_not_read(
        tmp_path: Path, x: np.ndarray, monkeypatch):
    cold = kiln.Session(_model(), backend="openvino")
    with monkeypatch.context() as patch:  # a layout record another artifact would carry
        patch.setattr(ov_backend, "_layout_of_file",
                      lambda graph: {"tensors": 2, "sha256": "0" * 64})
        path = cold.save(tmp_path / "m.kiln")
    warm = kiln.Session(path)
    assert "do not lie in the artifact where" in (warm.rebuild_reason or "")
    np.testing.assert_allclose(warm(x=x)["y"], cold(x=x)["y"], rtol=1e-5, atol=1e-5)


def test_a_model_with_no_weights_member_keeps_the_whole_blob(tmp_path: Path):
    from model_builders import make_conv_model  # every tensor under 1 KiB: inline

    path = kiln.Session(make_conv_model().SerializeToString(), backend="openvino").save(
        tmp_path / "m.kiln")
    members = _members(path)
    assert f"blobs/{ov_backend.BLOB_FILE}" in members and art.WEIGHTS not in members
    assert kiln.Session(path).rebuild_reason is None


def test_the_layout_record_names_every_external_tensor(tmp_path: Path):
    path = kiln.Session(_model(), backend="openvino").save(tmp_path / "m.kiln")
    with zipfile.ZipFile(path) as zf:
        record = json.loads(zf.read(f"blobs/{ov_backend.LAYOUT_FILE}"))
    assert record["tensors"] == 2  # w and fc; the small ones stay inline


def test_an_artifact_with_the_whole_blob_beside_the_weights_still_imports(
        tmp_path: Path, x: np.ndarray):
    # what kiln wrote before the weightless blob: CompiledModel.save's whole export
    compiled = kiln.compile(_model(), backend="openvino")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    compiled.engine.save(blobs)
    path = art.save_artifact(
        tmp_path / "m.kiln", compiled.model, backend="openvino",
        backend_version=compiled.backend_version(), target=str(compiled.target),
        source_sha256="", options=compiled.options.to_json(),
        inputs=[i.to_json() for i in compiled.inputs],
        outputs=[o.to_json() for o in compiled.outputs], blob_dir=blobs)
    assert {f"blobs/{ov_backend.BLOB_FILE}", art.WEIGHTS} <= set(_members(path))
    warm = kiln.Session(path)
    assert warm.rebuild_reason is None
    np.testing.assert_array_equal(warm(x=x)["y"], compiled.engine.run({"x": x})["y"])
