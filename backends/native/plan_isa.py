"""The ISA a native plan is compiled for, read from the ``Target`` it is given.

The native kernels come at three ISA levels (generic, avx2, avx512), and the int8 GEMM also
at AVX-512 VNNI. A target names the CPU features the model may use; the plan takes the
widest level whose features the target has, all of them:

    avx512_amx    avx512f, avx512bw, avx512vl, fma, and amx (int8 GEMM on AMX tiles where
                  the CPU and OS grant them, else VNNI)
    avx512_vnni   avx512f, avx512bw, avx512vl, fma, and avx512_vnni
    avx512        avx512f, avx512bw, avx512vl, fma
    avx2          avx2, fma
    generic       anything less (``cpu`` alone names baseline x86-64)

An aarch64 target (``cpu:aarch64,neon,dotprod``) maps to an aarch64 level, one of
ARM_LEVELS: neon (NEON f32 kernels, plain int8 GEMM), neon_dotprod (sdot int8 GEMM) or
neon_i8mm (usdot int8 GEMM); an aarch64 target without neon gets generic.

No target means this machine. The plan's kernels, weight packing (the GEMM tile) and cache
blocking all follow the level; the C++ side caps it at what this CPU runs, and
``Plan.kernels()`` reports what was chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.compiler.target import Target

#: Plan ISA levels, narrowest first.
LEVELS = ("generic", "avx2", "avx512", "avx512_vnni", "avx512_amx")
#: aarch64 plan ISA levels, narrowest first (generic is shared).
ARM_LEVELS = ("neon", "neon_dotprod", "neon_i8mm")

_AVX512 = frozenset({"avx512f", "avx512bw", "avx512vl", "fma"})
_AVX2 = frozenset({"avx2", "fma"})


def plan_isa(target: Target | None) -> str:
    """The plan ISA level for ``target`` (one of LEVELS); None means this machine."""
    if target is None:
        from kiln.compiler.target import Target

        target = Target.detect()
    if target.kind != "cpu":
        return LEVELS[-1]  # a GPU target says nothing about the host CPU: use all of it
    features = target.features
    if target.arch == "aarch64":
        for level, feature in zip(ARM_LEVELS[::-1], ("i8mm", "dotprod", "neon"), strict=True):
            if feature in features and "neon" in features:
                return level
        return "generic"
    if _AVX512 <= features:
        if target.has("amx"):
            return "avx512_amx"
        return "avx512_vnni" if target.has_vnni else "avx512"
    if _AVX2 <= features:
        return "avx2"
    return "generic"


def runs_here(isa: str, host_isa: str) -> bool:
    """Whether this build's kernels can run a plan at level ``isa``: the level belongs to the
    architecture of this machine (``host_isa`` is the engine's ``best_isa()``)."""
    return isa == "generic" or (isa in ARM_LEVELS) == (host_isa == "neon")


def cross_kernels(isa: str) -> dict[str, object]:
    """The kernels a plan at level ``isa`` runs on a CPU of the other architecture (the names
    in kernels/ukernels.inc and int8_gemm.cpp). The GEMM blocking is sized on the device from
    its caches, so it is not known here (None)."""
    if isa in ARM_LEVELS:
        u8s8 = {"neon": "generic", "neon_dotprod": "neondot", "neon_i8mm": "neoni8mm"}
        return {"isa": isa, "f32_gemm": "kiln_f32_gemm_ukernel__neon_6x16",
                "f32_gemm_blocking": None, "u8s8_gemm": f"kiln_u8s8_gemm_ukernel__{u8s8[isa]}"}
    gemm = {"generic": "kiln_f32_gemm_ukernel__generic_4x16",
            "avx2": "kiln_f32_gemm_ukernel__avx2_6x16"}.get(
                isa, "kiln_f32_gemm_ukernel__avx512_14x32")
    u8s8 = {"generic": "generic", "avx512_vnni": "avx512vnni"}.get(isa, "avx2")
    name = "kiln_u8s8_gemm_panel__amx" if isa == "avx512_amx" else \
        f"kiln_u8s8_gemm_ukernel__{u8s8}"
    return {"isa": isa, "f32_gemm": gemm, "f32_gemm_blocking": None, "u8s8_gemm": name}
