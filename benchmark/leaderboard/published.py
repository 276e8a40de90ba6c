"""The paper's published results: the schema of `published/paper_results.yaml`, and its loading.

The file transcribes the paper's Tables 1-3 as printed (shipped like the registries, found in
the first registry root that has one): per table its caption, columns (`dataset/metric`), the
rows of the caption's significance markers, and groups of rows whose cells are the printed
numbers with their markers. Rows of the paper's own systems name the registry system (`ours`)
that `benchmark.leaderboard.board` measures for them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from benchmark.config import StrictModel, load_yaml, validate
from benchmark.errors import BenchmarkError
from benchmark.registry import registry_roots

TableName = Literal["sed", "ser", "ablation"]
PUBLISHED = Path("published") / "paper_results.yaml"
MISSING = "–"
# A printed cell: a number with its significance markers, "–" (no result) or "/" (no such output).
CELL = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<marks>[*‡∘]*)|[–/]")


class PublishedRow(StrictModel):
    """One row as printed; the fields are explained at the top of published/paper_results.yaml."""

    id: str
    system: str | None = None
    ref: str | None = None
    ours: str | None = None
    beta: float | None = None
    setup: list[str] = Field(default_factory=list)
    cells: list[str]


class PublishedGroup(StrictModel):
    title: str | None
    rows: list[PublishedRow]


class PublishedTable(StrictModel):
    number: int
    caption: str
    columns: list[str]
    markers: dict[str, str]
    groups: list[PublishedGroup]

    @model_validator(mode="after")
    def _check(self) -> PublishedTable:
        rows = [row for group in self.groups for row in group.rows]
        for row in rows:
            if len(row.cells) != len(self.columns):
                raise ValueError(f"row {row.id}: {len(row.cells)} cells for {len(self.columns)} columns")
            if bad := [cell for cell in row.cells if not CELL.fullmatch(cell)]:
                raise ValueError(f"row {row.id}: cells {bad} are not a number with markers, '–' or '/'")
        ours = {row.id for row in rows if row.ours}
        if unknown := sorted(set(self.markers.values()) - ours):
            raise ValueError(f"markers name rows {unknown}, which are not rows of the paper's own systems")
        return self

    def dataset_metrics(self) -> list[tuple[str, str]]:
        return [tuple(column.split("/", 1)) for column in self.columns]


class PublishedResults(StrictModel):
    paper: str
    tables: dict[TableName, PublishedTable]


def load_published() -> PublishedResults:
    """The published results file of the first registry root that has one (see `registry`)."""
    for root in registry_roots():
        if (root / PUBLISHED).is_file():
            return validate(PublishedResults, load_yaml(root / PUBLISHED), root / PUBLISHED)
    raise BenchmarkError(f"no {PUBLISHED} in the registry folders {[str(r) for r in registry_roots()]}")
