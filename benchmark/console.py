"""Terminal tables for the CLI (rich), kept apart so that the modules only return data."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmark.config import SystemConfig
from benchmark.data.prepare import SplitSummary
from benchmark.track.environment import Check

# Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns, so tables
# with paths stay readable.
console = Console(width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def summary_table(title: str, labels: Sequence[str], rows: Sequence[SplitSummary]) -> Table:
    """Utterances, hours and per-label counts per split and group, with a total row."""
    extra = sorted({label for row in rows for label in row.labels} - set(labels))
    columns = [*labels, *extra]
    table = Table(title=title)
    for header in ("split", "group", "utterances", "hours", *columns):
        table.add_column(header, justify="left" if header in ("split", "group") else "right")
    for row in rows:
        table.add_row(
            row.split,
            row.group,
            str(row.utterances),
            f"{row.hours:.3f}",
            *(str(row.labels[c]) for c in columns),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        str(sum(r.utterances for r in rows)),
        f"{sum(r.hours for r in rows):.3f}",
        *(str(sum(r.labels[c] for r in rows)) for c in columns),
    )
    return table


def checks_table(checks: Sequence[Check]) -> Table:
    marks = {True: "[green]ok[/]", False: "[red]missing[/]", None: "[dim]-[/]"}
    table = Table(title="benchmark doctor")
    for header in ("section", "item", "status", "detail"):
        table.add_column(header)
    section = None
    for check in checks:
        if section is not None and check.section != section:
            table.add_section()
        table.add_row(
            check.section if check.section != section else "", check.name, marks[check.ok], check.detail
        )
        section = check.section
    return table


def systems_table(systems: Mapping[str, SystemConfig], files: Mapping[str, Path]) -> Table:
    """One row per system, in the order given: its paper rows, what it predicts and how it trains.

    Targets read T(ranscript) D(escriptor) E(motion), '-' where absent; stages are the task
    mixtures of each stage, separated by '|'; beta is shown only where an IB bottleneck exists.
    """
    table = Table(title="systems (models/)")
    for header in ("name", "T1", "T2", "T3", "kind", "targets", "branches", "schedule", "stages", "beta"):
        table.add_column(header, no_wrap=True)
    table.add_column("yaml")
    for name, config in systems.items():
        targets = "".join(
            letter if target in config.targets else "-"
            for letter, target in zip("TDE", ("transcript", "descriptor", "emotion"), strict=True)
        )
        if config.kind == "ssl":
            branches = "ssl"
        elif config.disentangle:
            branches = "content+descriptor"
        else:
            branches = "single"
        has_bottleneck = config.kind == "llm" and config.disentangle
        table.add_row(
            name,
            config.paper.table1 or "",
            config.paper.table2 or "",
            config.paper.table3 or "",
            config.kind,
            targets,
            branches,
            config.schedule,
            " | ".join("+".join(stage.tasks) for stage in config.stages) or "-",
            f"{config.beta:g}" if has_bottleneck else "-",
            str(files[name]),
        )
    return table


def metrics_table(title: str, columns: Mapping[str, Mapping[str, float | str]]) -> Table:
    """One row per metric, one column per fold or run; numbers are formatted by `_metric`
    (SER, ASR and SED scores as percentages), strings are shown as they are."""
    names = sorted({name for scores in columns.values() for name in scores})
    table = Table(title=title)
    table.add_column("metric")
    for column in columns:
        table.add_column(column, justify="right")
    for name in names:
        cells = [scores.get(name, "-") for scores in columns.values()]
        table.add_row(name, *(cell if isinstance(cell, str) else _metric(name, cell) for cell in cells))
    return table


def results_table(summary) -> Table:
    """Metrics per fold, plus their mean ± standard deviation when there are several folds."""
    columns: dict[str, Mapping[str, float | str]] = dict(summary.fold_metrics)
    if len(columns) > 1:
        columns["mean ± std"] = {
            n: f"{_metric(n, summary.mean[n])} ± {_metric(n, summary.std[n])}" for n in summary.mean
        }
    return metrics_table(f"{summary.system.name} (beta {summary.system.beta:g})", columns)


def _metric(name: str, value: float) -> str:
    """Fractions as percentages (the paper's tables); counts such as `asr.skipped` as they are."""
    return f"{value:g}" if name.endswith("skipped") else f"{100 * value:.1f}"
