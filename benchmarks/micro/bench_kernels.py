"""Kernel micro-benchmarks: the FMA peak of one core, SGEMM and conv GFLOP/s next to it.

Measures, per ISA path this CPU runs (forced with ``set_isa_cap``):
  * the peak-FMA probe (independent FMA chains, one core),
  * SGEMM for square and model-derived shapes (weights prepacked, and packed per call),
  * conv2d for every ResNet-50 layer shape (batch 1) and some depthwise layers.
Rounds are interleaved (every shape once per round) so that load from other processes is
spread over all shapes; the report gives the best and the median round.

    python benchmarks/micro/bench_kernels.py --rounds 5
writes benchmarks/results/micro_gemm.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import (
    DEPTHWISE_CONVS,
    GEMM_SHAPES,
    RESNET50_CONVS,
    WINOGRAD_CANDIDATES,
    ConvShape,
)  # noqa: E402

from kiln.backends.native import _native  # noqa: E402

K = _native.kernels
ORDER = ["generic", "avx2", "avx512"]


def runnable_isas() -> list[str]:
    return ORDER[: ORDER.index(_native.best_isa()) + 1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def clock_for(threads: int) -> str:
    """One thread: its own CPU time (drops the time other processes held the core).
    Several threads: wall time."""
    return "thread_cpu" if threads == 1 else "wall"


def gemm_gflops(m: int, n: int, k: int, packed: bool, threads: int, seconds: float) -> float:
    times = K.bench_gemm(m, n, k, threads, packed, 1, seconds, clock_for(threads))
    return 2.0 * m * n * k / min(times) * 1e-9


def conv_gflops(
    s: ConvShape, threads: int, seconds: float, algorithm: str = "auto"
) -> tuple[float, str]:
    times, algo = K.bench_conv2d(
        [s.n, s.c, s.h, s.w],
        [s.k, s.c // s.groups, s.kh, s.kw],
        [s.stride] * 2,
        [s.pad] * 4,
        [1, 1],
        s.groups,
        algorithm,
        threads,
        1,
        seconds,
        clock_for(threads),
    )
    return s.flops / min(times) * 1e-9, algo


PEER_ENGINES = ("onnxruntime", "openvino", "numpy")
PEER_SIZES = (1024, 2048)


def peer_gflops(engine: str, n: int) -> float:
    """Another engine's SGEMM, measured in a fresh process (see peer_sgemm.py)."""
    script = Path(__file__).resolve().parent / "peer_sgemm.py"
    done = subprocess.run([sys.executable, str(script), engine, str(n)], capture_output=True,
                          text=True, timeout=300, check=True)
    return float(done.stdout.strip())


