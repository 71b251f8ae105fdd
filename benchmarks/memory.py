"""Peak memory and time to first inference: kiln per backend vs the engine it wraps, used directly.

Every measurement runs in a fresh Python process (``--child``), so no engine inherits another's
peak. In the child: import everything the engine needs, read VmRSS (the baseline), open the
model, run it once (time to first inference), run it twice more, read VmHWM (the process's peak
RSS, which Linux cannot reset). Reported: peak above the baseline, in MB.

"cold" opens the .onnx (kiln compiles it); "warm" opens a .kiln artifact saved beforehand
(the engines used directly have no artifact: their warm figure is their cold one).

    python benchmarks/memory.py                       # every model, every engine
    python benchmarks/memory.py --models resnet50     # one model
    python benchmarks/memory.py --steps kiln-openvino minilm-l6   # where the bytes and
                                                                  # seconds go, step by step
    python benchmarks/memory.py --base-python /tmp/venv-base/bin/python  # each kiln engine
        # also with another kiln tree's interpreter, "(base)" rows in the same rounds; each
        # pair runs in a fixed order, so swap the two interpreters for a second run

Writes benchmarks/results/memory.{json,md}. Figures come from a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CACHE = Path("/work/cache/models")
RESULTS = ROOT / "results"
RUNS = 3

ENGINES = ("onnxruntime", "openvino", "kiln-onnxruntime", "kiln-openvino", "kiln-native")
#: what each kiln engine is compared with (native is held to onnxruntime used directly)
BASELINE = {"kiln-onnxruntime": "onnxruntime", "kiln-openvino": "openvino",
            "kiln-native": "onnxruntime"}


def resnet50_path() -> Path:
    """The light ResNet-50 with its ConstantOfShape weights made real random initializers
    (100 MB), the way a trained ResNet-50 ships them; written once under the cache."""
    path = CACHE / "light_resnet50_random.onnx"
    if not path.is_file():
        import onnx

        from benchmarks.light_models import light_model_path, randomized

        model = randomized(onnx.load(light_model_path("resnet50")))
        weights = {t.name for t in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in weights]  # weights, not inputs
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, path)
    return path


def models() -> dict[str, Path]:
    return {
        "resnet50": resnet50_path(),
        "minilm-l6": CACHE / "minilm_l6.onnx",  # sentence-transformers MiniLM-L6 encoder
        "yolov8n-320": CACHE / "nudenet-3.4.2/nudenet/320n.onnx",  # nudenet's YOLOv8n
        # nine 8192x8192 MatMuls, 2.25 GiB of weights in big_mlp.onnx.data (external data),
        # written on first use (benchmarks/models.py, big_mlp)
        "big-mlp": CACHE / "big/big_mlp.onnx",
    }


def weights_mb(model: Path) -> float:
    """The model file plus its external-data files (those beside it named after it)."""
    files = [model, *model.parent.glob(model.name + ".data")]
    return sum(f.stat().st_size for f in files) / 2**20


def status(field: str) -> float:
    """A /proc/self/status memory field in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


# ------------------------------------------------------------------------------------------
# The child: one engine, one model, one process


