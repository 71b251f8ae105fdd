"""The ``kiln`` command line. A user error prints one line and exits non-zero; ``--debug``
shows the traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kiln import __version__
from kiln.errors import InputError, KilnError

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
def run(model: str | None, backend: str, target: str, precision: str, threads: int | None,
        inputs: tuple[str, ...], seed: int, output_dir: str | None) -> None:
    """Run MODEL once (the bundled light ResNet-50 when omitted) and summarize its outputs."""
    from kiln.runtime.session import Session, random_feeds

    session = Session(_model_arg(model), backend=backend, target=target, precision=precision,
                      threads=threads)
    feeds = _load_inputs(inputs) if inputs else random_feeds(session.inputs, seed=seed)
    outputs = session(**feeds)
    table = Table(title=f"{Path(_model_arg(model)).name} on {session.backend}")
    for col in ("output", "dtype", "shape", "min", "max", "mean"):
        table.add_column(col)
    for name, value in outputs.items():
        numeric = value.size and value.dtype.kind in "fiub"
        stats = (f"{value.min():.6g}", f"{value.max():.6g}", f"{value.mean():.6g}") \
            if numeric else ("-", "-", "-")
        table.add_row(name, value.dtype.name, str(list(value.shape)), *stats)
    console.print(table)
    if output_dir:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in outputs.items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            np.save(folder / f"{safe}.npy", value, allow_pickle=False)
        console.print(f"saved {len(outputs)} output(s) to {folder}")


@cli.command()
@click.argument("model", required=False)
@click.option("--backends", "-b", default="all", show_default=True,
              help="Comma-separated backend names, or 'all'.")
@click.option("--precision", "-p", default="fp32", show_default=True,
              help="Comma-separated precisions.")
@click.option("--threads", type=int, default=None)
@click.option("--warmup", type=int, default=3, show_default=True)
@click.option("--iterations", "-n", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report as JSON here.")
def bench(model: str | None, backends: str, precision: str, threads: int | None, warmup: int,
          iterations: int, seed: int, json_out: str | None) -> None:
    """Benchmark MODEL (the bundled light ResNet-50 when omitted) on several backends."""
    from kiln.runtime.bench import BenchConfig, run_bench

    config = BenchConfig(backends=_resolve_backends(backends), precisions=_split(precision),
                         threads=threads, warmup=warmup, iterations=iterations, seed=seed)
    path = _model_arg(model)
    with console.status("benchmarking") as status:
        report = run_bench(path, config, progress=lambda msg: status.update(msg))
    _print_bench(report, Path(path).name)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")


def _print_bench(report: dict, title: str) -> None:
    rows = report["results"]
    ok = [r for r in rows if r["status"] == "ok"]
    best = min((r["latency_ms"]["p50"] for r in ok), default=None)
    table = Table(title=f"kiln bench: {title} (threads={report['config']['threads'] or 'all'})")
    for col in ("backend", "precision", "status", "p50 ms", "p90 ms", "p99 ms", "vs best",
                "max |diff| vs ort"):
        table.add_column(col, no_wrap=True)
    notes = []
    for r in rows:
        if r["status"] == "ok":
            lat = r["latency_ms"]
            mark = "[bold green]" if lat["p50"] == best else ""
            table.add_row(r["backend"], r["precision"], "ok", f"{mark}{lat['p50']:.3f}",
                          f"{lat['p90']:.3f}", f"{lat['p99']:.3f}", f"{lat['p50'] / best:.2f}x",
                          "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}")
        else:
            table.add_row(r["backend"], r["precision"], f"[red]{r['status']}[/]", "-", "-", "-",
                          "-", "-")
            notes.append(f"{r['backend']} ({r['precision']}): {r['status']}: {r['reason']}")
    console.print(table)
    for note in notes:
        console.print(escape(note), soft_wrap=True)


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
def compile_cmd(model: str, backend: str, target: str, precision: str, opt_level: int,
                output: str, as_json: bool) -> None:
    """Optimize MODEL for a backend and target and write a .kiln artifact."""
    from kiln.runtime.session import Session

    if not output.endswith(".kiln"):
        raise KilnError(f"--output must end in .kiln, got '{output}'")
    session = Session(model, backend=backend, target=target, precision=precision,
                      opt_level=opt_level)
    path = session.save(output)
    report = session.report
    if as_json:
        click.echo(json.dumps({"artifact": str(path), "backend": session.backend,
                               "target": str(session.target),
                               "compile_seconds": session.compile_seconds,
                               "report": report.to_json() if report else None}, indent=2))
        return
    if report is not None:
        _print_passes(report.to_json())
    console.print(f"wrote {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB) for "
                  f"{session.backend} on {escape(str(session.target))}")


def _parse_shapes(pairs: tuple[str, ...]) -> dict[str, list[int]]:
    shapes = {}
    for pair in pairs:
        name, sep, dims = pair.partition("=")
        try:
            shapes[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InputError(f"--shape expects NAME=D0,D1,..., got '{pair}'")
    return shapes


@cli.command("inspect")
@click.argument("model")
@click.option("--opt-level", "-O", "opt_level", type=click.IntRange(0, 3), default=None,
              help="Also compile at this level and show what each pass changed.")
@click.option("--backend", "-b", default=None,
              help="Compile for this backend's capabilities (default: plain ONNX).")
@click.option("--shape", "shapes", multiple=True,
              help="NAME=D0,D1,... pins an input's symbolic dims (for MACs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def inspect_cmd(model: str, opt_level: int | None, backend: str | None,
                shapes: tuple[str, ...], as_json: bool) -> None:
    """Inputs, outputs, op histogram, parameters and MACs of MODEL (and what passes did)."""
    from kiln.compiler.capabilities import STANDARD_ONNX
    from kiln.compiler.frontend import import_model
    from kiln.compiler.inspect import inspect_model

    caps = STANDARD_ONNX
    if backend is not None:
        from kiln.backends import registry

        caps = registry.get_backend(backend).caps()
    data = inspect_model(import_model(model), opt_level, None, caps,
                         input_shapes=_parse_shapes(shapes))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_summary(Path(model).name, data["model"])
    if "optimized" in data:
        _print_summary(f"{Path(model).name} at O{opt_level}", data["optimized"])
        _print_passes(data["report"])


def _print_summary(title: str, summary: dict) -> None:
    io = Table(title=title)
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for v in summary[kind]:
            io.add_row(kind[:-1], escape(v["name"]), v["dtype"], str(v["shape"]))
    console.print(io)
    macs = summary["macs"]
    uncounted = f" ({macs['uncounted_nodes']} nodes with unknown shapes not counted)" \
        if macs["uncounted_nodes"] else ""
    console.print(f"{summary['nodes']} nodes, {summary['parameters']:,} parameters "
                  f"({summary['parameter_bytes'] / 1e6:.1f} MB), "
                  f"{macs['total'] / 1e9:.3f} GMACs{uncounted}")
    console.print("ops: " + ", ".join(f"{op} {n}" for op, n in summary["ops"].items()),
                  soft_wrap=True, highlight=False)


def _print_passes(report: dict) -> None:
    table = Table(title=f"O{report['level']} for {report['backend']}: "
                        f"{report['nodes_before']} -> {report['nodes_after']} nodes "
                        f"in {report['seconds']:.2f} s")
    for col in ("pass", "ms", "nodes", "rules fired"):
        table.add_column(col)
    for p in report["passes"]:
        fired = ", ".join(f"{k} x{v}" for k, v in sorted(p["fired"].items()))
        table.add_row(p["name"], f"{p['seconds'] * 1e3:.1f}",
                      f"{p['nodes_before']} -> {p['nodes_after']}", escape(fired))
    console.print(table)


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