def stats(xs: list[float]) -> tuple[float, float]:
    return max(xs), statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.1, help="minimum time per measurement")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "results" / "micro_gemm.md",
    )
    ap.add_argument("--skip-generic", action="store_true", help="skip the slow plain C++ path")
    ap.add_argument("--skip-peers", action="store_true",
                    help="skip other engines' SGEMM on the same shapes (peer_sgemm.py)")
    args = ap.parse_args()

    isas = [i for i in runnable_isas() if not (args.skip_generic and i == "generic")]
    simd = [i for i in isas if i != "generic"]
    load_before = os.getloadavg()
    started = time.time()

    peaks: dict[str, list[float]] = {i: [] for i in simd}
    gemm: dict[tuple, list[float]] = {}
    conv: dict[tuple, list[float]] = {}
    algos: dict[str, str] = {}
    wino: dict[tuple, list[float]] = {}
    peers: dict[tuple, list[float]] = {}
    gemm_cases = [
        (name, m, n, k, packed) for name, m, n, k in GEMM_SHAPES for packed in (True, False)
    ]
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        for isa in isas:
            _native.set_isa_cap(isa)
            if isa in peaks:
                peaks[isa].append(K.fma_peak(isa, 10_000_000, 3, "thread_cpu"))
            for name, m, n, k, packed in gemm_cases:
                if isa == "generic" and (m * n * k > 1024**3 or not packed):
                    continue
                for threads in (1, 2) if name == "square 1024" else (1,):
                    key = (isa, name, packed, threads)
                    gemm.setdefault(key, []).append(
                        gemm_gflops(m, n, k, packed, threads, args.seconds)
                    )
            if isa == "generic":
                continue
            for s in RESNET50_CONVS + DEPTHWISE_CONVS:
                g, algo = conv_gflops(s, 1, args.seconds / 2)
                conv.setdefault((isa, s.name), []).append(g)
                algos[s.name] = algo
            for s in WINOGRAD_CANDIDATES:
                for algo in ("im2col", "winograd", "implicit"):
                    g, _ = conv_gflops(s, 1, args.seconds / 2, algo)
                    wino.setdefault((isa, s.name, algo), []).append(g)
        if not args.skip_peers:
            for engine in PEER_ENGINES:
                for n in PEER_SIZES:
                    peers.setdefault((engine, n), []).append(peer_gflops(engine, n))
    _native.set_isa_cap("avx512")
    load_after = os.getloadavg()

    peak = {i: max(v) for i, v in peaks.items()}
    lines = [
        "# Kernel micro-benchmarks (f32)",
        "",
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; caches {K.cache_sizes()}.",
        f"Generated by `python benchmarks/micro/bench_kernels.py --rounds {args.rounds}` "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}.",
        "",
        "**The machine was shared with other builds and test runs while this ran** (load "
        f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on 2 cores). So: "
        "one-thread figures are timed with the thread's own CPU time "
        "(`CLOCK_THREAD_CPUTIME_ID`), which leaves out the time other processes held the "
        "core but not their cache and memory traffic; two-thread figures are wall time and "
        f"suffer the load fully. Each figure is the best of {args.rounds} interleaved rounds, "
        "with the median round beside it.",
        "",
        "## Peak FMA throughput, one core",
        "",
        "| ISA | best GFLOP/s | median |",
        "|---|---:|---:|",
    ]
    for isa in simd:
        b, m = stats(peaks[isa])
        lines.append(f"| {isa} | {b:.1f} | {m:.1f} |")
    lines += [
        "",
        "## SGEMM (row-major C = A B)",
        "",
        "`packed B`: B prepacked once (constant weights), A packed per call. `per call`: both "
        "operands packed inside every call. % peak is of the same ISA's one-core FMA peak "
        "(times the thread count).",
        "",
        "| ISA | shape | M x N x K | B | threads | best GFLOP/s | median | best % peak |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for (isa, name, packed, threads), xs in gemm.items():
        m, n, k = next((m, n, k) for nm, m, n, k in GEMM_SHAPES if nm == name)
        b, med = stats(xs)
        pct = f"{100 * b / (peak[isa] * threads):.0f}%" if isa in peak else "-"
        lines.append(
            f"| {isa} | {name} | {m}x{n}x{k} | {'packed' if packed else 'per call'} "
            f"| {threads} | {b:.1f} | {med:.1f} | {pct} |"
        )
    if peers:
        best_isa = simd[-1]
        lines += [
            "",
            "### The same shapes on other engines' SGEMM (one thread, B constant)",
            "",
            "How close a tuned GEMM gets to the probe on this core: each engine in a fresh "
            "process (`benchmarks/micro/peer_sgemm.py`), timed by process CPU time, best call "
            f"per round; % of the {best_isa} probe.",
            "",
            "| engine | M x N x K | best GFLOP/s | median | best % peak |",
            "|---|---|---:|---:|---:|",
        ]
        for (engine, n), xs in peers.items():
            b, med = stats(xs)
            lines.append(f"| {engine} | {n}x{n}x{n} | {b:.1f} | {med:.1f} "
                         f"| {100 * b / peak[best_isa]:.0f}% |")
    lines += [
        "",
        "## conv2d, ResNet-50 layers and depthwise layers (batch 1, NCHW, one thread)",
        "",
        "GEMM view: M = output channels, N = output pixels, K = C/groups x kh x kw.",
        "",
        "| layer | algorithm | GEMM M x N x K | ISA | best GFLOP/s | median | best % peak |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for s in RESNET50_CONVS + DEPTHWISE_CONVS:
        m, n, k = s.gemm
        for isa in simd:
            b, med = stats(conv[(isa, s.name)])
            lines.append(
                f"| {s.name} | {algos[s.name]} | {m}x{n}x{k} | {isa} | {b:.1f} "
                f"| {med:.1f} | {100 * b / peak[isa]:.0f}% |"
            )
    lines += [
        "",
        "## 3x3 stride-1 layers: im2col vs Winograd F(4x4, 3x3) vs implicit GEMM (one thread)",
        "",
        "Effective GFLOP/s (direct-convolution flops / time), best round. `auto` picks "
        "Winograd for C, K >= 64 with >= 16 tiles or weights within L2, else the "
        "implicit GEMM (kernels/conv.cpp). Weights stay hot in this loop; in a model they "
        "come from memory, which costs Winograd's 4x larger weights most.",
        "",
        "| layer | ISA | im2col | winograd | implicit | winograd / im2col | auto picks |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for s in WINOGRAD_CANDIDATES:
        for isa in simd:
            a = max(wino[(isa, s.name, "im2col")])
            w = max(wino[(isa, s.name, "winograd")])
            i = max(wino[(isa, s.name, "implicit")])
            picked = conv_gflops(s, 1, 0.01)[1]
            lines.append(f"| {s.name} | {isa} | {a:.1f} | {w:.1f} | {i:.1f} | {w / a:.2f}x "
                         f"| {picked} |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
