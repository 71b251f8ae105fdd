"""Per-op speedup of the native engine from 1 to 2 threads, from its own per-node clock.

    python benchmarks/native_scaling.py                          # the native_vs_peers corpus
    python benchmarks/native_scaling.py --models corpus:ddddocr_lstm+minilm_l6 --runs 30
    python benchmarks/native_scaling.py --out benchmarks/results/scaling_s8.md

For each model: one native session per thread count (compiled with ``profile=True``), run in
interleaved blocks; per node the median of its times. Ops are summed per op type; speedup =
time at 1 thread / time at 2 threads (1.0 = does not split, 2.0 = perfect); splits = the
parallel_for calls the nodes handed to the workers in one 2-thread run. Also listed: the
nodes that lose most time at 2 threads against a perfect split, and the wall time (timers
off would be a little faster: the clock costs two reads per node).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.* siblings
from benchmarks.native_vs_peers import CORPUS_SET, resolve_models  # noqa: E402
from kiln.runtime.session import Session  # noqa: E402


def op_label(node) -> str:
    """The op name; grouped convs marked depthwise (one channel per group) or grouped."""
    group = int(node.attrs.get("group", 1) or 1)
    if node.op in ("Conv", "FusedConv") and group > 1:
        return f"{node.op} dw" if group > 2 else f"{node.op} grouped"
    return node.op


def node_samples(sess: Session, feeds: dict, runs: int) -> tuple[dict, dict, dict, list]:
    """(node -> us of each call, node -> op label, node -> parallel_for calls it handed to
    the workers in the last call, wall ms of each call) over ``runs`` calls."""
    per_node: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    split_of: dict[str, int] = {}
    walls = []
    segments = sess._compiled.segments  # the native executor's plans, in run order
    for _ in range(runs):
        t0 = time.perf_counter()
        times = sess.node_times(feeds, 1)[0]
        walls.append((time.perf_counter() - t0) * 1e3)
        nodes = [n for seg in segments for n in seg.lowered.nodes]
        splits = [k for seg in segments for k in seg.plan.node_splits()]
        for t, node, k in zip(times, nodes, splits):
            per_node[t.name].append(t.us)
            op_of[t.name] = op_label(node)
            split_of[t.name] = k
    return per_node, op_of, split_of, walls


def profile_model(path: Path, feeds: dict, runs: int, rounds: int, stat: str) -> dict:
    """Per thread count: (node -> us, op labels, splits, wall ms), each node's time the
    median (or min) of its ``rounds`` x ``runs`` calls, taken in interleaved blocks."""
    sessions = {t: Session(path, backend="native", threads=t, profile=True) for t in (1, 2)}
    calls: dict[int, dict[str, list[float]]] = {1: defaultdict(list), 2: defaultdict(list)}
    walls: dict[int, list[float]] = {1: [], 2: []}
    labels: dict[int, tuple[dict, dict]] = {}
    for s in sessions.values():
        s.node_times(feeds, 2)  # warm
    for r in range(rounds):
        for t in ((1, 2) if r % 2 == 0 else (2, 1)):
            time.sleep(0.05)
            per_node, op_of, split_of, w = node_samples(sessions[t], feeds, runs)
            for name, us in per_node.items():
                calls[t][name] += us
            walls[t] += w
            labels[t] = (op_of, split_of)
    pick = min if stat == "min" else statistics.median
    return {t: ({n: pick(v) for n, v in calls[t].items()}, labels[t][0], labels[t][1],
                pick(walls[t])) for t in (1, 2)}


def report(name: str, prof: dict, top: int) -> list[str]:
    t1, op_of, _, wall1 = prof[1]
    t2, _, splits, wall2 = prof[2]
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0])
    for n, us in t1.items():
        acc = by_op[op_of[n]]
        acc[0] += us
        acc[1] += t2.get(n, 0.0)
        acc[2] += 1
        acc[3] += splits.get(n, 0)
    sum1, sum2 = sum(t1.values()), sum(t2.values())
    lines = [f"### {name}", "",
             f"wall {wall1:.2f} ms at 1 t, {wall2:.2f} ms at 2 t (x{wall1 / wall2:.2f}); "
             f"node sum {sum1 / 1e3:.2f} / {sum2 / 1e3:.2f} ms (x{sum1 / sum2:.2f})", "",
             "| op | nodes | splits | 1 t ms | 2 t ms | speedup | 2 t share | lost vs x2 (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = sorted(by_op.items(), key=lambda kv: -kv[1][1])
    for op, (a, b, k, sp) in rows:
        if b < 0.005 * sum2:
            continue
        lines.append(f"| {op} | {k} | {sp} | {a / 1e3:.3f} | {b / 1e3:.3f} "
                     f"| {a / max(b, 1e-9):.2f} "
                     f"| {100 * b / sum2:.1f}% | {(b - a / 2) / 1e3:.3f} |")
    lines += ["", f"nodes losing most against a perfect split (top {top}):", "",
              "| node | op | splits | 1 t us | 2 t us | speedup |",
              "|---|---|---:|---:|---:|---:|"]
    worst = sorted(t1, key=lambda n: -(t2.get(n, 0.0) - t1[n] / 2))[:top]
    for n in worst:
        lines.append(f"| {n[:60]} | {op_of[n]} | {splits.get(n, 0)} | {t1[n]:.1f} | {t2[n]:.1f} "
                     f"| {t1[n] / max(t2[n], 1e-9):.2f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="corpus:" + "+".join(CORPUS_SET))
    parser.add_argument("--runs", type=int, default=10, help="calls per block")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved blocks per thread")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="per node: median of its calls, or min (the best case: on a "
                             "busy machine the median mostly measures the other processes)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (else stdout)")
    args = parser.parse_args()
    from benchmarks import real_model_corpus as corpus
    from benchmarks.native_vs_peers import model_feeds

    load = os.getloadavg()[0]
    lines = ["# native per-op scaling, 1 -> 2 threads", "",
             f"Per node the {args.stat} of {args.rounds} interleaved blocks of {args.runs} "
             "profiled calls. "
             "Shared 2-CPU machine: timings are noisy.", ""]
    for model_set, name, path in resolve_models(args.models, Path("/work/cache/models")):
        feeds = (corpus.feeds(corpus.by_name(name)) if model_set == "corpus"
                 else model_feeds(path, {}, 640, {}))
        prof = profile_model(path, feeds, args.runs, args.rounds, args.stat)
        block = report(name, prof, args.top)
        print("\n".join(block), flush=True)
        lines += block
    lines.append(f"1-minute load average {load:.2f} before, {os.getloadavg()[0]:.2f} after.")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
