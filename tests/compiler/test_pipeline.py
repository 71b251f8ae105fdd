"""Pipelines per level, the compile report, and the light model zoo at O2."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from compiler_cases import load_light, ops, rand
from model_builders import float_model, run_reference
from onnx import helper

from kiln.compiler.capabilities import BackendCaps
from kiln.compiler.pipeline import LEVELS, build_pipeline, optimize

LIGHT = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
         "shufflenet", "squeezenet", "vgg19", "zfnet512")


def _feeds(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in v.shape])
            .astype(np.float32) for v in model.graph.inputs}


def test_levels_are_flat_named_lists_that_grow():
    names = {level: [name for name, _ in build_pipeline(level)] for level in LEVELS}
    assert names[0] == []
    assert "fold-constants" in names[1] and "fuse-batchnorm" not in names[1]
    assert set(names[1]) <= set(names[2]) and "fuse-batchnorm" in names[2]
    assert set(names[2]) <= set(names[3])
    kiln = [n for n, _ in build_pipeline(2, None, BackendCaps(kiln_ops=frozenset({"FusedConv"})))]
    assert "fuse-epilogue" in kiln and "fuse-epilogue" not in names[2]
    with pytest.raises(ValueError, match="optimization level"):
        build_pipeline(7)


def test_o0_changes_nothing_and_report_counts_nodes():
    model = float_model([helper.make_node("Identity", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, {})
    out, report = optimize(model, 0)
    assert ops(out) == ["Identity"] and report.passes == []
    assert report.nodes_before == report.nodes_after == 1


def test_report_records_time_nodes_and_rules_per_pass():
    model = load_light("resnet50")
    _, report = optimize(model, 2)
    by_name = {p.name: p for p in report.passes}
    assert by_name["fold-constants"].fired["fold ConstantOfShape"] == 239
    assert by_name["fuse-batchnorm"].fired["FuseBatchNormIntoConv"] == 53
    assert by_name["normalize"].fired["Sum->Add"] == 16
    assert all(p.seconds >= 0 for p in report.passes)
    assert by_name["fuse-batchnorm"].nodes_before - by_name["fuse-batchnorm"].nodes_after == 53
    assert by_name["fuse-batchnorm"].ops_delta == {"BatchNormalization": -53}
    assert by_name["normalize"].ops_delta == {"Add": 16, "Sum": -16}
    data = report.to_json()
    assert data["nodes_before"] == 415 and data["passes"][0]["name"] == report.pipeline[0]
    assert "fuse-batchnorm" in report.summary()


@pytest.mark.parametrize("random_weights", [False, True])
def test_resnet50_o2_has_no_batchnorm_or_constant_of_shape_and_same_outputs(random_weights):
    model = load_light("resnet50", random_weights)
    raw = ir.to_proto(model)
    original_nodes = len(onnx.load(
        __import__("light_models").light_model_path("resnet50")).graph.node)
    out, report = optimize(model, 2, None, BackendCaps("onnxruntime"))
    hist = report.ops_after
    assert "BatchNormalization" not in hist and "ConstantOfShape" not in hist
    assert report.nodes_after <= original_nodes // 2
    feeds = _feeds(out)
    for want, got in zip(run_reference(raw, feeds), run_reference(out, feeds)):
        scale = max(1.0, float(np.abs(want).max())) if random_weights else 1.0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_resnet50_for_a_kiln_backend_keeps_fused_convs():
    caps = BackendCaps("native", kiln_ops=frozenset({"FusedConv", "FusedGemm"}))
    out, report = optimize(load_light("resnet50"), 2, None, caps)
    assert report.ops_after["kiln::FusedConv"] == 49  # every Conv followed by Relu/Add+Relu
    assert report.ops_after.get("Relu", 0) == 0 and report.ops_after.get("Add", 0) == 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", LIGHT)
def test_light_model_o2_matches_raw(name, backend):
    from check_light_models import RUNNERS
    from light_models import logits, randomized

    proto = logits(randomized(onnx.load(__import__("light_models").light_model_path(name))))
    model = ir.from_proto(proto)
    from kiln.compiler.passes.cleanup import ConstantInitializersPass

    ConstantInitializersPass()(model)
    raw = ir.to_proto(model)
    out, _ = optimize(model, 2, None, BackendCaps(backend))
    feeds = _feeds(out, seed=3)
    run = RUNNERS[backend]
    for want, got in zip(run(raw, feeds), run(ir.to_proto(out), feeds)):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_o1_folds_but_does_not_fuse():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    inits = {"w": rand(2, 1, 1, 1), "g": rand(2), "b": rand(2), "m": rand(2),
             "v": rand(2, positive=True)}
    model = float_model(nodes, {"x": [1, 1, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)
    out, _ = optimize(model, 1)
    assert ops(out) == ["Conv", "BatchNormalization"]
    feeds = {"x": rand(1, 1, 2, 2)}
    assert run_reference(out, feeds)[0].shape == (1, 2, 2, 2)


SKIPPED = {"shapes as the last shape inference left them": 1}


def _value_types(model: ir.Model) -> dict[str, tuple]:
    return {v.name: (v.dtype, v.shape) for node in model.graph for v in node.outputs}


def test_shape_inference_is_skipped_while_every_change_kept_the_shapes():
    relu = float_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, {})
    _, report = optimize(relu, 1, shapes_inferred=True)
    step = next(p for p in report.passes if p.name == "infer-shapes")
    assert not step.modified and step.rejected == SKIPPED
    # the fold changes the graph and keeps the shapes: inference would give the same
    nodes = [helper.make_node("Mul", ["c", "c"], ["c2"]),
             helper.make_node("Sum", ["x", "c2"], ["s"]),  # normalize: Sum -> Add
             helper.make_node("Reshape", ["s", "shape"], ["y"])]
    inits = {"c": np.array([1, 2], np.float32), "shape": np.array([1, 2], np.int64)}
    folds = float_model(nodes, {"x": [2]}, {"y": [1, 2]}, inits)
    skipped, report = optimize(folds, 1, shapes_inferred=True)
    assert next(p for p in report.passes if p.name == "fold-constants").modified
    assert next(p for p in report.passes if p.name == "infer-shapes").rejected == SKIPPED
    inferred, report = optimize(folds, 1)  # not said to be inferred: it runs
    assert not next(p for p in report.passes if p.name == "infer-shapes").rejected
    assert _value_types(skipped) == _value_types(inferred)
    assert ops(skipped) == ["Add", "Reshape"]


class _ForgetsAShape(ir.passes.InPlacePass):
    """Changes the graph without keeping shapes: the shape of each node's output goes."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for node in model.graph:
            node.outputs[0].shape = None
        return ir.passes.PassResult(model, modified=True)


