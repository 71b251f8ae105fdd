"""Render a bench report (the dict ``run_bench`` returns, or its JSON) as markdown or a plot.

The markdown is one table per scenario: the fastest ok row in bold, every ok row's speed as a
ratio to the baseline row (``config.baseline``, onnxruntime fp32 by default), and drift against
the reference. The plot (matplotlib, Agg) shows latency distributions per engine for the
latency scenarios and throughput bars for server and offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kiln.runtime.bench import baseline_row, score


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def scenario_rows(report: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows grouped by scenario, in the order the scenarios ran."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in report["results"]:
        grouped.setdefault(row["scenario"], []).append(row)
    return grouped


def ranking(report: Mapping[str, Any], scenario: str
            ) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(fastest ok row, baseline row) of ``scenario``."""
    rows = [r for r in report["results"] if r["scenario"] == scenario and score(r)]
    best = max(rows, key=score, default=None)
    return best, baseline_row(report, scenario)


def speedup(row: Mapping[str, Any], base: Mapping[str, Any] | None) -> float | None:
    """How many times faster than the baseline (>1 = faster)."""
    mine, theirs = score(row), (score(base) if base else None)
    return mine / theirs if mine and theirs else None


def to_markdown(report: Mapping[str, Any], title: str | None = None) -> str:
    model = report["model"].get("name") or "model"
    lines = [f"## {title or 'kiln bench: ' + model}", ""]
    machine = report.get("machine", {})
    load = machine.get("load_average")
    cfg = report["config"]
    lines.append(f"kiln {report['kiln_version']}, target `{machine.get('target')}`, "
                 f"{machine.get('cpu_count')} CPUs, threads={cfg.get('threads') or 'all'}, "
                 f"workers={cfg.get('workers')}, load average "
                 f"{', '.join(f'{x:.2f}' for x in load) if load else 'n/a'} "
                 f"({report['created']}). Baseline: {cfg.get('baseline')}; drift against "
                 f"{report['reference']['backend']} {report['reference']['precision']}.")
    lines.append("")
    for scenario, rows in scenario_rows(report).items():
        best, base = ranking(report, scenario)
        lines.append(f"### {scenario}")
        lines.append("")
        if scenario in ("server", "offline"):
            head = ["backend", "precision", "status", "QPS", "p50 ms", "p99 ms"]
        else:
            head = ["backend", "precision", "status", "p50 ms", "p90 ms", "p99 ms", "QPS"]
        head += ["vs baseline", "compile s", "open peak MB", "max abs diff", "cosine", "top-1"]
        startup = bool(cfg.get("startup"))
        if startup:  # fresh processes per engine (kiln.runtime.bench_startup)
            head += ["1st run cold s", "1st run warm s", "peak MB cold", "peak MB warm"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for row in rows:
            lat = row.get("latency_ms") or {}
            qps = _fmt(row.get("throughput_qps"), ".1f")
            if scenario in ("server", "offline"):
                cells = [qps, _fmt(lat.get("p50")), _fmt(lat.get("p99"))]
            else:
                cells = [_fmt(lat.get("p50")), _fmt(lat.get("p90")), _fmt(lat.get("p99")), qps]
            if row is best:
                cells[0] = f"**{cells[0]}**"
            ratio = speedup(row, base)
            cells += [_fmt(ratio, ".2f") + ("x" if ratio else ""), _fmt(row.get("compile_s")),
                      _fmt(row.get("peak_rss_mb"), ".0f"), _fmt(row.get("max_abs_diff"), ".2e"),
                      _fmt(row.get("cosine"), ".6f"), _fmt(row.get("top1_agreement"), ".2f")]
            if startup:
                cells += [_fmt(row.get("first_run_cold_s"), ".2f"),
                          _fmt(row.get("first_run_warm_s"), ".2f"),
                          _fmt(row.get("peak_cold_mb"), ".0f"),
                          _fmt(row.get("peak_warm_mb"), ".0f")]
            lines.append("| " + " | ".join([row["backend"], row["precision"], row["status"]]
                                            + cells) + " |")
        detail = [r for r in rows if r["status"] == "ok" and scenario == "server"]
        for row in detail:
            d = row["detail"]
            lines.append("")
            lines.append(f"- {row['backend']}/{row['precision']}: max {d['max_qps']:.1f} QPS "
                         f"with p99 {_fmt(d.get('p99_at_max_ms'), '.2f')} ms within the "
                         f"{d['latency_bound_ms']:g} ms bound ({len(d['probes'])} probes)"
                         + (f"; {row['reason']}" if row["reason"] else ""))
        notes = [r for r in rows if r["status"] != "ok"]
        if notes:
            lines.append("")
            for row in notes:
                reason = " ".join(str(row["reason"]).split())
                if len(reason) > 300:
                    reason = reason[:297] + "..."
                lines.append(f"- {row['backend']}/{row['precision']} {row['status']}: "
                             f"{reason}")
        lines.append("")
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def plot(reports: Sequence[Mapping[str, Any]] | Mapping[str, Any], path: str | Path) -> Path:
    """Latency distributions (box plots) per engine for the latency scenarios, and throughput
    bars for server/offline; one row of panels per report. Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [reports] if isinstance(reports, Mapping) else list(reports)
    panels = []
    for report in reports:
        grouped = scenario_rows(report)
        panels.append([(report, s, rows) for s, rows in grouped.items()])
    cols = max(len(p) for p in panels) if panels else 1
    fig, axes = plt.subplots(len(panels), cols, figsize=(4.6 * cols, 3.4 * len(panels)),
                             squeeze=False)
    for r, row_panels in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(row_panels):
                ax.axis("off")
                continue
            report, scenario, rows = row_panels[c]
            ok = [x for x in rows if x["status"] == "ok"]
            labels = [f"{x['backend']}\n{x['precision']}" for x in ok]
            name = report["model"].get("name") or "model"
            ax.set_title(f"{name}: {scenario}", fontsize=9)
            if not ok:
                ax.text(0.5, 0.5, "no ok rows", ha="center", va="center")
                continue
            if scenario in ("server", "offline"):
                values = [x.get("throughput_qps") or 0.0 for x in ok]
                bars = ax.bar(labels, values, color="tab:blue")
                ax.bar_label(bars, labels=[f"{v:.1f}" if v else "bound\nnot met"
                                           for v in values], fontsize=7)
                if scenario == "server":
                    bound = ok[0].get("detail", {}).get("latency_bound_ms")
                    ax.set_title(f"{name}: server (p99 <= {bound:g} ms)", fontsize=9)
                    ax.set_ylabel("max QPS within the bound")
                else:
                    ax.set_ylabel("samples / s")
                ax.set_ylim(0, max(values + [1.0]) * 1.15)
            else:
                data = [x.get("latencies_ms") or [0.0] for x in ok]
                ax.boxplot(data, showfliers=True)
                ax.set_xticks(range(1, len(labels) + 1), labels)
                ax.set_ylabel("latency per query (ms)")
            ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
