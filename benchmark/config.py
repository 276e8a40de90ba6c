"""Typed, validated configuration: YAML files in, pydantic models out.

Every registry entry (dataset cards now; systems and studies later) is a YAML file checked by a
pydantic model with `extra="forbid"`, so a misspelt field is an error that names the file and the
field instead of a silently ignored key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchmark.errors import BenchmarkError

T = TypeVar("T", bound=BaseModel)


def benchmark_home() -> Path:
    """Where prepared corpora, the demo corpus, cue caches and self-made backbones live.

    `BENCHMARK_HOME` wins; otherwise the XDG cache folder, like HuggingFace's own cache, because
    these are derived artefacts that can always be rebuilt.
    """
    if home := os.environ.get("BENCHMARK_HOME"):
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "explainable-ser"


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning parser errors into one line with the file and line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise BenchmarkError(f"{path}: cannot read ({err.strerror})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else "?"
        raise BenchmarkError(f"{path}:{line}: invalid YAML: {err.problem}") from err
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a mapping of fields at the top level")
    return data


def validate(model: type[T], data: dict[str, Any], source: Path | str) -> T:
    """Build `model` from `data`; the first validation error names the source and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise BenchmarkError(
            f"{source}: field '{field}': {first['msg']}{more}",
            hint=f"fix the field in {source}; the fields allowed are those of {model.__name__}",
        ) from err


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Protocol(StrictModel):
    """How a corpus is split for training and evaluation (paper section 4.1).

    - `leave_one_group_out`: k-fold cross-validation where fold k holds out group `folds[k]`
      (IEMOCAP sessions; the demo corpus's speaker groups).
    - `official_splits`: the corpus's own train/dev/test split names (MELD).
    - `zero_shot`: evaluation only, never trained on (EMOSEC).
    - `training_only`: a training corpus with no evaluation split (SpeechCraft).
    """

    kind: Literal["leave_one_group_out", "official_splits", "zero_shot", "training_only"]
    folds: list[str] = Field(default_factory=list)
    train: str | None = None
    dev: str | None = None
    test: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Protocol:
        if self.kind == "leave_one_group_out" and len(self.folds) < 2:
            raise ValueError("leave_one_group_out needs at least two groups in 'folds'")
        if self.kind == "official_splits" and not (self.train and self.test):
            raise ValueError("official_splits needs 'train' and 'test' split names")
        if self.kind == "zero_shot" and not self.test:
            raise ValueError("zero_shot needs a 'test' split name")
        return self


class DatasetCard(StrictModel):
    """One corpus: its labels, how raw labels map to the task's, its splits and on-disk layout."""

    name: str
    title: str
    citation: str
    homepage: str
    license: str
    reader: Literal["demo", "iemocap", "meld", "speechcraft", "emosec"]
    tasks: list[Literal["ser", "asr", "sed"]]
    sample_rate: int = 16000
    labels: list[str] = Field(default_factory=list)
    # Raw corpus label -> task label; a null value drops utterances with that raw label on purpose
    # (e.g. IEMOCAP's frustration), which is reported, not treated as a bad row.
    label_map: dict[str, str | None] = Field(default_factory=dict)
    splits: list[str]
    protocol: Protocol
    layout: str
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> DatasetCard:
        unknown = {v for v in self.label_map.values() if v is not None} - set(self.labels)
        if unknown:
            raise ValueError(f"label_map maps to labels not in 'labels': {sorted(unknown)}")
        named = {self.protocol.train, self.protocol.dev, self.protocol.test} - {None}
        if missing := named - set(self.splits):
            raise ValueError(f"protocol names splits not in 'splits': {sorted(missing)}")
        if "ser" in self.tasks and not self.labels:
            raise ValueError("a corpus with the 'ser' task needs 'labels'")
        return self

    def map_label(self, raw: str) -> tuple[bool, str | None]:
        """Return (known, label): known is False for a raw label the card does not mention."""
        key = raw.strip()
        if key in self.label_map:
            return True, self.label_map[key]
        lowered = {k.lower(): v for k, v in self.label_map.items()}
        if key.lower() in lowered:
            return True, lowered[key.lower()]
        if key.lower() in self.labels:
            return True, key.lower()
        return False, None
