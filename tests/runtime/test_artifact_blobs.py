"""Backend blobs in the artifact: each CPU backend writes its own, a warm load uses it (no
rebuild) and gives the compiled model's outputs; blobs that do not fit are rebuilt with a
reason; a hostile native plan is refused; a load reads blobs from memory, writing no files."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from model_builders import make_conv_model

from kiln.backends import registry
from kiln.errors import ArtifactError
from kiln.runtime import artifact as art
from kiln.runtime.session import Session

BLOBS = {"onnxruntime": "onnxruntime.onnx", "openvino": "openvino.blob",
         "native": "native_plan.json"}


def _conv_model() -> bytes:
    return make_conv_model().SerializeToString()


def _needs(backend: str) -> None:
    status = registry.availability(backend)
    if not status.ok:
        pytest.skip(f"{backend} unavailable: {status.reason}")


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("backend", sorted(BLOBS))
def test_warm_load_uses_the_blob(backend: str, tmp_path: Path, x: np.ndarray):
    _needs(backend)
    cold = Session(_conv_model(), backend=backend)
    path = cold.save(tmp_path / "m.kiln")
    with zipfile.ZipFile(path) as zf:
        assert f"blobs/{BLOBS[backend]}" in zf.namelist()
    warm = Session(path)
    assert warm.backend == backend and warm.rebuild_reason is None
    np.testing.assert_allclose(warm(x=x)["y"], cold(x=x)["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_another_precision_rebuilds_and_says_why(backend: str, tmp_path: Path):
    _needs(backend)
    path = Session(_conv_model(), backend=backend).save(tmp_path / "m.kiln")
    other = Session(path, precision="fp16" if backend == "openvino" else "int8")
    assert other.rebuild_reason is not None
    assert "blobs were built for precision 'fp32'" in other.rebuild_reason


def test_an_artifact_runs_at_the_precision_it_was_compiled_for(tmp_path: Path):
    _needs("openvino")
    path = Session(_conv_model(), backend="openvino", precision="bf16").save(
        tmp_path / "m.kiln")
    warm = Session(path)
    assert warm.options.precision == "bf16" and warm.rebuild_reason is None


def test_a_load_writes_no_files(tmp_path: Path, monkeypatch):
    _needs("native")
    path = Session(_conv_model(), backend="native").save(tmp_path / "m.kiln")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    Session(path)
    assert list(scratch.iterdir()) == []


def _with_plan(path: Path, plan: bytes, out: Path) -> Path:
    """A consistent re-pack of ``path`` whose native plan is ``plan`` (hashes recomputed)."""
    loaded = art.load_artifact(path, extract_to=out.parent / "blobs")
    (loaded.blob_dir / BLOBS["native"]).write_bytes(plan)
    assert loaded.blobs[BLOBS["native"]] != plan
    manifest = loaded.manifest
    return art.save_artifact(out, loaded.model_bytes, backend="native",
                             backend_version=manifest["backend"]["version"],
                             target=manifest["target"], source_sha256="",
                             options=manifest["pipeline"]["options"],
                             inputs=manifest["inputs"], outputs=manifest["outputs"],
                             blob_dir=loaded.blob_dir)


@pytest.mark.parametrize("plan", [b"not json", b"[]", b'{"value_shapes": {"c": [[-1], 4]}}',
                                  b'{"value_shapes": {"c": [[1e300], 4]}}',
                                  b'{"value_shapes": {"c": [[2], 3]}}',
                                  b'{"value_shapes": {"c": 4}}',
                                  json.dumps({"value_shapes": {"c": [[1 << 31, 1 << 31], 4]}})
                                  .encode()])
def test_hostile_native_plan_is_refused(plan: bytes, tmp_path: Path):
    _needs("native")
    path = Session(_conv_model(), backend="native").save(tmp_path / "m.kiln")
    hostile = _with_plan(path, plan, tmp_path / "hostile" / "m.kiln")
    with pytest.raises(ArtifactError, match="native_plan.json"):
        Session(hostile)


def test_lying_native_shapes_cost_memory_not_correctness(tmp_path: Path, x: np.ndarray):
    _needs("native")
    cold = Session(_conv_model(), backend="native")
    path = cold.save(tmp_path / "m.kiln")
    with zipfile.ZipFile(path) as zf:
        truth = json.loads(zf.read(f"blobs/{BLOBS['native']}"))["value_shapes"]
    assert truth, "the plan should hold the shapes of the model's values"
    lies = {"value_shapes": {name: [[1], 4] for name in truth}}
    lying = _with_plan(path, json.dumps(lies).encode(), tmp_path / "lying" / "m.kiln")
    np.testing.assert_allclose(Session(lying)(x=x)["y"], cold(x=x)["y"], rtol=1e-6)
