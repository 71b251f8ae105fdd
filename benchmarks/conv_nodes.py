"""Per-conv time on native, onnxruntime and OpenVINO, matched by conv shape and grouped by
shape class; a markdown table into benchmarks/results/.

    python benchmarks/conv_nodes.py --models resnet50,densenet121,squeezenet,inception_v1 \
        --threads 1 --out benchmarks/results/conv_nodes_s8

Each engine runs the light-zoo model as a user runs it (the peers on the raw ONNX file, as
benchmarks/native_vs_peers.py opens them, native through ``kiln.Session``) and times its nodes
with its own instrument: native's executor clock, onnxruntime's profiler, OpenVINO's
performance counters (``PERF_COUNT``). Engines take turns in ``--rounds`` rounds of ``--runs``
profiled calls; a node's figure is its median over every profiled call.

An engine's node is matched to a Conv of the ONNX file by name: native keeps the Conv's name;
onnxruntime names a fused conv after the last output of the fusion (the Relu's, say) plus a
suffix (``_nchwc``); OpenVINO after the Conv (``n7/WithoutBiases``). Convs of one shape
(C_in, C_out, kernel, stride, groups, H x W) are then summed, so a row compares like with like
whatever each engine fused. Time outside the matched convs is reported per engine as "other"
(pooling, concat, reorders between layouts, standalone BatchNorm/Relu...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kiln.zoo import light_model  # noqa: E402

ENGINES = ("native", "onnxruntime", "openvino")
RESULTS = Path(__file__).parent / "results"
#: ops a peer may fold into the conv before it: the fused node takes the name of the last
FOLLOWERS = {"Relu", "BatchNormalization", "Add", "Sum", "Clip", "LeakyRelu", "Sigmoid"}


@dataclass(frozen=True)
class ConvShape:
    cin: int
    cout: int
    kh: int
    kw: int
    stride: int
    groups: int
    h: int
    w: int
    oh: int
    ow: int

    def flops(self) -> float:
        return 2.0 * self.cout * (self.cin // self.groups) * self.kh * self.kw * self.oh * self.ow

    def label(self) -> str:
        g = f" g{self.groups}" if self.groups > 1 else ""
        s = f" s{self.stride}" if self.stride > 1 else ""
        return f"{self.cin}->{self.cout} {self.kh}x{self.kw}{s}{g} @{self.h}x{self.w}"

    def shape_class(self) -> str:
        if self.groups > 1:
            return "grouped"
        if self.kh == 1 and self.kw == 1:
            if self.stride > 1:
                return "1x1 stride 2"
            return "1x1 small-K (C_in<=128)" if self.cin <= 128 else "1x1 large-K (C_in>128)"
        if self.kh == 3 and self.kw == 3:
            if self.cin <= 4:
                return "3x3 stem (C_in<=4)"
            s = " s2" if self.stride > 1 else ""
            return f"3x3{s} out {self.oh}x{self.ow}"
        return f"{self.kh}x{self.kw}"


def conv_shapes(model: onnx.ModelProto) -> tuple[dict[str, ConvShape], dict[str, str]]:
    """Conv node name -> shape, and every name an engine may give that conv -> its name."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    dims: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        dims[init.name] = list(init.dims)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in inferred.graph.node:
        for i in node.input:
            consumers[i].append(node)
    shapes: dict[str, ConvShape] = {}
    aliases: dict[str, str] = {}
    for node in inferred.graph.node:
        if node.op_type != "Conv":
            continue
        x, w, y = dims.get(node.input[0]), dims.get(node.input[1]), dims.get(node.output[0])
        if not x or not w or not y or 0 in x + w + y:
            raise SystemExit(f"no static shape for conv {node.name}: x {x} w {w} y {y}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        groups = int(attrs.get("group", 1))
        stride = int(list(attrs.get("strides", [1]))[0])
        shapes[node.name] = ConvShape(x[1], w[0], w[2], w[3], stride, groups, x[2], x[3],
                                      y[2], y[3])
        aliases[node.name] = node.name
        out = node.output[0]
        aliases.setdefault(out, node.name)
        # The chain of followers a peer fuses: each output names the same conv.
        while len(consumers[out]) == 1 and consumers[out][0].op_type in FOLLOWERS:
            out = consumers[out][0].output[0]
            aliases.setdefault(out, node.name)
    return shapes, aliases


def conv_of(engine: str, name: str, aliases: dict[str, str]) -> str | None:
    """The ONNX conv an engine's node name stands for, or None."""
    if engine == "openvino":
        name = name.split("/")[0]
    elif engine == "onnxruntime":
        for suffix in ("_nchwc", "_token_0", "_output_0"):
            name = name.removesuffix(suffix)
    return aliases.get(name)


class Engine:
    """One engine's profiled session: ``profile(runs)`` appends {node name: [us...]}."""

    def __init__(self, engine: str, path: Path, threads: int, feeds: dict[str, np.ndarray]):
        self.name, self.feeds = engine, feeds
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.ops: dict[str, str] = {}
        self.calls = 0
        self.profiled: list[int] = []  # onnxruntime: indices of the profiled calls
        if engine == "native":
            from kiln.runtime.session import Session

            self.sess = Session(path, backend="native", threads=threads, fallback=None,
                                profile=True)
        elif engine == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.enable_profiling = True
            so.profile_file_prefix = f"/tmp/kiln_conv_nodes_{os.getpid()}"
            self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        else:
            import openvino as ov

            compiled = ov.Core().compile_model(str(path), "CPU", {
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": "YES"})
            self.compiled = compiled
            self.sess = compiled.create_infer_request()

    def warm(self, n: int) -> None:
        for _ in range(n):
            self._run()

    def _run(self) -> None:
        self.calls += 1
        if self.name == "native":
            self.sess.run(None, self.feeds)
        elif self.name == "onnxruntime":
            self.sess.run(None, self.feeds)
        else:
            self.sess.infer(self.feeds)

    def profile(self, runs: int) -> None:
        if self.name == "native":
            for nodes in self.sess.node_times(self.feeds, runs):
                for n in nodes:
                    self.samples[n.name].append(n.us)
                    self.ops[n.name] = n.op
        elif self.name == "onnxruntime":
            for _ in range(runs):
                self.profiled.append(self.calls)
                self._run()
        else:
            for _ in range(runs):
                self._run()
                for info in self.sess.get_profiling_info():
                    if "EXECUTED" in str(info.status):
                        self.samples[info.node_name].append(info.real_time.total_seconds() * 1e6)
                        self.ops[info.node_name] = info.node_type

    def finish(self) -> None:
        """onnxruntime: read the profile, keeping the profiled calls' windows only."""
        if self.name != "onnxruntime":
            return
        path = Path(self.sess.end_profiling())
        events = json.loads(path.read_text())
        path.unlink(missing_ok=True)
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run")
        if len(runs) != self.calls:
            raise SystemExit(f"onnxruntime profile holds {len(runs)} runs, expected {self.calls}")
        windows = [runs[i] for i in self.profiled]
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            if any(lo <= e["ts"] <= hi for lo, hi in windows):
                name = e["name"].removesuffix("_kernel_time")
                self.samples[name].append(float(e["dur"]))
                self.ops[name] = e.get("args", {}).get("op_name", "?")

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.samples.items() if v}


def feeds_for(path: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
            .astype(np.float32) for i in sess.get_inputs()}


def profile_model(name: str, threads: int, rounds: int, runs: int, warmup: int,
                  engines: list[str]) -> dict:
    path = light_model(name)
    shapes, aliases = conv_shapes(onnx.load(str(path)))
    feeds = feeds_for(path)
    opened = {e: Engine(e, path, threads, feeds) for e in engines}
    for eng in opened.values():
        eng.warm(warmup)
    for r in range(rounds):
        order = engines[r % len(engines):] + engines[:r % len(engines)]
        for e in order:
            opened[e].warm(2)  # after the other engines' turn, as native_vs_peers does
            opened[e].profile(runs)
    out: dict = {"model": name, "threads": threads, "engines": {}}
    for e, eng in opened.items():
        eng.finish()
        med = eng.medians()
        per_conv: dict[str, float] = defaultdict(float)
        other: dict[str, float] = defaultdict(float)
        for node, us in med.items():
            conv = conv_of(e, node, aliases)
            if conv is not None:
                per_conv[conv] += us
            else:
                other[eng.ops.get(node, "?")] += us
        out["engines"][e] = {"conv": dict(per_conv), "other": dict(other),
                             "total_us": sum(med.values())}
    out["shapes"] = {k: vars(v) for k, v in shapes.items()}
    return out


def fmt(us: float | None) -> str:
    return "-" if us is None else f"{us:.0f}"


def gflops(flops: float, us: float | None) -> str:
    return "-" if not us else f"{flops / us / 1e3:.0f}"


def report(results: list[dict], engines: list[str], threads: int, load: tuple) -> str:
    lines = [
        "# Conv time per shape: native vs onnxruntime vs OpenVINO (fp32, batch 1)",
        "",
        f"Generated by `python benchmarks/conv_nodes.py --threads {threads}`; each engine's own "
        "per-node instrument, median per node, convs of one shape summed (n = how many). "
        "GF/s = GFLOP/s of the conv's multiply-adds. ratio = native / better peer. "
        "A shared, noisy machine (2 cores); 1-minute load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after.",
        "",
    ]
    class_rows: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for res in results:
        shapes = {k: ConvShape(**v) for k, v in res["shapes"].items()}
        groups: dict[ConvShape, list[str]] = defaultdict(list)
        for conv, shape in shapes.items():
            groups[shape].append(conv)
        lines += [f"## {res['model']} ({threads} thread{'s' if threads > 1 else ''})", "",
                  "| shape (C_in->C_out k s g @HxW) | class | n | "
                  + " | ".join(f"{e} us | {e} GF/s" for e in engines) + " | ratio |",
                  "|---|---|---:|" + "---:|---:|" * len(engines) + "---:|"]
        rows = []
        for shape, convs in groups.items():
            times = {}
            for e in engines:
                per = res["engines"][e]["conv"]
                got = [per[c] for c in convs if c in per]
                times[e] = sum(got) if got else None
            flops = shape.flops() * len(convs)
            rows.append((times.get("native") or 0.0, shape, convs, times, flops))
            for e in engines:
                if times[e] is not None:
                    class_rows[(res["model"], shape.shape_class())][e] += times[e]
            class_rows[(res["model"], shape.shape_class())]["flops"] += flops
        for _, shape, convs, times, flops in sorted(rows, key=lambda r: -r[0]):
            peers = [times[e] for e in engines if e != "native" and times[e]]
            ratio = f"{times['native'] / min(peers):.2f}" if peers and times.get("native") \
                else "-"
            lines.append(f"| {shape.label()} | {shape.shape_class()} | {len(convs)} | "
                         + " | ".join(f"{fmt(times[e])} | {gflops(flops, times[e])}"
                                      for e in engines) + f" | {ratio} |")
        lines.append("")
        lines.append("| engine | conv total us | other us | total us | other, by op |")
        lines.append("|---|---:|---:|---:|---|")
        for e in engines:
            d = res["engines"][e]
            top = sorted(d["other"].items(), key=lambda kv: -kv[1])[:6]
            lines.append(f"| {e} | {sum(d['conv'].values()):.0f} | "
                         f"{sum(d['other'].values()):.0f} | {d['total_us']:.0f} | "
                         + ", ".join(f"{op} {us:.0f}" for op, us in top) + " |")
        lines.append("")
    lines += ["## By shape class", "",
              "| model | class | " + " | ".join(f"{e} us | {e} GF/s" for e in engines)
              + " | ratio |", "|---|---|" + "---:|---:|" * len(engines) + "---:|"]
    for (model, cls), t in sorted(class_rows.items()):
        peers = [t[e] for e in engines if e != "native" and t.get(e)]
        ratio = f"{t['native'] / min(peers):.2f}" if peers and t.get("native") else "-"
        lines.append(f"| {model} | {cls} | "
                     + " | ".join(f"{fmt(t.get(e))} | {gflops(t['flops'], t.get(e))}"
                                  for e in engines) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,densenet121,squeezenet,inception_v1")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=8, help="profiled calls per engine per round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "conv_nodes_s8"),
                    help="output stem (.md and .json are written)")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    load0 = os.getloadavg()[0]
    results = [profile_model(m.strip(), args.threads, args.rounds, args.runs, args.warmup,
                             engines) for m in args.models.split(",") if m.strip()]
    load1 = os.getloadavg()[0]
    text = report(results, engines, args.threads, (load0, load1))
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
