"""Run kiln's benchmark suite and regenerate its results, in one command:

    python benchmarks/run_suite.py [--suite benchmarks/suite.toml] [--only squeezenet,resnet50]
                                   [--quick] [--out benchmarks/results] [--readme README.md]

For every model of the suite it runs ``kiln.runtime.bench.run_bench`` (every backend, every
scenario, interleaved) and writes ``<out>/<model>.json`` (docs/bench_schema.json) and
``<out>/<model>.md``; then ``<out>/summary.md`` (all models), ``<out>/suite.png`` (latency
distributions and throughput bars, one row per model), ``<out>/README_table.md`` and the
README's results table, which it rewrites between ``<!-- kiln-results:begin -->`` and
``<!-- kiln-results:end -->`` only.
A model whose file is missing is skipped with the command that prepares it; nothing is faked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- kiln-results:begin -->", "<!-- kiln-results:end -->"
CACHE = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln")) / "models"
QUICK = {"iterations": 6, "block": 3, "warmup": 1, "server_probe_seconds": 0.3,
         "server_max_probes": 3, "offline_samples": 8, "offline_rounds": 1}


def load_suite(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    data = tomllib.loads(path.read_text())
    return data.get("defaults", {}), data.get("model", [])


def resolve(source: str) -> Path:
    """A suite source string as a path (see suite.toml)."""
    if source.startswith("light:"):
        from kiln.zoo import light_model

        return light_model(source.removeprefix("light:"))
    if source.startswith("cache:"):
        return CACHE / source.removeprefix("cache:")
    path = Path(source)
    return path if path.is_absolute() else ROOT / path


def make_feeds(spec: Any, model: Path, dims: Mapping[str, int],
               seed: int) -> dict[str, np.ndarray] | None:
    """Feeds for a model entry's ``inputs`` (None = let run_bench make seeded random ones)."""
    if spec is None:
        return None
    from kiln.runtime.session import Session

    inputs = Session(model, backend="onnxruntime").inputs
    if spec == "tokens":
        rng = np.random.default_rng(seed)
        feeds = {}
        for s in inputs:
            shape = [d if isinstance(d, int) else dims.get(str(d), 1) for d in s.shape]
            if "mask" in s.name:
                feeds[s.name] = np.ones(shape, s.dtype)
            elif "type" in s.name:
                feeds[s.name] = np.zeros(shape, s.dtype)
            else:
                feeds[s.name] = rng.integers(100, 30000, size=shape).astype(s.dtype)
        return feeds
    with np.load(resolve(spec["file"]), allow_pickle=False) as data:
        rows = int(spec.get("rows", 1))
        return {name: np.ascontiguousarray(data[key][:rows])
                for name, key in spec["map"].items()}


