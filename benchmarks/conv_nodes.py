"""Per-conv time on native, onnxruntime and OpenVINO, matched by conv shape and grouped by
shape class; a markdown table into benchmarks/results/.

    python benchmarks/conv_nodes.py --models resnet50,densenet121,squeezenet,inception_v1 \
        --threads 1 --out benchmarks/results/conv_nodes_s8

Each engine runs the light-zoo model as a user runs it (the peers on the raw ONNX file, as
benchmarks/native_vs_peers.py opens them, native through ``kiln.Session``) and times its nodes
with its own instrument: native's executor clock, onnxruntime's profiler, OpenVINO's
performance counters (``PERF_COUNT``). Engines take turns in ``--rounds`` rounds of ``--runs``
profiled calls; a node's figure is its median over every profiled call.

An engine's conv node is matched to the ONNX file's convs by shape (C_in, C_out, kernel,
stride, groups, H x W), read from that engine's own graph: native's plan (input and weight
shapes, strides), onnxruntime's profile events (input and output shapes), OpenVINO's runtime
model. Convs of one shape are summed, so a row compares like with like whatever each engine
fused into its convs or named them. Time outside the convs is reported per engine as "other"
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


def shape_of(x: list[int], w: list[int], y: list[int], stride: int | None = None,
             groups: int | None = None) -> ConvShape:
    """The conv shape from input, weight (OIHW, or GOIHW) and output dims; stride and groups
    derived from them when not given."""
    if len(w) == 5:  # grouped weights [G, K/G, C/G, kh, kw]
        groups, w = w[0], [w[0] * w[1], *w[2:]]
    if groups is None:
        groups = max(1, x[1] // w[1])
    if stride is None:
        stride = max(1, round(x[2] / y[2]))
    return ConvShape(x[1], w[0], w[2], w[3], stride, groups, x[2], x[3], y[2], y[3])


def onnx_convs(model: onnx.ModelProto) -> dict[str, ConvShape]:
    """Conv node name -> its shape, by ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    dims: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        dims[init.name] = list(init.dims)
    shapes: dict[str, ConvShape] = {}
    for node in inferred.graph.node:
        if node.op_type != "Conv":
            continue
        x, w, y = dims.get(node.input[0]), dims.get(node.input[1]), dims.get(node.output[0])
        if not x or not w or not y or 0 in x + w + y:
            raise SystemExit(f"no static shape for conv {node.name}: x {x} w {w} y {y}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        shapes[node.name] = shape_of(x, w, y, int(list(attrs.get("strides", [1]))[0]),
                                     int(attrs.get("group", 1)))
    return shapes


class Engine:
    """One engine's profiled session: ``profile(runs)`` appends {node name: [us...]};
    ``convs`` maps its conv nodes' names to their shapes."""

    def __init__(self, engine: str, path: Path, threads: int, feeds: dict[str, np.ndarray]):
        self.name, self.feeds = engine, feeds
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.ops: dict[str, str] = {}
        self.convs: dict[str, ConvShape] = {}
        self.calls = 0
        self.profiled: list[int] = []  # onnxruntime: indices of the profiled calls
        if engine == "native":
            from kiln.runtime.session import Session

            self.sess = Session(path, backend="native", threads=threads, fallback=None,
                                profile=True)
            compiled = self.sess._compiled
            known = dict(compiled.value_shapes)
            known.update({i.name: (tuple(i.shape), 4) for i in self.sess.inputs})
            for seg in compiled.segments:
                low = seg.lowered
                for node in low.nodes:
                    if node.op not in ("Conv", "FusedConv") or node.inputs[1] not in low.constants:
                        continue
                    x = known.get(low.value_names[node.inputs[0]])
                    y = known.get(low.value_names[node.outputs[0]])
                    w = list(low.constants[node.inputs[1]].shape)
                    if x and y and len(w) == 4:
                        xs, ys = list(x[0]), list(y[0])
                        # values handed over in NHWC (compiler/passes/nhwc_layout.py)
                        if node.attrs.get("kiln_layout_in") == "NHWC":
                            xs = [xs[0], xs[3], xs[1], xs[2]]
                        if node.attrs.get("kiln_layout_out") == "NHWC":
                            ys = [ys[0], ys[3], ys[1], ys[2]]
                        self.convs[node.name] = shape_of(
                            xs, w, ys, int(node.attrs.get("strides", [1])[0]),
                            int(node.attrs.get("group", 1)))
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
            for op in compiled.get_runtime_model().get_ordered_ops():
                rt = op.get_rt_info()
                kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
                if kind != "Convolution" or op.get_input_size() < 2:
                    continue
                dims = [op.input(i).get_partial_shape() for i in range(2)]
                out = op.output(0).get_partial_shape()
                if any(d.is_dynamic for d in [*dims, out]):
                    continue
                self.convs[op.get_friendly_name()] = shape_of(
                    list(dims[0].to_shape()), list(dims[1].to_shape()), list(out.to_shape()))

    def warm(self, n: int) -> None:
        for _ in range(n):
            self._run()

    def _run(self) -> None:
        self.calls += 1
        if self.name == "openvino":
            self.sess.infer(self.feeds)
        else:
            self.sess.run(None, self.feeds)

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
            if not any(lo <= e["ts"] <= hi for lo, hi in windows):
                continue
            name = e["name"].removesuffix("_kernel_time")
            args = e.get("args", {})
            self.samples[name].append(float(e["dur"]))
            self.ops[name] = args.get("op_name", "?")
            ins = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
            outs = [next(iter(d.values())) for d in args.get("output_type_shape", [])]
            if "Conv" in self.ops[name] and len(ins) >= 2 and outs and len(ins[0]) == 4:
                self.convs[name] = shape_of(ins[0], ins[1], outs[0])

    def figures(self, stat: str) -> dict[str, float]:
        """Per node: the median of its samples, or the fastest (``min``: steadier than the
        median when other processes share the cores, as long as every engine gets the same)."""
        pick = min if stat == "min" else statistics.median
        return {k: pick(v) for k, v in self.samples.items() if v}


