"""What makes two runs comparable: the `protocol` and `setup` tags every run carries.

A table or a paired test is only meaningful between runs that saw the same data the same way, so
every run of `run` and `evaluate` is tagged with:

- `setup`: a digest of the corpus setup, the same for every row of one table: the dataset, the
  corpora trained with it (`train_with`), whether a validation set was held out, the backbone and
  the folds (for a zero-shot evaluation: the source run's setup and fold instead of folds).
- `protocol`: a digest of the setup plus everything else that changes the numbers: the resolved
  system config (β, overrides and epochs included) and the training engine. Two runs with the
  same protocol are repetitions of one experiment.
- the setup's fields one by one (`dataset`, `train_with`, `validation`, `backbone`, `folds`), so
  a refusal can name the fields in which two runs differ and the MLflow UI can filter on them;
- `recipe`: `registry` when the system config is the registry's (with `--beta`, the way the
  paper's Table 3 rows are run), `custom` after `--epochs` or `--set`, so a quick run never takes
  the place of the real run of a table cell unless asked for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from benchmark.config import SystemConfig

SETUP_FIELDS = ("dataset", "train_with", "validation", "backbone", "folds", "source_setup")
Recipe = Literal["registry", "custom"]


def digest(value: Any) -> str:
    """A stable 16-hex digest of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunProtocol:
    """The protocol of one `run` (or, with `source_setup`, of one zero-shot evaluation)."""

    dataset: str
    train_with: tuple[str, ...]
    validation: bool
    backbone: str
    folds: tuple[str, ...]
    engine: str
    recipe: Recipe
    source_setup: str = ""

    def setup_fields(self) -> dict[str, str]:
        """The setup's fields as tag values."""
        return {
            "dataset": self.dataset,
            "train_with": ",".join(sorted(self.train_with)) or "none",
            "validation": "on" if self.validation else "off",
            "backbone": self.backbone,
            "folds": ",".join(self.folds),
            "source_setup": self.source_setup,
        }

    def tags(self, system: SystemConfig) -> dict[str, str]:
        fields = self.setup_fields()
        setup = digest(fields)
        protocol = digest([setup, system.model_dump(mode="json"), self.engine])
        tags = {**fields, "setup": setup, "protocol": protocol, "recipe": self.recipe}
        return {key: value for key, value in tags.items() if value != ""}


def differing_fields(first: Mapping[str, str], second: Mapping[str, str]) -> list[str]:
    """The setup fields in which two runs' tags differ, as `field (a vs b)`; [] when none do."""
    return [
        f"{name} ({first.get(name, '?')} vs {second.get(name, '?')})"
        for name in SETUP_FIELDS
        if first.get(name, "") != second.get(name, "")
    ]


def describe_setup(tags: Mapping[str, str], names: Sequence[str] = SETUP_FIELDS) -> str:
    """One line naming a setup, e.g. for the heading of a table: `iemocap, train_with speechcraft, ...`."""
    parts = [f"{name} {tags[name]}" for name in names if tags.get(name)]
    return ", ".join(parts) + f" (setup {tags.get('setup', '?')})"