def test_shape_inference_runs_after_a_step_that_does_not_keep_shapes():
    from onnx_ir.passes.common import ShapeInferencePass

    from kiln.compiler.pipeline import run_steps
    from kiln.compiler.report import CompileReport

    relu = float_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, {})
    report = CompileReport(level=1, target="any", backend="onnx", pipeline=[])
    out = run_steps(relu, [("forget", _ForgetsAShape()),
                           ("infer-shapes", ShapeInferencePass(strict_mode=False))], report,
                    shapes_inferred=True)
    assert not report.passes[1].rejected and report.passes[1].modified
    assert next(iter(out.graph)).outputs[0].shape == ir.Shape([2])


class _SeesTheIndex(ir.passes.InPlacePass):
    """Records the graph index it finds; with ``neg``, turns every Relu into a Neg."""

    def __init__(self, neg: bool = False) -> None:
        super().__init__()
        self.neg = neg
        self.seen: list[object] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from kiln.compiler.graph_index import indexed

        self.seen.append(indexed(model))
        for node in model.graph:
            if self.neg and node.op_type == "Relu":
                node.op_type = "Neg"
        return ir.passes.PassResult(model, modified=self.neg)


def test_run_steps_hands_the_passes_one_index_until_a_pass_changes_the_graph():
    from kiln.compiler.graph_index import GRAPH_INDEX
    from kiln.compiler.pipeline import run_steps
    from kiln.compiler.report import CompileReport

    relu = float_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, {})
    first, second, changes, after = (_SeesTheIndex(), _SeesTheIndex(), _SeesTheIndex(True),
                                     _SeesTheIndex())
    report = CompileReport(level=1, target="any", backend="onnx", pipeline=[])
    out = run_steps(relu, [("a", first), ("b", second), ("neg", changes), ("c", after)],
                    report)
    assert first.seen[0] is second.seen[0] is changes.seen[0] is not None
    assert "Relu" in first.seen[0].ops
    assert after.seen[0] is not first.seen[0] and after.seen[0].ops == {"Neg"}
    assert report.passes[2].ops_delta == {"Neg": 1, "Relu": -1}
    assert GRAPH_INDEX not in out.meta  # the index does not outlive the pipeline


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT)
def test_light_model_o2_folds_every_constant_of_shape(name):
    _, report = optimize(load_light(name), 2, None, BackendCaps("onnxruntime"))
    assert "ConstantOfShape" not in report.ops_after  # VGG-19's fc6 alone is 103 Mi elements


