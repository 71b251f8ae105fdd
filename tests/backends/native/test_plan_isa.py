"""The native plan's ISA follows the Target: kernels, packing and blocking per plan."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from model_builders import make_conv_model

from kiln.backends.base import CompileOptions
from kiln.backends.native import _native as native
from kiln.backends.native.backend import NativeBackend
from kiln.backends.native.plan_isa import plan_isa
from kiln.compiler.target import Target

RNG = np.random.default_rng(7)


def _compile(model, target: str | None, threads: int = 1):
    options = CompileOptions(threads=threads, extra={"fallback": None})
    return NativeBackend().compile(ir.from_proto(model),
                                   None if target is None else Target.parse(target), options)


def _needs(isa: str) -> None:
    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(native.isa()):  # the CPU, or KILN_NATIVE_ISA's cap
        pytest.skip(f"the {isa} kernels do not run here")


@pytest.mark.parametrize(("target", "want"), [
    ("cpu", "generic"),
    ("cpu:avx2", "generic"),          # the AVX2 kernels use FMA too
    ("cpu:avx2,fma", "avx2"),
    ("cpu:avx2,fma,avx512f", "avx2"),  # AVX-512 needs BW and VL as well
    ("cpu:avx2,fma,avx512f,avx512bw,avx512vl", "avx512"),
    ("cpu:avx2,fma,avx512f,avx512bw,avx512vl,avx512_vnni", "avx512_vnni"),
    ("cpu:avx2,fma,avx512f,avx512bw,avx512vl,avx512_vnni,amx", "avx512_amx"),
    ("cpu:aarch64", "generic"),
    ("cpu:aarch64,neon", "neon"),
    ("cpu:aarch64,neon,dotprod", "neon_dotprod"),
    ("cpu:aarch64,neon,dotprod,i8mm", "neon_i8mm"),
])
def test_the_target_features_pick_the_level(target: str, want: str):
    assert plan_isa(Target.parse(target)) == want


def test_an_avx2_target_gets_the_avx2_kernels_and_the_same_results():
    _needs("avx2")
    model = make_conv_model(batch=2)
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    avx2 = _compile(model, "cpu:avx2,fma")
    best = _compile(model, None)
    kernels = avx2.report["kernels"]
    assert avx2.report["plan_isa"] == "avx2" and kernels["isa"] == "avx2"
    assert kernels["f32_gemm"] == "kiln_f32_gemm_ukernel__avx2_6x16"
    assert kernels["u8s8_gemm"] == "kiln_u8s8_gemm_ukernel__avx2"
    assert best.report["plan_isa"] == plan_isa(Target.detect())
    np.testing.assert_allclose(avx2.run({"x": x})["y"], best.run({"x": x})["y"],
                               rtol=1e-5, atol=1e-5)


def test_vnni_and_amx_plans_give_the_same_integers():
    """An avx512_vnni plan keeps the VNNI GEMM on a CPU with AMX; an avx512_amx plan takes the
    tiles where the OS grants them. MatMulInteger's int32 products are exact either way."""
    from model_builders import model_from_arrays, run_reference
    from onnx import helper

    if native.isa() != "avx512" or not native.cpu_features().get("avx512_vnni"):
        pytest.skip("no AVX-512 VNNI here")
    a = RNG.integers(0, 256, (150, 200)).astype(np.uint8)
    b = RNG.integers(-128, 128, (200, 70)).astype(np.int8)
    model = model_from_arrays([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], {"a": a},
                              ["y"], initializers={"b": b})
    want = run_reference(model, {"a": a})[0]
    vnni = "cpu:avx2,fma,avx512f,avx512bw,avx512vl,avx512_vnni"
    for target, kernel in ((vnni, "kiln_u8s8_gemm_ukernel__avx512vnni"),
                           (vnni + ",amx", "kiln_u8s8_gemm_panel__amx"
                            if native.kernels.amx_int8_ready()
                            else "kiln_u8s8_gemm_ukernel__avx512vnni")):
        compiled = _compile(model, target, threads=2)
        assert compiled.report["kernels"]["u8s8_gemm"] == kernel
        np.testing.assert_array_equal(compiled.run({"a": a})["y"], want)


def test_the_cpu_caps_the_plan_and_generic_always_runs():
    wide = _compile(make_conv_model(), "cpu:avx2,fma,avx512f,avx512bw,avx512vl,avx512_vnni")
    assert wide.report["kernels"]["isa"].startswith(native.isa())
    generic = _compile(make_conv_model(), "cpu")
    assert generic.report["kernels"]["f32_gemm"] == "kiln_f32_gemm_ukernel__generic_4x16"


def test_an_aarch64_target_is_cross_compiled_with_its_kernels_recorded(tmp_path):
    """On x86 an aarch64 plan is built with the generic kernels (to prove it lowers), records
    the aarch64 level and kernels, and a load on this machine rebuilds for it."""
    if native.best_isa() == "neon":
        pytest.skip("this machine is aarch64: the target is native here")
    from kiln.runtime.compile import compile as kiln_compile
    from kiln.runtime.compile import load as kiln_load

    model = make_conv_model()
    arm = _compile(model, "cpu:aarch64,neon,dotprod")
    assert arm.report["plan_isa"] == "neon_dotprod"
    assert arm.report["kernels"] == {"isa": "neon_dotprod",
                                     "f32_gemm": "kiln_f32_gemm_ukernel__neon_6x16",
                                     "f32_gemm_blocking": None,
                                     "u8s8_gemm": "kiln_u8s8_gemm_ukernel__neondot"}
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(arm.run({"x": x})["y"], _compile(model, "cpu").run({"x": x})["y"],
                               rtol=1e-6, atol=1e-6)

    onnx_path, kiln_path = tmp_path / "m.onnx", tmp_path / "m.kiln"
    onnx_path.write_bytes(model.SerializeToString())
    kiln_compile(str(onnx_path), backend="native", target="cpu:aarch64,neon,dotprod",
                 fallback=None).save(str(kiln_path))
    loaded = kiln_load(str(kiln_path))
    assert loaded.rebuild_reason and "cpu:aarch64,neon,dotprod" in loaded.rebuild_reason
    assert loaded.engine.report["plan_isa"] == plan_isa(Target.detect())


def test_the_plan_isa_reaches_the_pool_workers():
    """A chunk a pool worker runs sees the caller's plan ISA, not the CPU's best."""
    _needs("avx2")
    assert native.kernels.pool_isas("avx2") == ["avx2", "avx2"]
    assert native.kernels.pool_isas("generic") == ["generic", "generic"]


def test_the_plan_isa_is_set_before_the_nodes():
    plan = native.Plan(2)
    plan.add_node("r", "", "Relu", 17, [0], [1], {})
    with pytest.raises(ValueError, match="set_isa after add_node"):
        plan.set_isa("avx2")
    with pytest.raises(ValueError, match="unknown plan ISA"):
        native.Plan(1).set_isa("sse2")
    native.Plan(1).set_isa("neon_dotprod")  # an aarch64 level is known on every build
