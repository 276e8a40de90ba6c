"""Terminal tables for the CLI (rich), kept apart so that the modules only return data."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

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