@pytest.mark.parametrize(("a_shape", "fused"), [([4, 8], True), ([2, 4, 8], False)])
def test_matmul_add_becomes_gemm_only_in_2d(a_shape, fused):
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    model = float_model(nodes, {"a": a_shape}, {"y": [*a_shape[:-1], 5]},
                        {"w": rand(8, 5), "b": rand(5, seed=1)})
    feeds = {"a": rand(*a_shape, seed=2)}
    want = run_reference(model, feeds)
    out, _ = optimize(model, 2)
    assert ops(out) == (["Gemm"] if fused else ["MatMul", "Add"])
    np.testing.assert_allclose(run_reference(out, feeds)[0], want[0], rtol=1e-5, atol=1e-6)


def test_transpose_and_reshape_chains_collapse():
    nodes = [helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 1, 3, 2]),
             helper.make_node("Reshape", ["t2", "s1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
             helper.make_node("Relu", ["r2"], ["y"])]
    inits = {"s1": np.array([2, 60], np.int64), "s2": np.array([4, 30], np.int64)}
    model = float_model(nodes, {"x": [2, 3, 4, 5]}, {"y": [4, 30]}, inits)
    feeds = {"x": rand(2, 3, 4, 5)}
    want = run_reference(model, feeds)
    out, report = optimize(model, 2)
    assert ops(out) == ["Transpose", "Reshape", "Relu"]
    chains = next(p for p in report.passes if p.name == "collapse-chains")
    assert chains.fired == {"TransposeTranspose": 1, "ReshapeReshape": 1}
    np.testing.assert_allclose(run_reference(out, feeds)[0], want[0])


@pytest.mark.parametrize("max_opset", [13, 21])
def test_a_hard_swish_model_below_opset_14_moves_to_it_when_the_backend_takes_it(max_opset):
    """conv -> x * clip(x + 3, 0, 6) / 6 at opset 12: one HardSwish at opset 14 for a backend
    that imports 14 (OpenVINO folds that into the Conv), x * HardSigmoid(x) otherwise."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "three"], ["t"]),
             helper.make_node("Clip", ["t", "zero", "six"], ["r"]),
             helper.make_node("Mul", ["c", "r"], ["m"]),
             helper.make_node("Div", ["m", "six"], ["y"])]
    inits = {"w": rand(4, 3, 3, 3, seed=1), "three": np.array(3.0, np.float32),
             "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)}
    model = float_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits, opset=12)
    feeds = {"x": rand(1, 3, 8, 8, seed=2) * 3}
    want = run_reference(model, feeds)
    out, report = optimize(model, 2, None, BackendCaps("x", max_opset=max_opset))
    if max_opset >= 14:
        assert out.opset_imports[""] == 14 and "HardSwish" in ops(out)
    else:
        assert out.opset_imports[""] == 12 and "HardSigmoid" in ops(out)
    np.testing.assert_allclose(run_reference(out, feeds)[0], want[0], rtol=1e-5, atol=1e-5)


def test_conv_batchnorm_pairs_are_left_to_an_engine_that_folds_them():
    caps = BackendCaps("onnxruntime", folds_conv_batchnorm=True)
    _, report = optimize(load_light("resnet50"), 2, None, caps)
    assert report.ops_after["BatchNormalization"] == 53
    assert "FuseBatchNormIntoConv" not in {
        rule for p in report.passes for rule in p.fired}


def test_cleanup_steps_are_left_to_an_engine_that_cleans_up_at_load():
    from kiln.compiler.pipeline import ENGINE_CLEANUP_STEPS

    full = [n for n, _ in build_pipeline(2, None, BackendCaps("onnxruntime"))]
    lean = [n for n, _ in build_pipeline(2, None, BackendCaps("onnxruntime",
                                                               cleans_up_at_load=True))]
    assert ENGINE_CLEANUP_STEPS <= set(full)
    assert lean == [n for n in full if n not in ENGINE_CLEANUP_STEPS]
    assert "fold-constants" in lean and "remove-unused-final" in lean