def feeds_for(path: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
            .astype(np.float32) for i in sess.get_inputs()}


def profile_model(name: str, threads: int, rounds: int, runs: int, warmup: int,
                  engines: list[str], stat: str = "median") -> dict:
    path = Path(name) if name.endswith(".onnx") else light_model(name)  # a file, or a light model
    shapes = onnx_convs(onnx.load(str(path)))
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
        med = eng.figures(stat)
        per_shape: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        other: dict[str, float] = defaultdict(float)
        for node, us in med.items():
            shape = eng.convs.get(node)
            if shape is not None:
                per_shape[json.dumps(vars(shape))][0] += us
                per_shape[json.dumps(vars(shape))][1] += 1
            else:
                other[eng.ops.get(node, "?")] += us
        out["engines"][e] = {"conv": dict(per_shape), "other": dict(other),
                             "total_us": sum(med.values())}
    counts: dict[str, int] = defaultdict(int)
    for shape in shapes.values():
        counts[json.dumps(vars(shape))] += 1
    out["onnx_convs"] = dict(counts)
    return out


def fmt(us: float | None) -> str:
    return "-" if us is None else f"{us:.0f}"


def gflops(flops: float, us: float | None) -> str:
    return "-" if not us else f"{flops / us / 1e3:.0f}"


def report(results: list[dict], engines: list[str], threads: int, load: tuple,
           stat: str = "median") -> str:
    lines = [
        "# Conv time per shape: native vs onnxruntime vs OpenVINO (fp32, batch 1)",
        "",
        f"Generated by `python benchmarks/conv_nodes.py --threads {threads} --stat {stat}`; each "
        f"engine's own per-node instrument, {stat} per node, convs of one shape summed (n = convs "
        "of that "
        "shape in the ONNX file; an engine's count differs when it made convs of its own, e.g. "
        "a BatchNorm as a 1x1). GF/s = GFLOP/s of the conv's multiply-adds. ratio = native / "
        "better peer. A shared, noisy machine (2 cores); 1-minute load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after.",
        "",
    ]
    classes: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(lambda: [0.0, 0.0]))
    for res in results:
        keys = set(res["onnx_convs"])
        for e in engines:
            keys |= set(res["engines"][e]["conv"])
        lines += [f"## {res['model']} ({threads} thread{'s' if threads > 1 else ''})", "",
                  "| shape (C_in->C_out k s g @HxW) | class | n | "
                  + " | ".join(f"{e} us | {e} GF/s" for e in engines) + " | ratio |",
                  "|---|---|---:|" + "---:|---:|" * len(engines) + "---:|"]
        rows = []
        for key in keys:
            shape = ConvShape(**json.loads(key))
            n = res["onnx_convs"].get(key, 0)
            times: dict[str, float | None] = {}
            for e in engines:
                got = res["engines"][e]["conv"].get(key)
                times[e] = got[0] if got else None
                if got:
                    cell = classes[(res["model"], shape.shape_class())][e]
                    cell[0] += got[0]
                    cell[1] += shape.flops() * got[1]
            rows.append((times.get("native") or 0.0, shape, n, times))
        for _, shape, n, times in sorted(rows, key=lambda r: -r[0]):
            flops = shape.flops() * max(n, 1)
            peers = [times[e] for e in engines if e != "native" and times[e]]
            ratio = f"{times['native'] / min(peers):.2f}" if peers and times.get("native") \
                else "-"
            lines.append(f"| {shape.label()} | {shape.shape_class()} | {n} | "
                         + " | ".join(f"{fmt(times[e])} | {gflops(flops, times[e])}"
                                      for e in engines) + f" | {ratio} |")
        lines.append("")
        lines.append("| engine | conv total us | other us | total us | other, by op |")
        lines.append("|---|---:|---:|---:|---|")
        for e in engines:
            d = res["engines"][e]
            conv_us = sum(v[0] for v in d["conv"].values())
            top = sorted(d["other"].items(), key=lambda kv: -kv[1])[:6]
            lines.append(f"| {e} | {conv_us:.0f} | {sum(d['other'].values()):.0f} | "
                         f"{d['total_us']:.0f} | "
                         + ", ".join(f"{op} {us:.0f}" for op, us in top) + " |")
        lines.append("")
    lines += ["## By shape class", "",
              "| model | class | " + " | ".join(f"{e} us | {e} GF/s" for e in engines)
              + " | ratio |", "|---|---|" + "---:|---:|" * len(engines) + "---:|"]
    for (model, cls), t in sorted(classes.items()):
        us = {e: t[e][0] if e in t else None for e in engines}
        peers = [us[e] for e in engines if e != "native" and us[e]]
        ratio = f"{us['native'] / min(peers):.2f}" if peers and us.get("native") else "-"
        lines.append(f"| {model} | {cls} | "
                     + " | ".join(f"{fmt(us[e])} | "
                                  f"{gflops(t[e][1], us[e]) if e in t else '-'}"
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
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="per-node figure over the profiled calls")
    ap.add_argument("--out", default=str(RESULTS / "conv_nodes_s8"),
                    help="output stem (.md and .json are written)")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    load0 = os.getloadavg()[0]
    results = [profile_model(m.strip(), args.threads, args.rounds, args.runs, args.warmup,
                             engines, args.stat) for m in args.models.split(",") if m.strip()]
    load1 = os.getloadavg()[0]
    text = report(results, engines, args.threads, (load0, load1), args.stat)
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
