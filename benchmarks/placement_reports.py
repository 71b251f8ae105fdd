"""Placement reports for every light model (and a MiniLM export when given) on each backend.

    python benchmarks/placement_reports.py [--minilm PATH] [--out benchmarks/results/placement]
    python benchmarks/placement_reports.py --corpus --backend native \
        --out benchmarks/results/placement/corpus_before

Writes one ``kiln inspect --json`` report per model and prints a summary table: per backend,
nodes it runs, refused ops, and the partitions / boundary tensors / bytes per inference of
that backend paired with the onnxruntime fallback. ``--corpus`` places the real-model corpus
(``benchmarks/real_model_corpus.py``, from its cache, with each model's pinned dims) instead
of the light models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kiln.compiler.frontend import import_model
from kiln.compiler.target import Target
from kiln.runtime.placement import placement_report
from kiln.zoo import LIGHT_MODELS, light_model

BACKENDS = ["native", "openvino", "tensorrt"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", type=Path, default=None, help="a MiniLM ONNX export")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/placement"))
    parser.add_argument("--dim", action="append", default=[], help="NAME=SIZE")
    parser.add_argument("--corpus", action="store_true",
                        help="place the real-model corpus instead of the light models")
    parser.add_argument("--backend", action="append", default=[],
                        help="a backend to place on (repeatable; default: all three)")
    parser.add_argument("--opt-level", type=int, default=2,
                        help="optimize first as a Session would; -1 places the imported graph")
    args = parser.parse_args()
    given = {k: int(v) for k, v in (d.split("=") for d in args.dim)}
    backends = args.backend or BACKENDS
    if args.corpus:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from benchmarks.real_model_corpus import CORPUS, fetch

        models = {m.name: fetch(m) for m in CORPUS}
        model_dims = {m.name: {**m.dims, **given} for m in CORPUS}
    else:
        models = {name: light_model(name) for name in LIGHT_MODELS}
        model_dims = {name: given for name in models}
    if args.minilm:
        models["minilm"] = args.minilm
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"opt_level={args.opt_level}; runs = nodes of the graph optimized for that backend",
             f"{'model':13} {'backend':9} {'runs':>9} {'parts':>5} {'bounds':>6} "
             f"{'bytes/inf':>11}  refused ops"]
    for name, path in models.items():
        level = None if args.opt_level < 0 else args.opt_level
        report = placement_report(import_model(path), backends, "onnxruntime",
                                  model_dims.get(name, given),
                                  opt_level=level, target=Target.detect())
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
        for backend, entry in report["backends"].items():
            plan = entry["plan"]
            size = plan["boundary_bytes_per_inference"]
            refused = ", ".join(f"{op} x{v['count']}" for op, v in entry["refused_by_op"].items())
            lines.append(f"{name:13} {backend:9} {entry['runs']:>4}/{entry['of']:<4} "
                         f"{plan['partition_count']:>5} {plan['boundary_tensor_count']:>6} "
                         f"{'?' if size is None else size:>11}  {refused or '-'}")
            print(lines[-1])
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
