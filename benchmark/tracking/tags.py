"""Run tags: their names, the digests that identify a run, and the one builder of a run's tags.

A table or a paired test is only meaningful between runs that saw the same data the same way, so
every run of `run` and `evaluate` carries its *run setup* (`RunSetup`): the setup's fields one by
one, the `setup` digest of them (the same for every row of one table) and the `protocol` digest of
the setup plus the resolved system and the engine (two runs with one protocol repeat one
experiment). The tag names `setup` and `protocol` stay as they were first logged, so old runs are
still read; "protocol" here is not a corpus's split protocol (`DatasetCard.protocol`).
`recipe` is `registry` for the registry's config (with `--beta`), `custom` after `--epochs` or
`--set`, so a quick run never takes a table cell's place unless asked for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from benchmark.config import SystemConfig

# What was trained, and how: with which feature source, by how many processes on which devices.
SYSTEM, BETA, SCHEDULE, ENGINE = "system", "beta", "schedule", "engine"
FEATURES, WORLD_SIZE, DEVICES = "features", "world_size", "devices"
# The run setup's fields and digests (`RunSetup`).
DATASET, TRAIN_WITH, VALIDATION, BACKBONE, FOLDS = "dataset", "train_with", "validation", "backbone", "folds"
SOURCE_SETUP, SETUP, PROTOCOL, RECIPE = "source_setup", "setup", "protocol", "recipe"
# One fold's run under its parent; what kind of run a run without a system is.
FOLD, KIND = "fold", "kind"
# Every training's seed; with `--seeds K`, K on a fold's run and each seed run's index (0: the system's).
SEED, SEEDS, SEED_INDEX = "seed", "seeds", "seed_index"
# `--resume`: the digest of everything that changes training, the run's checkpoint folder, its origin.
CONFIG_DIGEST, CHECKPOINTS, RESUMED_FROM = "config_digest", "checkpoints", "resumed_from"
# `--backbone paper-shape`: random weights measured speed and memory, never results.
RANDOM_WEIGHTS = "random_weights"
# `--allow-overlap`: how many test clips had their audio in the training mixture (`data audit`).
OVERLAP = "overlap"
# A study's runs: the study run, its trials, the refits of the chosen trials (`benchmark.study`).
STUDY, TRIAL, STUDY_RUN, REFIT_OF = "study", "trial", "study_run", "refit_of"
# A zero-shot evaluation's source.
SOURCE_RUN, SOURCE_DATASET, SOURCE_FOLD = "source_run", "source_dataset", "source_fold"

SETUP_FIELDS = (DATASET, TRAIN_WITH, VALIDATION, BACKBONE, FOLDS, SOURCE_SETUP)
Recipe = Literal["registry", "custom"]


def digest(value: Any, length: int = 16) -> str:
    """A stable hex digest of a JSON-serialisable value (keys sorted): the one digest of run identity."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunSetup:
    """The setup of one `run` (or, with `source_setup`, of one zero-shot evaluation)."""

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
            DATASET: self.dataset,
            TRAIN_WITH: ",".join(sorted(self.train_with)) or "none",
            VALIDATION: "on" if self.validation else "off",
            BACKBONE: self.backbone,
            FOLDS: ",".join(self.folds),
            SOURCE_SETUP: self.source_setup,
        }

    def tags(self, system: SystemConfig) -> dict[str, str]:
        fields = self.setup_fields()
        setup = digest(fields)
        protocol = digest([setup, system.model_dump(mode="json"), self.engine])
        tags = {**fields, SETUP: setup, PROTOCOL: protocol, RECIPE: self.recipe}
        return {key: value for key, value in tags.items() if value != ""}


def run_tags(system: SystemConfig, setup: RunSetup, **extra: str) -> dict[str, Any]:
    """A trained or evaluated system's run tags: the system, its setup, and `extra` (by tag name)."""
    return {SYSTEM: system.name, BETA: system.beta, SCHEDULE: system.schedule, **setup.tags(system), **extra}


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
    return ", ".join(parts) + f" (setup {tags.get(SETUP, '?')})"
