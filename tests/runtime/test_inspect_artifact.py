"""What an artifact was compiled for and whether it loads here as built (native ISA too)."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from model_builders import make_conv_model

import kiln
from kiln.compiler.target import Target
from kiln.runtime.inspect_artifact import describe_artifact


@pytest.fixture
def avx2_artifact(tmp_path):
    from kiln.backends.native import _native

    if not {"avx2", "fma"} <= Target.detect().features or _native.isa() == "generic":
        pytest.skip("the AVX2 kernels do not run here")
    src = tmp_path / "m.onnx"
    onnx.save(make_conv_model(), src)
    return kiln.compile(str(src), backend="native", target="cpu:avx2,fma").save(
        tmp_path / "m.kiln")


def test_a_native_avx2_artifact_records_its_kernels_and_loads_as_built(avx2_artifact):
    info = describe_artifact(avx2_artifact)
    assert info["backend"] == "native" and info["target"] == "cpu:avx2,fma"
    assert info["details"]["plan isa"] == "avx2"
    assert info["details"]["f32 gemm"] == "kiln_f32_gemm_ukernel__avx2_6x16"
    assert info["loads_here_as_built"] and info["rebuild_reason"] is None
    session = kiln.Session(avx2_artifact)
    assert session.rebuild_reason is None
    assert session.compiled.engine.report["kernels"]["isa"] == "avx2"


def test_a_cpu_lacking_the_target_features_rebuilds_and_says_which(avx2_artifact,
                                                                   monkeypatch):
    old = Target(features=frozenset({"fma"}))  # a CPU without AVX2
    monkeypatch.setattr(Target, "detect", classmethod(lambda cls, device="cpu": old))
    info = describe_artifact(avx2_artifact)
    assert not info["loads_here_as_built"] and "lacks avx2" in info["rebuild_reason"]
    session = kiln.Session(avx2_artifact)
    assert "lacks avx2" in session.rebuild_reason
    assert session.compiled.engine.report["kernels"]["isa"] == "generic"


def test_kiln_inspect_shows_the_native_kernels(avx2_artifact):
    done = subprocess.run([sys.executable, "-m", "kiln", "inspect", str(avx2_artifact)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kiln_f32_gemm_ukernel__avx2_6x16" in done.stdout
    assert "loads here" in done.stdout  # "as built" unless a test run caps this process
    as_json = subprocess.run([sys.executable, "-m", "kiln", "inspect", str(avx2_artifact),
                              "--json"], capture_output=True, text=True, timeout=300)
    assert json.loads(as_json.stdout)["details"]["plan isa"] == "avx2"


def test_inspect_reports_the_format_member_sizes_and_the_native_arena(avx2_artifact):
    import zipfile

    info = describe_artifact(avx2_artifact)
    assert info["format"] == "2.0"
    with zipfile.ZipFile(avx2_artifact) as zf:
        stored = {i.filename: i.file_size for i in zf.infolist() if i.filename != "manifest.json"}
    assert info["members"] == stored
    details = info["details"]
    # the planner's arena: no larger than every intermediate side by side
    assert 0 < details["arena bytes"] <= details["intermediate bytes"]
    done = subprocess.run([sys.executable, "-m", "kiln", "inspect", str(avx2_artifact)],
                          capture_output=True, text=True, timeout=300)
    assert "model.onnx" in done.stdout and "arena bytes" in done.stdout
