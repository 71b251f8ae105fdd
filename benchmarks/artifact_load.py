"""Warm artifact load vs cold compile, per model and backend.

    python benchmarks/artifact_load.py [--repeat 5] [--backends onnxruntime,openvino,native]

"compile" is ``kiln.Session(model.onnx, backend=B)``: import, O2 passes and the backend's
compile. "load" is ``kiln.Session(model.kiln)`` on the artifact the first compile saved:
zip verification (sha256 of every member), parsing the optimized graph and the backend's
load from its blob (onnxruntime: its own optimized graph, opened with its optimizers off;
OpenVINO: ``import_model`` of the exported compiled model; native: the plan's value sizes,
so shape inference is skipped; weights are packed again). The two
are interleaved and medians reported; the machine is shared, so absolute figures are noisy.
Writes benchmarks/results/artifact_load.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kiln.backends import registry
from kiln.runtime.session import Session
from kiln.zoo import light_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_minilm import minilm_path  # noqa: E402


def _models() -> dict[str, Path]:
    models = {"resnet50": light_model("resnet50"), "densenet121": light_model("densenet121")}
    if minilm_path().exists():
        models["minilm-l6"] = minilm_path()
    return models


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="onnxruntime,openvino,native")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "artifact_load.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, path in _models().items():
            for backend in args.backends.split(","):
                if not registry.availability(backend).ok:
                    continue
                artifact = Path(tmp) / f"{model_name}-{backend}.kiln"
                try:
                    first = Session(str(path), backend=backend)
                except Exception as exc:  # a backend that cannot run this model
                    rows.append({"model": model_name, "backend": backend,
                                 "status": f"{type(exc).__name__}: {exc}"})
                    continue
                first.save(artifact)
                del first
                try:
                    Session(str(artifact), backend=backend)
                except Exception as exc:  # record why a saved artifact does not load
                    rows.append({"model": model_name, "backend": backend,
                                 "status": f"load failed: {type(exc).__name__}: {exc}"})
                    print(f"{model_name:12s} {backend:11s} load failed: {exc}", flush=True)
                    continue
                compile_s, load_s, passes_s = [], [], []
                for _ in range(args.repeat):
                    # each session is dropped outside the timed region: freeing an engine's
                    # weights is neither compile nor load
                    start = time.perf_counter()
                    cold = Session(str(path), backend=backend)
                    compile_s.append(time.perf_counter() - start)
                    passes_s.append(cold.report.seconds if cold.report else 0.0)
                    del cold
                    start = time.perf_counter()
                    warm = Session(str(artifact), backend=backend)
                    load_s.append(time.perf_counter() - start)
                    assert warm.rebuild_reason is None, warm.rebuild_reason
                    del warm
                row = {"model": model_name, "backend": backend, "status": "ok",
                       "compile_s": statistics.median(compile_s),
                       "o2_passes_s": statistics.median(passes_s),
                       "load_s": statistics.median(load_s),
                       "artifact_mb": artifact.stat().st_size / 1e6}
                row["speedup"] = row["compile_s"] / row["load_s"]
                rows.append(row)
                print(f"{model_name:12s} {backend:11s} compile {row['compile_s']:7.3f} s "
                      f"(passes {row['o2_passes_s']:.3f} s)  load {row['load_s']:7.3f} s  "
                      f"x{row['speedup']:.1f}  {row['artifact_mb']:.1f} MB", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"repeat": args.repeat, "note": "medians on a shared, "
                                    "loaded 2-core machine", "results": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