def feeds_for(inputs, dims: dict[str, int]):
    """Seeded feeds for (name, dtype, shape) triples; symbolic dims from ``dims`` or 1."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for name, dtype, shape in inputs:
        shape = [d if isinstance(d, int) and d > 0 else dims.get(str(d), 1) for d in shape]
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:  # token ids and masks
            feeds[name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


DIMS = {"batch_size": 1, "sequence_length": 128, "batch": 1, "sequence": 128, "height": 320,
        "width": 320}


def child(engine: str, model: str, onnx_dims: dict[str, list]) -> dict:
    import numpy as np  # noqa: F401 - imported before the baseline like the engines

    if engine in ("onnxruntime", "kiln-onnxruntime"):
        import onnxruntime as ort
    if engine in ("openvino", "kiln-openvino"):
        import openvino as ov
    if engine.startswith("kiln"):
        import kiln
        from kiln.backends import registry

        registry.get_backend(engine.removeprefix("kiln-")).is_available()
        import kiln.backends.native  # noqa: F401 - the extension module, when native

        if not model.endswith(".kiln"):  # a compile needs the pass pipeline (a load does not)
            import kiln.compiler.pipeline  # noqa: F401
    base_rss = status("VmRSS")
    started, cpu_started = time.perf_counter(), time.process_time()
    if engine == "onnxruntime":
        options = ort.SessionOptions()
        options.log_severity_level = 3
        sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = [(i.name, _ort_dtype(i.type), i.shape) for i in sess.get_inputs()]
        feeds = feeds_for(inputs, DIMS)
        run = lambda: sess.run(None, feeds)  # noqa: E731
    elif engine == "openvino":
        core = ov.Core()
        compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        inputs = [(p.get_any_name(), p.get_element_type().to_dtype(),
                   onnx_dims[p.get_any_name()]) for p in compiled.inputs]
        feeds = feeds_for(inputs, DIMS)
        run = lambda: request.infer(feeds)  # noqa: E731
    else:
        sess = kiln.Session(model, backend=engine.removeprefix("kiln-"))
        inputs = [(s.name, s.dtype, list(s.shape or ())) for s in sess.inputs]
        feeds = feeds_for(inputs, DIMS)
        run = lambda: sess.run(None, feeds)  # noqa: E731
    run()
    first = time.perf_counter() - started
    # CPU seconds of every thread of the process: steadier than the wall clock on a shared
    # machine (other processes' load stretches the wall time, not this process's CPU time)
    first_cpu = time.process_time() - cpu_started
    for _ in range(RUNS - 1):
        run()
    result = {"peak_mb": status("VmHWM") - base_rss, "first_inference_s": first,
              "first_inference_cpu_s": first_cpu, "baseline_rss_mb": base_rss}
    if engine.startswith("kiln"):  # which source tree was measured
        result["kiln_from"] = str(Path(kiln.__file__).resolve().parent.parent)
    return result


@functools.cache
def input_dims(model: Path) -> dict[str, list]:
    """Each graph input's ONNX dims, named where dynamic (OpenVINO keeps no names). Read in
    the parent, so the child measuring OpenVINO never holds the parsed model; parsed once per
    model, not once per child."""
    import onnx

    graph = onnx.load(model, load_external_data=False).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in graph.input}


def _ort_dtype(type_name: str) -> str:
    return {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
            "tensor(bool)": "bool", "tensor(float16)": "float16"}[type_name]


# ------------------------------------------------------------------------------------------
# Step by step: RSS and time after each step of kiln.compile / load, in a fresh process

#: (module, attribute) of each step traced, in the order they run
STEPS = (
    ("kiln.runtime.artifact", "load_artifact"),
    ("kiln.runtime.compile", "artifact_graph"),
    ("kiln.compiler.frontend", "parse_bytes"),
    ("kiln.compiler.validate", "validate_proto"),
    ("kiln.compiler.reference", "max_opset"),
    ("kiln.backends.onnx_export", "StoredGraph.model"),  # kiln's IR of a loaded graph
    ("kiln.runtime.compile", "import_validated"),
    ("kiln.runtime.guards", "check_model"),
    ("kiln.compiler.pipeline", "optimize"),  # imported by compile at its call
    ("kiln.runtime.compile", "offload_weights"),
    ("kiln.backends.onnxruntime", "to_onnx_file"),
    ("kiln.backends.onnxruntime", "to_onnx_bytes"),
    ("kiln.backends.onnxruntime", "_session"),
    ("kiln.backends.openvino", "to_onnx_file"),
    ("kiln.backends.openvino", "to_onnx_bytes"),
    ("openvino", "Core.read_model"),
    ("openvino", "Core.compile_model"),
    ("openvino", "Core.import_model"),
    ("kiln.runtime.artifact", "restore"),
    ("kiln.runtime.compile", "release_maps"),
)


def trace_steps(engine: str, model: str) -> list[dict]:
    """Open ``model`` on kiln ``engine`` with each of ``STEPS`` wrapped to record the time it
    took, the RSS after it and the peak it reached (above the RSS after imports)."""
    import importlib

    import numpy as np  # noqa: F401

    import kiln
    from kiln.backends import registry

    backend = engine.removeprefix("kiln-")
    registry.get_backend(backend).is_available()
    if backend == "openvino":
        import openvino  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    base = status("VmRSS")
    log: list[dict] = []

    def wrap(owner, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        @functools.wraps(inner)
        def traced(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                log.append({"step": label, "s": time.perf_counter() - started,
                            "rss_mb": status("VmRSS") - base,
                            "peak_mb": status("VmHWM") - base})
        setattr(owner, attr, traced)

    for module_name, attr in STEPS:
        if module_name == "openvino" and backend != "openvino":
            continue
        owner = importlib.import_module(module_name)
        name = attr
        if "." in attr:
            cls, name = attr.split(".")
            owner = getattr(owner, cls)
        if hasattr(owner, name):
            wrap(owner, name, f"{module_name.rsplit('.', 1)[-1]}.{attr}")
    started = time.perf_counter()
    sess = kiln.Session(model, backend=backend)
    opened = time.perf_counter()
    log.append({"step": "Session open (total)", "s": opened - started,
                "rss_mb": status("VmRSS") - base, "peak_mb": status("VmHWM") - base})
    inputs = [(s.name, s.dtype, list(s.shape or ())) for s in sess.inputs]
    feeds = feeds_for(inputs, DIMS)
    sess.run(None, feeds)
    log.append({"step": "first run", "s": time.perf_counter() - opened,
                "rss_mb": status("VmRSS") - base, "peak_mb": status("VmHWM") - base})
    return log


def steps_table(engine: str, model: str, log: list[dict]) -> str:
    lines = [f"{engine} on {model} (MB above the RSS after imports)",
             f"{'step':<36} {'s':>7} {'RSS MB':>8} {'peak MB':>8}"]
    lines += [f"{r['step']:<36} {r['s']:7.3f} {r['rss_mb']:8.0f} {r['peak_mb']:8.0f}"
              for r in log]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The parent: a fresh process per measurement


def in_child(engine: str, model: Path, python: str = sys.executable) -> dict:
    dims = json.dumps(input_dims(model)) if model.suffix == ".onnx" else "{}"
    out = subprocess.run([python, __file__, "--child", engine, str(model), dims],
                         capture_output=True, text=True, timeout=600, cwd=ROOT.parent)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def save_artifact(engine: str, model: Path, folder: Path, python: str = sys.executable
                  ) -> Path | None:
    """Compile in a child of its own and save the .kiln the warm start opens (None: failed)."""
    path = folder / f"{model.stem}.{engine.replace(' ', '_')}.kiln"
    code = ("import sys, kiln; kiln.compile(sys.argv[1], backend=sys.argv[2]).save(sys.argv[3])")
    done = subprocess.run([python, "-c", code, str(model), kiln_engine(engine),
                           str(path)], capture_output=True, timeout=600,
                          cwd=folder)  # not the source tree: "-c" puts the cwd on sys.path
    return path if done.returncode == 0 else None


#: how the engines run by ``--base-python`` are named: "kiln-native (base)"
BASE_SUFFIX = " (base)"


def kiln_engine(engine: str) -> str:
    """The backend name of a kiln engine ("kiln-native (base)" -> "native")."""
    return engine.removesuffix(BASE_SUFFIX).removeprefix("kiln-")


def measure(names: list[str], engines: list[str], repeat: int = 1,
            base_python: str | None = None) -> list[dict]:
    """Each (model, engine) ``repeat`` times, engines interleaved within each round; a row
    holds the median of each figure and every sample. With ``base_python`` (an interpreter
    importing another kiln tree), each kiln engine is also measured with it, in the same
    rounds, as "<engine> (base)"."""
    if base_python:
        engines = [e for engine in engines for e in (
            (engine, engine + BASE_SUFFIX) if engine.startswith("kiln") else (engine,))]
    python = {e: base_python if e.endswith(BASE_SUFFIX) else sys.executable for e in engines}
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-memory-") as tmp:
        for name in names:
            path = models().get(name) or Path(name)  # a name above, or an .onnx path
            if name == "big-mlp":
                from benchmarks.models import big_mlp

                big_mlp(path)
            weights = weights_mb(path)
            artifacts: dict[str, Path | None] = {}
            samples: dict[str, dict[str, list[dict]]] = {e: {"cold": [], "warm": []}
                                                         for e in engines}
            for _ in range(repeat):
                for engine in engines:
                    run = engine.removesuffix(BASE_SUFFIX)
                    samples[engine]["cold"].append(in_child(run, path, python[engine]))
                    if not engine.startswith("kiln"):
                        continue
                    if engine not in artifacts:
                        artifacts[engine] = save_artifact(engine, path, Path(tmp),
                                                          python[engine])
                    if artifacts[engine] is not None:
                        samples[engine]["warm"].append(in_child(run, artifacts[engine],
                                                                python[engine]))
            for engine in engines:
                row = {"model": name if name in models() else path.stem, "engine": engine,
                       "weights_mb": weights,
                       "cold": median_of(samples[engine]["cold"])}
                if not engine.startswith("kiln"):
                    row["warm"] = row["cold"]
                elif artifacts.get(engine) is None:
                    row["warm"] = {"error": "compiling the artifact failed"}
                else:
                    row["kiln_mb"] = artifacts[engine].stat().st_size / 2**20
                    row["warm"] = median_of(samples[engine]["warm"])
                row["samples"] = samples[engine]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "samples"}), flush=True)
    return rows


def median_of(runs: list[dict]) -> dict:
    """The median of each figure over the runs that succeeded (the first error otherwise)."""
    import statistics

    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0] if runs else {"error": "not run"}
    return {**ok[0], **{key: statistics.median(r[key] for r in ok)
                        for key in ("peak_mb", "first_inference_s", "first_inference_cpu_s")
                        if all(key in r for r in ok)}, "runs": len(ok)}


def table(rows: list[dict]) -> str:
    """Peaks and times to first inference, each with its ratio to the engine used directly
    (native: to onnxruntime; the engines' warm figures are their cold ones)."""
    direct = {(r["model"], r["engine"]): r for r in rows if not r["engine"].startswith("kiln")}
    lines = ["| model | engine | peak MB (cold) | x direct | peak MB (warm) | x direct | "
             "first run s (cold) | x direct | first run s (warm) | x direct | CPU s (cold) | "
             "CPU s (warm) | .kiln MB |",
             "|---|---|" + "---:|" * 11]
    for r in rows:
        engine = r["engine"].removesuffix(BASE_SUFFIX)
        ref = direct.get((r["model"], BASELINE.get(engine, engine)))
        cells = []
        for figure, fmt in (("peak_mb", ".0f"), ("first_inference_s", ".2f")):
            for key in ("cold", "warm"):
                m = r[key]
                if "error" in m:
                    cells += ["error", ""]
                    continue
                base = ref[key].get(figure) if ref and "error" not in ref[key] else None
                ratio = m[figure] / base if base else None
                cells += [f"{m[figure]:{fmt}}", f"{ratio:.2f}" if ratio else ""]
        cpu = [f"{r[k]['first_inference_cpu_s']:.2f}" if "first_inference_cpu_s" in r[k]
               else "" for k in ("cold", "warm")]
        kiln_mb = f"{r['kiln_mb']:.0f}" if "kiln_mb" in r else ""
        lines.append(f"| {r['model']} | {r['engine']} | " + " | ".join(cells + cpu) +
                     f" | {kiln_mb} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "MODEL", "DIMS_JSON"))
    parser.add_argument("--models", nargs="*", default=["resnet50", "minilm-l6", "yolov8n-320"],
                        help="names above or paths of .onnx files")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES))
    parser.add_argument("--out", default="memory")
    parser.add_argument("--repeat", type=int, default=1,
                        help="fresh processes per (model, engine), interleaved; medians shown")
    parser.add_argument("--base-python", metavar="PYTHON",
                        help="also measure each kiln engine with this interpreter (one that "
                             "imports another kiln tree), side by side in the same rounds")
    parser.add_argument("--steps", nargs=2, metavar=("ENGINE", "MODEL"),
                        help="trace one kiln engine step by step on a model named in --models "
                             "(or a .onnx/.kiln path); run in a fresh process")
    args = parser.parse_args()
    if args.steps:
        engine, model = args.steps
        named = models()
        path = str(named[model]) if model in named else model
        print(steps_table(engine, model, trace_steps(engine, path)))
        return
    if args.child:
        engine, model, dims = args.child
        print(json.dumps(child(engine, model, json.loads(dims))))
        return
    rows = measure(args.models, args.engines, args.repeat, args.base_python)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = ("Peak RSS above the RSS after imports (MB), open + 3 runs, each in a fresh process; "
          "ratios vs the engine used directly (native vs onnxruntime). Shared, noisy 2-core "
          f"machine; medians of {args.repeat} interleaved run(s).\n\n" + table(rows))
    (RESULTS / f"{args.out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