def run_model(entry: Mapping[str, Any], defaults: Mapping[str, Any], quick: bool,
              out: Path) -> dict[str, Any] | str:
    """Bench one suite entry; returns its report, or why it was skipped."""
    from kiln.backends import registry
    from kiln.runtime.bench import BenchConfig, run_bench
    from kiln.runtime.bench_report import to_markdown

    knobs = {**defaults, **{k: v for k, v in entry.items()
                            if k not in ("name", "source", "prepare", "inputs")}}
    if quick:
        knobs.update(QUICK)
    path = resolve(entry["source"])
    if not path.exists():
        return f"{path} is missing; create it with: {entry.get('prepare', 'n/a')}"
    backends = knobs.pop("backends", "all")
    knobs["backends"] = registry.backend_names() if backends == "all" else \
        [b.strip() for b in backends.split(",")]
    config = BenchConfig(**knobs)
    feeds = make_feeds(entry.get("inputs"), path, config.dims, config.seed)

    def progress(phase: str, done: int, total: int) -> None:
        if done == total:
            print(f"  {entry['name']}: {phase} done", flush=True)

    report = run_bench(str(path), config, feeds=feeds, progress=progress)
    report["model"]["name"] = entry["name"]
    report["model"]["path"] = entry["source"]  # machine-independent in the committed JSON
    if feeds is not None:
        source = "tokens" if entry.get("inputs") == "tokens" else entry["inputs"]["file"]
        for item in report["inputs"]:
            item["source"] = source
    (out / f"{entry['name']}.json").write_text(json.dumps(report, indent=1))
    (out / f"{entry['name']}.md").write_text(to_markdown(report))
    return report


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(reports: list[dict[str, Any]], skipped: Mapping[str, str]) -> str:
    """The README's table: one line per (model, backend, precision)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    loads = [r["machine"]["load_average"][0] for r in reports if r["machine"]["load_average"]]
    machine = reports[0]["machine"] if reports else {}
    cfg = reports[0]["config"] if reports else {}
    lines = [
        f"Measured {when} on `{machine.get('target', '?')}` ({machine.get('cpu_count')} cores, "
        f"threads={cfg.get('threads')}, workers={cfg.get('workers')}; 1-min load average "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f} while it ran, the suite's own "
        "workers included). Engines were interleaved and medians/percentiles taken over the "
        "same rounds. Regenerate with `python benchmarks/run_suite.py`.",
        "",
        "| model | backend | status | single-stream p50 / p99 ms | multi-stream p99 ms "
        "| server max QPS (p99 <= bound) | offline samples/s | max abs diff vs ort fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for row in report["results"]:
            by_key.setdefault((row["backend"], row["precision"]), {})[row["scenario"]] = row
        for (backend, precision), rows in by_key.items():
            first = next(iter(rows.values()))
            label = backend if precision == "fp32" else f"{backend} {precision}"
            if first["status"] != "ok":
                reason = " ".join(first["reason"].split())
                reason = reason[:90] + ("..." if len(reason) > 90 else "")
                lines.append(f"| {report['model']['name']} | {label} | {first['status']}: "
                             f"{reason.replace('|', '/')} | - | - | - | - | - |")
                continue
            ss = rows.get("single-stream", {}).get("latency_ms") or {}
            ms = rows.get("multi-stream", {}).get("latency_ms") or {}
            server = rows.get("server", {})
            bound = server.get("detail", {}).get("latency_bound_ms")
            qps = server.get("throughput_qps")
            if qps is None:
                server_cell = "-"
            elif qps > 0:
                server_cell = f"{qps:.1f} (<= {bound:g} ms)"
            else:
                server_cell = f"none: p99 > {bound:g} ms at every rate tried"
            off = rows.get("offline", {}).get("throughput_qps")
            lines.append(
                f"| {report['model']['name']} | {label} | ok | {_cell(ss.get('p50'), '.2f')} / "
                f"{_cell(ss.get('p99'), '.2f')} | {_cell(ms.get('p99'), '.2f')} | {server_cell} "
                f"| {_cell(off, '.1f')} | {_cell(first.get('max_abs_diff'), '.1e')} |")
    for name, why in skipped.items():
        lines.append(f"| {name} | - | skipped: {why.replace('|', '/')} | - | - | - | - | - |")
    lines += ["", "![kiln suite: latency distributions and throughput per backend]"
              "(benchmarks/results/suite.png)", "",
              "Per-model tables (with compile time, peak RSS, cosine and top-1 agreement) are in "
              "`benchmarks/results/*.md`, the raw reports in `benchmarks/results/*.json`."]
    return "\n".join(lines)


def update_readme(readme: Path, table: str) -> bool:
    """Rewrite ``readme`` between the result markers only; False when they are missing."""
    text = readme.read_text()
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", type=Path, default=HERE / "suite.toml")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--no-readme", action="store_true", help="Leave the README alone.")
    ap.add_argument("--only", default="", help="Comma-separated model names.")
    ap.add_argument("--quick", action="store_true", help="Few iterations (a smoke run).")
    args = ap.parse_args(argv)

    from kiln.runtime.bench_report import plot, to_markdown

    defaults, models = load_suite(args.suite)
    only = {m.strip() for m in args.only.split(",") if m.strip()}
    unknown = only - {m["name"] for m in models}
    if unknown:
        print(f"unknown model(s) {sorted(unknown)} in --only", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    reports, skipped = [], {}
    for entry in models:
        if only and entry["name"] not in only:
            continue
        print(f"{entry['name']}: benchmarking", flush=True)
        result = run_model(entry, defaults, args.quick, args.out)
        if isinstance(result, str):
            print(f"{entry['name']}: skipped: {result}", flush=True)
            skipped[entry["name"]] = result
        else:
            reports.append(result)
    if not reports:
        print("nothing ran", file=sys.stderr)
        return 1
    summary = [to_markdown(r, title=r["model"]["name"]) for r in reports]
    summary += [f"- {name}: skipped: {why}" for name, why in skipped.items()]
    (args.out / "summary.md").write_text("# kiln benchmark suite\n\n" + "\n".join(summary))
    plot(reports, args.out / "suite.png")
    table = results_table(reports, skipped)
    (args.out / "README_table.md").write_text(table + "\n")
    print(f"wrote {args.out}/summary.md, {args.out}/suite.png and "
          f"{len(reports)} report(s)")
    if not args.no_readme:
        if update_readme(args.readme, table):
            print(f"updated the results table in {args.readme}")
        else:
            print(f"{args.readme} has no {BEGIN} ... {END} markers; table not written there",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
