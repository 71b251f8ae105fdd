"""The ``kiln`` command line. A user error prints one line and exits non-zero; ``--debug``
shows the traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kiln import __version__
from kiln.errors import InputError, KilnError
from kiln.reduce_options import compile_reduced, reduce_options

console = Console()
err_console = Console(stderr=True)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _resolve_backends(text: str) -> list[str]:
    from kiln.backends import registry

    if text in ("all", ""):
        return registry.backend_names()
    names = _split(text)
    for name in names:
        registry.get_backend(name)  # raises a KilnError naming the known backends
    return names


def _model_arg(model: str | None) -> str:
    from kiln.zoo import light_model

    return str(light_model()) if model is None else model


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kiln")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """kiln: compile ONNX models for your hardware, run them, and compare backends."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def targets(as_json: bool) -> None:
    """Show the detected hardware and every backend's status."""
    from kiln.backends import registry
    from kiln.compiler.target import Target

    target = Target.detect()
    rows = []
    for name in registry.backend_names():
        status = registry.availability(name)
        rows.append({"backend": name, "available": status.ok, "version": status.version,
                     "reason": status.reason})
    if as_json:
        click.echo(json.dumps({"target": target.describe(), "backends": rows}, indent=2))
        return
    hw = Table(title="Detected hardware", show_header=False)
    for key, value in target.describe().items():
        hw.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(hw)
    table = Table(title="Backends")
    for col in ("backend", "status", "version", "detail"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["backend"], "[green]available[/]" if row["available"]
                      else "[red]unavailable[/]", escape(row["version"] or "-"),
                      escape(row["reason"]))
    console.print(table)


def _load_inputs(pairs: tuple[str, ...]) -> dict[str, np.ndarray]:
    feeds = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input expects NAME=FILE.npy, got '{pair}'")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"--input {name}: cannot read '{path}' as .npy: {exc}") from exc
    return feeds


@cli.command()
@click.argument("model", required=False)
@click.option("--backend", "-b", default="auto", show_default=True)
@click.option("--target", "-t", default="auto", show_default=True)
@click.option("--precision", "-p", default="fp32", show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--input", "-i", "inputs", multiple=True, help="NAME=FILE.npy (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for random inputs when none are given.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="Save each output as NAME.npy here.")
@click.option("--dim", "dims", multiple=True,
              help="NAME=SIZE for a symbolic input dim of random inputs (repeatable; an "
                   "unnamed dim is INPUT:AXIS).")
def run(model: str | None, backend: str, target: str, precision: str, threads: int | None,
        inputs: tuple[str, ...], seed: int, output_dir: str | None,
        dims: tuple[str, ...]) -> None:
    """Run MODEL once (the bundled light ResNet-50 when omitted) and summarize its outputs."""
    from kiln.runtime.input_dims import resolve_input_dims
    from kiln.runtime.session import Session, random_feeds

    session = Session(_model_arg(model), backend=backend, target=target, precision=precision,
                      threads=threads)
    sized = None
    if inputs:
        feeds = _load_inputs(inputs)
        source = "given"
    else:
        sized = resolve_input_dims(session.inputs, session.model, _parse_dims(dims))
        feeds = random_feeds(sized.specs(session.inputs), seed=seed)
        source = f"random, seed {seed}"
        for note in sized.notes:
            console.print(escape(note), highlight=False)
    try:
        outputs = session(**feeds)
    except KilnError as exc:
        if sized is None or not sized.sizes:
            raise
        raise InputError(sized.explain(str(exc))) from exc
    console.print(escape(f"{Path(_model_arg(model)).name} on {session.backend}"),
                  style="bold", highlight=False)
    for name, value in feeds.items():
        console.print(escape(f"input {name}: {_typed(value)} ({source})"), highlight=False)
    rows = []
    for name, value in outputs.items():
        numeric = value.size and value.dtype.kind in "fiub"
        stats = [f"{value.min():.4g}", f"{value.mean():.4g}", f"{value.max():.4g}"] \
            if numeric else ["-", "-", "-"]
        rows.append([name, _typed(value), *stats])
    _print_named_rows(["output", "type", "min", "mean", "max"], rows)
    if output_dir:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in outputs.items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            np.save(folder / f"{safe}.npy", value, allow_pickle=False)
        console.print(f"saved {len(outputs)} output(s) to {folder}")


def _print_named_rows(headers: list[str], rows: list[list[str]], title: str = "",
                      left: int = 2) -> None:
    """Rows whose first cell is a name (plain text; other cells may hold markup): a table
    when every name fits the terminal on one line, else each name on its own line with its
    cells below it, so a long name is never cut or folded mid-word. The first ``left``
    columns are text, the rest numbers (right-aligned)."""
    others = [max(len(Text.from_markup(r[i]).plain) for r in [headers, *rows])
              for i in range(1, len(headers))]
    longest = max((len(r[0]) for r in rows), default=0)
    if title:
        console.print(title, highlight=False)
    if max(longest, len(headers[0])) + sum(others) + 2 * len(headers) <= console.width:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i < left else "right", no_wrap=True)
        for row in rows:
            table.add_row(escape(row[0]), *row[1:])
        console.print(table)
        return
    for row in rows:
        console.print(escape(row[0]), style="bold", highlight=False)
        console.print("    " + "   ".join(f"{h} {v}".strip()
                                          for h, v in zip(headers[1:], row[1:])),
                      highlight=False)


