"""The ISA a native plan is compiled for, read from the ``Target`` it is given.

The native kernels come at three ISA levels (generic, avx2, avx512), and the int8 GEMM also
at AVX-512 VNNI. A target names the CPU features the model may use; the plan takes the
widest level whose features the target has, all of them:

    avx512_vnni   avx512f, avx512bw, avx512vl, fma, and avx512_vnni (or amx)
    avx512        avx512f, avx512bw, avx512vl, fma
    avx2          avx2, fma
    generic       anything less (``cpu`` alone names baseline x86-64)

No target means this machine. The plan's kernels, weight packing (the GEMM tile) and cache
blocking all follow the level; the C++ side caps it at what this CPU runs, and
``Plan.kernels()`` reports what was chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.compiler.target import Target

#: Plan ISA levels, narrowest first.
LEVELS = ("generic", "avx2", "avx512", "avx512_vnni")

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
    if _AVX512 <= features:
        return "avx512_vnni" if target.has_vnni else "avx512"
    if _AVX2 <= features:
        return "avx2"
    return "generic"