def _typed(value: np.ndarray) -> str:
    """``float32[1, 1000]``: dtype and shape in one cell."""
    return f"{value.dtype.name}[{', '.join(map(str, value.shape))}]"


def _parse_dims(pairs: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for pair in pairs:
        name, sep, size = pair.partition("=")
        if not sep or not name or not size.isdigit() or int(size) < 1:
            raise InputError(f"--dim expects NAME=SIZE (or INPUT:AXIS=SIZE) with SIZE >= 1, "
                             f"got '{pair}'")
        dims[name] = int(size)
    return dims


def _parse_scenarios(text: str) -> list[str]:
    from kiln.runtime.scenarios import SCENARIOS

    return list(SCENARIOS) if text.strip() == "all" else _split(text)


@cli.command()
@click.argument("model", required=False)
@click.option("--backends", "-b", default="all", show_default=True,
              help="Comma-separated backend names, or 'all'.")
@click.option("--precision", "-p", default="fp32", show_default=True,
              help="Comma-separated precisions (fp32, fp16, bf16, int8).")
@click.option("--scenario", "-s", default="single-stream", show_default=True,
              help="single-stream, multi-stream, server, offline (comma-separated) or 'all'.")
@click.option("--threads", type=int, default=None, help="Intra-op threads per engine.")
@click.option("--workers", type=int, default=None,
              help="Concurrent requests for multi-stream/server/offline [default: CPU count].")
@click.option("--warmup", type=int, default=3, show_default=True)
@click.option("--iterations", "-n", type=int, default=20, show_default=True,
              help="Timed queries per engine (single/multi-stream).")
@click.option("--block", type=int, default=5, show_default=True,
              help="Timed queries per engine per interleaved round.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False), default=None,
              help="Feeds from a .npz (keyed by input name) or a .npy (one-input models).")
@click.option("--dim", "dims", multiple=True,
              help="NAME=SIZE for a symbolic input dim of random inputs (repeatable).")
@click.option("--samples-per-query", type=int, default=8, show_default=True,
              help="multi-stream: samples per query.")
@click.option("--latency-bound", type=float, default=15.0, show_default=True,
              help="server: p99 latency bound in ms.")
@click.option("--probe-seconds", type=float, default=1.0, show_default=True,
              help="server: length of each fixed-rate probe.")
@click.option("--max-probes", type=int, default=8, show_default=True,
              help="server: probes per engine in the QPS search.")
@click.option("--offline-samples", type=int, default=64, show_default=True,
              help="offline: samples per round (3 interleaved rounds).")
@click.option("--batch", "offline_batch", type=int, default=8, show_default=True,
              help="offline: batch size when the batch dim is symbolic.")
@click.option("--baseline", default="onnxruntime/fp32", show_default=True,
              help="BACKEND[/PRECISION] the ratios are relative to.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report as JSON (docs/bench_schema.json) here.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report as markdown here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="Write latency/throughput plots (PNG) here.")
@click.option("--profile", "profile", is_flag=True,
              help="Also profile per node on each backend that can (top ops + chrome trace).")
@click.option("--profile-out", type=click.Path(dir_okay=False), default="kiln_profile.json",
              show_default=True, help="Chrome-trace JSON written by --profile.")
@click.option("--top", type=int, default=10, show_default=True,
              help="--profile: ops shown per backend.")
@click.option("--wide", is_flag=True,
              help="Every column (p90, QPS, compile s, cosine, top-1) in the table.")
@click.option("--startup", is_flag=True,
              help="Also open each engine in fresh processes, cold (compiling the model) and "
                   "warm (its saved .kiln): time to first inference and peak RSS, no engine "
                   "inheriting another's.")
@click.option("--url", default=None,
              help="Load a running kiln serve (loopback) instead of compiling MODEL.")
@click.option("--model", "served_model", default=None, help="With --url: the served model.")
@click.option("--qps", type=float, default=None,
              help="With --url: one Poisson run at this rate instead of the max-QPS search.")
def bench(model: str | None, backends: str, precision: str, scenario: str,
          threads: int | None, workers: int | None, warmup: int, iterations: int, block: int,
          seed: int, inputs_path: str | None, dims: tuple[str, ...], samples_per_query: int,
          latency_bound: float,
          probe_seconds: float, max_probes: int, offline_samples: int, offline_batch: int,
          baseline: str, json_out: str | None, md_out: str | None, plot_out: str | None,
          profile: bool, profile_out: str, top: int, wide: bool, startup: bool,
          url: str | None, served_model: str | None, qps: float | None) -> None:
    """Benchmark MODEL (a .onnx or .kiln; the bundled light ResNet-50 when omitted) on several
    backends and precisions, in MLPerf-style scenarios, with drift against onnxruntime fp32."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from kiln.runtime.bench import BenchConfig, run_bench

    if url is not None:
        from kiln.runtime.serve.loadgen import bench_url

        report = bench_url(url, served_model or model, scenario, qps=qps, workers=workers,
                           iterations=iterations, latency_bound_ms=latency_bound,
                           seconds=probe_seconds, max_probes=max_probes, seed=seed)
        _print_bench(report, f"{report['model']['name']} @ {url}", wide)
        _write_reports(report, json_out, md_out, plot_out)
        return
    if "/" not in baseline:
        baseline += "/fp32"
    config = BenchConfig(backends=_resolve_backends(backends), precisions=_split(precision),
                         scenarios=_parse_scenarios(scenario), threads=threads, warmup=warmup,
                         iterations=iterations, block=block, seed=seed, workers=workers,
                         multi_stream_samples=samples_per_query,
                         latency_bound_ms=latency_bound, server_probe_seconds=probe_seconds,
                         server_max_probes=max_probes, offline_samples=offline_samples,
                         offline_batch=offline_batch, baseline=baseline, dims=_parse_dims(dims),
                         startup=startup)
    config.check()
    path = _model_arg(model)
    with Progress(TextColumn("{task.description:<14}"), BarColumn(), TaskProgressColumn(),
                  console=err_console, transient=False) as bars:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=max(total, 1))
            bars.update(tasks[phase], completed=done, total=max(total, 1))

        report = run_bench(path, config, progress=progress, inputs_path=inputs_path)
    _print_bench(report, Path(path).name, wide)
    if profile:
        from kiln.runtime.profile import profile_backends

        pairs = list(dict.fromkeys((r["backend"], r["precision"]) for r in report["results"]))
        prof = profile_backends(path, pairs, threads=threads, seed=seed, dims=config.dims,
                                inputs_path=inputs_path, trace_out=profile_out,
                                feeds=_bench_feeds(report, seed, inputs_path))
        report["profile"] = prof
        _print_profile(prof, top)
        console.print(f"wrote chrome trace {profile_out} (open in chrome://tracing or Perfetto)")
    _write_reports(report, json_out, md_out, plot_out)


def _bench_feeds(report: dict, seed: int, inputs_path: str | None) -> dict | None:
    """The random feeds the bench ran on, made again from the shapes it reports (symbolic
    dims already sized), so a profile runs on the same inputs."""
    from kiln.backends.base import TensorSpec
    from kiln.runtime.session import random_feeds

    if inputs_path or not report["inputs"]:
        return None
    specs = [TensorSpec(i["name"], np.dtype(i["dtype"]), tuple(i["shape"]))
             for i in report["inputs"]]
    return random_feeds(specs, seed=seed)


def _write_reports(report: dict, json_out: str | None, md_out: str | None,
                   plot_out: str | None) -> None:
    from kiln.runtime.bench_report import plot, to_markdown

    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=1))
        console.print(f"wrote {json_out}")
    if md_out:
        Path(md_out).write_text(to_markdown(report))
        console.print(f"wrote {md_out}")
    if plot_out:
        plot(report, plot_out)
        console.print(f"wrote {plot_out}")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


#: Columns of the bench table: (header, scenarios it belongs to, shown without --wide).
#: The default set fits a 100-column terminal; --json and --markdown hold everything.
_BENCH_COLUMNS = (
    ("QPS", "throughput", True), ("p50 ms", "all", True), ("p90 ms", "latency", False),
    ("p99 ms", "all", True), ("QPS", "latency", False), ("vs base", "all", True),
    ("max|diff|", "all", True), ("RSS MB", "all", True), ("compile s", "all", False),
    ("cosine", "all", False), ("top-1", "all", False),
)
#: With --startup (fresh processes per engine) these replace "RSS MB" (and p99, which --wide
#: keeps), in every scenario:
#: time to first inference and peak RSS, cold (compiling the model) and warm (its .kiln).
_STARTUP_COLUMNS = ("cold s", "warm s", "cold MB", "warm MB")


def _bench_cells(r: dict, throughput_first: bool, best: bool, ratio: float | None
                 ) -> dict[str, str]:
    lat = r["latency_ms"] or {}
    f = _fmt
    cells = {"QPS": f(r["throughput_qps"], ".1f"), "p50 ms": f(lat.get("p50")),
             "p90 ms": f(lat.get("p90")), "p99 ms": f(lat.get("p99")),
             "vs base": f"{ratio:.2f}x" if ratio else "-", "compile s": f(r["compile_s"], ".2f"),
             "RSS MB": f(r["peak_rss_mb"], ".0f"), "max|diff|": f(r["max_abs_diff"], ".1e"),
             "cosine": f(r["cosine"], ".5f"), "top-1": f(r["top1_agreement"], ".2f"),
             "cold s": f(r.get("first_run_cold_s"), ".2f"),
             "warm s": f(r.get("first_run_warm_s"), ".2f"),
             "cold MB": f(r.get("peak_cold_mb"), ".0f"),
             "warm MB": f(r.get("peak_warm_mb"), ".0f")}
    if best:
        lead = "QPS" if throughput_first else "p50 ms"
        cells[lead] = f"[bold green]{cells[lead]} *[/]"
    return cells


def _print_bench(report: dict, title: str, wide: bool = False) -> None:
    from kiln.runtime.bench_report import ranking, scenario_rows, speedup

    cfg = report["config"]
    notes = []
    for scenario, rows in scenario_rows(report).items():
        best, base = ranking(report, scenario)
        throughput_first = scenario in ("server", "offline")
        kind = "throughput" if throughput_first else "latency"
        cols = [name for name, where, default in _BENCH_COLUMNS
                if where in ("all", kind) and (wide or default)]
        if cfg.get("startup"):  # fresh-process figures instead of the in-process open peak
            cols = [c for c in cols if wide or c not in ("RSS MB", "p99 ms")]
            cols += list(_STARTUP_COLUMNS)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, title_justify="left",
                      title=escape(f"{title} [{scenario}] threads={cfg['threads'] or 'all'}"))
        table.add_column("backend", no_wrap=True)
        table.add_column("prec", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for col in cols:
            table.add_column(col, no_wrap=True, justify="right")
        for r in rows:
            if r["status"] != "ok":
                table.add_row(r["backend"], r["precision"], f"[red]{r['status']}[/]",
                              *["-"] * len(cols))
                notes.append(f"{r['backend']}/{r['precision']} [{scenario}]: {r['status']}: "
                             f"{r['reason']}")
                continue
            cells = _bench_cells(r, throughput_first, r is best, speedup(r, base))
            table.add_row(r["backend"], r["precision"], "ok", *[cells[c] for c in cols])
            if r["reason"]:
                notes.append(f"{r['backend']}/{r['precision']} [{scenario}]: {r['reason']}")
        if wide:  # as wide as it needs: the terminal wraps rather than rich cutting cells
            need = console.measure(table, options=console.options.update_width(1000)).maximum
            Console(width=max(console.width, need)).print(table)
        else:
            console.print(table)
    console.print(escape(f"* fastest; 'vs base' = speed relative to {cfg['baseline']} (>1 is "
                         f"faster); max|diff| against {report['reference']['backend']} "
                         f"{report['reference']['precision']}"
                         + ("" if wide else "; more columns with --wide, all in --json")
                         + ("\ncold s / warm s = time to first inference (open + one run), "
                            "cold MB / warm MB = peak RSS above the RSS after imports; each "
                            "engine in fresh processes: cold compiles the model, warm opens the "
                            ".kiln it saved"
                            if cfg.get("startup") else "")),
                  highlight=False)
    seen = set()
    for note in notes + list(report.get("notes", [])):
        key = note.split("]: ", 1)[-1]
        if key in seen:
            continue
        seen.add(key)
        if len(note) > 400:
            note = note[:400] + " ... (the full message is in --json)"
        console.print(escape(note), highlight=False)


def _print_profile(prof: dict, top: int) -> None:
    for entry in prof["backends"]:
        name = f"{entry['backend']}/{entry['precision']}"
        if entry["status"] != "ok":
            reason = entry["reason"] if len(entry["reason"]) <= 400 else \
                entry["reason"][:400] + " ..."
            console.print(escape(f"profile {name}: {entry['status']}: {reason}"))
            continue
        table = Table(title=escape(f"profile {name}: top {top} of {len(entry['nodes'])} "
                                   f"nodes ({entry['runs']} runs, {entry['source']})"),
                      box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
        table.add_column("node", overflow="fold")
        table.add_column("op", overflow="fold")
        for col in ("mean us", "share"):
            table.add_column(col, no_wrap=True, justify="right")
        total = sum(n["mean_us"] for n in entry["nodes"]) or 1.0
        for node in entry["nodes"][:top]:
            table.add_row(escape(node["name"]), escape(node["op"]),
                          f"{node['mean_us']:.1f}", f"{100 * node['mean_us'] / total:.1f}%")
        console.print(table)


@cli.command()
@click.argument("model", required=False)
@click.option("--backends", "-b", default=None,
              help="Two backends A,B (one backend when --against is given compares the two "
                   "models on it) [default: onnxruntime,openvino; for a .kiln MODEL, "
                   "onnxruntime against the artifact's own backend]")
@click.option("--against", "against", type=click.Path(dir_okay=False), default=None,
              help="Run this second model on side B instead of MODEL (e.g. an edited copy).")
@click.option("--precision", "-p", default="fp32", show_default=True,
              help="Precision of both sides, or A,B (a .kiln runs at its own).")
@click.option("--rtol", type=float, default=1e-3, show_default=True)
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False), default=None,
              help="Feeds from a .npz (keyed by input name) or a .npy (one-input models).")
@click.option("--dim", "dims", multiple=True,
              help="NAME=SIZE for a symbolic input dim of random inputs (repeatable; an "
                   "unnamed dim is INPUT:AXIS).")
@click.option("--no-bisect", is_flag=True, help="Do not look for the first divergent node.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def compare(model: str | None, backends: str | None, against: str | None, precision: str,
            rtol: float, atol: float, threads: int | None, seed: int, inputs_path: str | None,
            dims: tuple[str, ...], no_bisect: bool, json_out: str | None) -> None:
    """Compare MODEL's outputs on two backends (or MODEL against --against MODEL2) on the same
    inputs; on a mismatch, name the first node whose output diverges. Exits 1 on a mismatch.

    A .kiln MODEL is compared by default with its own stored graph as standard ONNX on
    onnxruntime (kiln-domain ops written back), so an artifact of any backend has a
    reference."""
    from kiln.runtime.bench import _finite, is_artifact, load_inputs
    from kiln.runtime.compare import Side, first_divergence_summary
    from kiln.runtime.compare import compare as run_compare

    path = _model_arg(model)
    if backends is None:
        backends = "onnxruntime,auto" if is_artifact(path) and against is None \
            else "onnxruntime,openvino"
    names = [n if n == "auto" else _resolve_backends(n)[0] for n in _split(backends)] \
        if backends != "all" else []
    if not 1 <= len(names) <= 2:
        raise KilnError("--backends takes one or two backend names, e.g. onnxruntime,openvino")
    if len(names) == 1 and against is None:
        raise KilnError("comparing one backend with itself needs --against MODEL2")
    names = names * 2 if len(names) == 1 else names
    precs = _split(precision)
    precs = precs * 2 if len(precs) == 1 else precs
    side_a = Side(path, names[0], precs[0])
    side_b = Side(against or path, names[1], precs[1])
    feeds = None
    if inputs_path:
        from kiln.runtime.session import Session

        feeds = load_inputs(inputs_path, Session(path, backend=names[0]).inputs)
    with console.status("comparing"):
        result = run_compare(side_a, side_b, feeds, rtol=rtol, atol=atol, seed=seed,
                             threads=threads, bisect=not no_bisect, dims=_parse_dims(dims))
    for note in result.notes:
        console.print(escape(note), highlight=False)
    console.print(escape(f"A = {result.a.describe()}"), highlight=False)
    console.print(escape(f"B = {result.b.describe()}"), highlight=False)
    _print_named_rows(["output", "match", "max abs", "max rel", "beyond tol"],
                      [[name, "[green]yes[/]" if c.ok else "[red]no[/]", f"{c.max_abs:.3g}",
                        f"{c.max_rel:.3g}", f"{c.mismatched}/{c.total}"]
                       for name, c in result.outputs.items()],
                      title=f"|B - A| <= atol + rtol * |A| (rtol={rtol:g}, atol={atol:g})")
    bis = result.bisect
    if bis is not None:
        console.print(escape(f"bisect: compared {bis.nodes_compared} node outputs "
                             f"({bis.nodes_unmatched} unmatched); "
                             + first_divergence_summary(result)))
        if bis.first is not None:
            console.print(escape(f"isolation: {bis.isolation_note}"))
            tail = [d for d in bis.diverged[1:6]]
            if tail:
                console.print("then: " + escape(", ".join(f"{d.node} ({d.op_type})"
                                                           for d in tail)) + (" ..." if len(
                                  bis.diverged) > 6 else ""))
        for init in bis.differing_initializers[:10]:
            console.print(escape(f"initializer '{init['name']}' differs between the models "
                                 f"(max abs {init['max_abs']})"))
    if json_out:
        Path(json_out).write_text(json.dumps(_finite(result.to_json()), indent=1))
        console.print(f"wrote {json_out}")
    if not result.ok:
        bad = [n for n, c in result.outputs.items() if not c.ok]
        raise KilnError(f"{result.a.describe()} and {result.b.describe()} differ beyond "
                        f"tolerance on {len(bad)} output(s) {bad}"
                        + (f"; {first_divergence_summary(result)}" if bis else ""))
    console.print("[green]all outputs match[/]")


@cli.command("inspect")
@click.argument("model", required=False)
@click.option("--backends", "-b", default="native,openvino,tensorrt", show_default=True,
              help="Comma-separated backend names in priority order, or 'all'.")
@click.option("--fallback", default="onnxruntime", show_default=True,
              help="Backend that takes what the list refuses; 'none' for strict mode.")
@click.option("--dim", "dims", multiple=True, help="NAME=SIZE for a symbolic dim (repeatable).")
@click.option("--min-partition-nodes", type=int, default=3, show_default=True)
@click.option("--opt-level", "-O", type=int, default=2, show_default=True,
              help="Optimize first, as a Session would (-1: place the imported graph as is).")
@click.option("--target", "-t", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the placement report as JSON.")
def inspect_cmd(model: str | None, backends: str, fallback: str, dims: tuple[str, ...],
                min_partition_nodes: int, opt_level: int, target: str, as_json: bool) -> None:
    """What MODEL is (inputs/outputs, ops, parameters, MACs), what each pass changed, and
    which backend runs which node and what the split costs."""
    from kiln.compiler.frontend import import_model
    from kiln.compiler.target import Target
    from kiln.runtime.placement import placement_report

    if model is not None and model.endswith(".kiln"):
        _inspect_artifact(model, as_json)
        return
    imported = import_model(_model_arg(model))
    names = _resolve_backends(backends)
    sizes = _parse_dims(dims)
    parsed_target = Target.parse(target)
    summary = _graph_summary(imported, names, sizes, opt_level, parsed_target)
    report = placement_report(imported, names,
                              None if fallback.lower() == "none" else fallback,
                              sizes, min_partition_nodes,
                              None if opt_level < 0 else opt_level, parsed_target)
    report["summary"] = summary
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    title = Path(_model_arg(model)).name
    _print_summary(title, summary["imported"])
    if "optimized" in summary:
        _print_summary(f"{title} at O{opt_level}", summary["optimized"])
        _print_passes(summary["compile"])
    _print_placement(report)


def _inspect_artifact(path: str, as_json: bool) -> None:
    """A .kiln artifact: what it was compiled for, what its backend chose (the native plan's
    ISA and kernels) and whether it loads here as built."""
    from kiln.runtime.inspect_artifact import describe_artifact

    info = describe_artifact(path)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    for key in ("artifact", "backend", "backend_version", "target", "level", "precision"):
        console.print(escape(f"{key:<20}{info[key]}"), highlight=False)
    for key, value in info["details"].items():
        console.print(escape(f"{key:<20}{value}"), highlight=False)
    console.print(escape(f"{'format':<20}{info['format']}"), highlight=False)
    for name, size in info["members"].items():
        console.print(escape(f"{'  ' + name:<40}{size / 2**20:>10.1f} MB"), highlight=False)
    here = "as built" if info["loads_here_as_built"] else f"rebuilt: {info['rebuild_reason']}"
    console.print(escape(f"{'loads here':<20}{here}"), highlight=False)


def _graph_summary(model, backends: list[str], sizes: dict[str, int], opt_level: int,
                   target) -> dict:
    """``kiln.compiler.inspect`` data for the model as imported and as optimized for the
    backend list (symbolic input dims bound from --dim so MACs can be counted)."""
    from kiln.compiler.inspect import inspect_model
    from kiln.runtime.placement import joint_caps

    shapes = {}
    for value in model.graph.inputs:
        if value.shape is None:
            continue
        dims = [d if isinstance(d, int) else sizes.get(str(d.value)) for d in value.shape]
        if all(isinstance(d, int) for d in dims) and dims != list(value.shape):
            shapes[value.name] = dims
    data = inspect_model(model, None if opt_level < 0 else opt_level, target,
                         joint_caps(backends), input_shapes=shapes)
    out = {"imported": data["model"]}
    if "optimized" in data:
        out["optimized"] = data["optimized"]
        out["compile"] = data["report"]
    return out


def _print_placement(report: dict) -> None:
    model = report["model"]
    table = Table(title=escape(f"placement of {Path(str(model['name'])).name} "
                               f"({model['node_count']} nodes)"),
                  box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    table.add_column("backend", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("runs", "partitions", "boundaries", "bytes/inference"):
        table.add_column(col, no_wrap=True, justify="right")
    for name, entry in report["backends"].items():
        plan = entry["plan"]
        size = plan["boundary_bytes_per_inference"]
        table.add_row(name, "available" if entry["available"] else "[red]unavailable[/]",
                      f"{entry['runs']}/{entry['of']}", str(plan["partition_count"]),
                      str(plan["boundary_tensor_count"]), "?" if size is None else f"{size:,}")
    console.print(table)
    for name, entry in report["backends"].items():
        if not entry["available"]:
            console.print(escape(f"{name} is unavailable: {entry['reason']}"), highlight=False)
        for op, info in entry["refused_by_op"].items():
            console.print(escape(f"{name} refuses {op} x{info['count']} ({info['kind']}): "
                                 f"{info['reason']}"), highlight=False)
    plan = report["plan"]
    console.print(escape(f"plan {' > '.join(plan['backends'])}: {plan['partition_count']} "
                         f"partition(s), {plan['boundary_tensor_count']} boundary tensor(s), "
                         f"{plan['boundary_bytes_per_inference']} bytes per inference, "
                         f"{len(plan['unplaced'])} unplaced node(s)"),
                  highlight=False)


@cli.command("compile")
@click.argument("model")
@click.option("--backend", "-b", default="auto", show_default=True)
@click.option("--target", "-t", default="auto", show_default=True,
              help="'auto', or e.g. cpu:avx2,fma to compile for another machine.")
@click.option("--precision", "-p", default="fp32", show_default=True)
@click.option("--opt-level", "-O", "opt_level", type=click.IntRange(0, 3), default=2,
              show_default=True)
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False), required=True,
              help="Where to write the .kiln artifact.")
@click.option("--json", "as_json", is_flag=True, help="Print the compile report as JSON.")
@click.option("--dim", "dims", multiple=True,
              help="NAME=SIZE binds a symbolic input dim in the artifact (repeatable; an "
                   "unnamed dim is INPUT:AXIS): the graph is compiled for that size only.")
@reduce_options
def compile_cmd(model: str, backend: str, target: str, precision: str, opt_level: int,
                output: str, as_json: bool, dims: tuple[str, ...], **reduce: object) -> None:
    """Optimize MODEL for a backend and target and write a .kiln artifact.

    int8 / fp16 / bf16 and --prune go through kiln's own quantization, precision and
    pruning passes, with an accuracy report against the fp32 model."""
    from kiln.runtime.session import Session

    if not output.endswith(".kiln"):
        raise KilnError(f"--output must end in .kiln, got '{output}'")
    compiled, reduced = compile_reduced(model, backend, target, precision, reduce,
                                        opt_level=opt_level, dims=_parse_dims(dims))
    session = Session(compiled)
    path = session.save(output)
    report = session.report
    if as_json:
        click.echo(json.dumps({"artifact": str(path), "backend": session.backend,
                               "target": str(session.target),
                               "compile_seconds": session.compile_seconds,
                               "report": report.to_json() if report else None,
                               "reduction": reduced.to_json() if reduced else None},
                              indent=2, default=float))
        return
    if reduced is not None:
        for line in reduced.lines():
            console.print(escape(line), soft_wrap=True, highlight=False)
    if report is not None:
        _print_passes(report.to_json())
    console.print(f"wrote {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB) for "
                  f"{session.backend} on {escape(str(session.target))}")


def _print_summary(title: str, summary: dict) -> None:
    _print_named_rows(["name", "", "dtype", "shape"],
                      [[v["name"], kind[:-1], v["dtype"], escape(str(v["shape"]))]
                       for kind in ("inputs", "outputs") for v in summary[kind]],
                      title=escape(title), left=4)
    macs = summary["macs"]
    uncounted = f" ({macs['uncounted_nodes']} nodes with unknown shapes not counted)" \
        if macs["uncounted_nodes"] else ""
    console.print(f"{summary['nodes']} nodes, {summary['parameters']:,} parameters "
                  f"({summary['parameter_bytes'] / 1e6:.1f} MB), "
                  f"{macs['total'] / 1e9:.3f} GMACs{uncounted}")
    console.print("ops: " + escape(", ".join(f"{op} {n}" for op, n in summary["ops"].items())),
                  highlight=False)


def _print_passes(report: dict) -> None:
    table = Table(title=f"O{report['level']} for {report['backend']}: "
                        f"{report['nodes_before']} -> {report['nodes_after']} nodes "
                        f"in {report['seconds']:.2f} s")
    table.box, table.show_edge, table.title_justify = box.SIMPLE_HEAD, False, "left"
    table.add_column("pass", no_wrap=True)
    table.add_column("ms", no_wrap=True, justify="right")
    table.add_column("nodes", no_wrap=True, justify="right")
    table.add_column("rules fired; ops changed; rejected (why)", overflow="fold")
    for p in report["passes"]:
        fired = ", ".join(f"{k} x{v}" for k, v in sorted(p["fired"].items()))
        delta = ", ".join(f"{op} {n:+d}" for op, n in p.get("ops_delta", {}).items())
        rejected = ", ".join(f"{k} x{v}" for k, v in sorted(p.get("rejected", {}).items()))
        table.add_row(p["name"], f"{p['seconds'] * 1e3:.1f}",
                      f"{p['nodes_before']}>{p['nodes_after']}",
                      escape("; ".join(part for part in (fired, delta, rejected and
                                                          f"rejected: {rejected}") if part)))
    console.print(table)


@cli.command()
@click.argument("repository", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--backend", "-b", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="Intra-op threads per instance.")
@click.option("--instances", type=int, default=1, show_default=True,
              help="Sessions (run in parallel) per model version.")
@click.option("--max-batch", type=int, default=8, show_default=True)
@click.option("--max-queue-delay-ms", type=float, default=2.0, show_default=True)
@click.option("--max-queue", type=int, default=64, show_default=True,
              help="Queued requests per model version before answering 503.")
@click.option("--timeout-ms", type=float, default=None,
              help="Queue deadline of a request: 503 when it passes, and at once when the "
                   "estimated queue wait already exceeds it.")
@click.option("--ray", "use_ray", is_flag=True, help="Serve on Ray Serve replicas.")
@click.option("--replicas", type=int, default=1, show_default=True, help="With --ray.")
@click.option("--autoscale", default=None, help="MIN,MAX replicas (with --ray).")
@click.option("--ray-address", default=None, help="An existing Ray cluster (with --ray).")
def serve(repository: str, host: str, port: int, backend: str, threads: int | None,
          instances: int, max_batch: int, max_queue_delay_ms: float, max_queue: int,
          timeout_ms: float | None, use_ray: bool, replicas: int, autoscale: str | None,
          ray_address: str | None) -> None:
    """Serve REPOSITORY (REPO/NAME/VERSION/model.onnx|model.kiln) over HTTP with the KServe
    v2 protocol, dynamic batching and Prometheus /metrics; SIGTERM drains and exits."""
    from kiln.runtime.serve.config import ServeConfig

    config = ServeConfig(repository=repository, backend=backend, threads=threads,
                         instances=instances, max_batch=max_batch,
                         max_queue_delay_ms=max_queue_delay_ms, max_queue=max_queue,
                         timeout_ms=timeout_ms)
    config.check()

    def ready(bound_host: str, bound_port: int) -> None:
        err_console.print(f"kiln serve: listening on http://{bound_host}:{bound_port}")

    if use_ray:
        from kiln.runtime.serve.ray_runner import serve_on_ray

        serve_on_ray(config, host, port, replicas=replicas, autoscale=autoscale,
                     address=ray_address, on_ready=ready)
    else:
        from kiln.runtime.serve.server import serve as serve_embedded

        serve_embedded(config, host, port, on_ready=ready)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="kiln", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KilnError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True,
                          highlight=False)
        return 1
    except Exception as exc:
        if debug:
            raise
        err_console.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
                          "(rerun with --debug for the traceback)", soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
