"""The expert-referenced cue table: which way each acoustic cue moves, per emotion, and who says so.

It says what the voice is expected to do in salient windows if the decision rests on the cues the
literature associates with the emotion (Juslin & Laukka 2003; Banse & Scherer 1996). It is data
(`expert_cues.yaml`, shipped in the package), so every direction can be checked against its
citation and a user can pass a table of their own (`load_expert_table(path)`). Directions are
relative to the speaker's baseline: `up`, `down`, or `baseline` (neutral speech). A `weak` row
(voice quality) is reported but never counts towards cue plausibility. A label with no row
(fearful, surprised) has no expectations (`expectations` returns None), not the nearest emotion's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from benchmark.config import StrictModel, load_yaml, validate

Direction = Literal["up", "down", "baseline"]

F0 = "F0semitoneFrom27.5Hz_sma3nz"
F0_VARIABILITY = f"{F0}_stddev"  # derived: standard deviation of voiced F0, semitones
LOUDNESS = "Loudness_sma3"
SPECTRAL_SLOPE = "slope500-1500_sma3"  # flatter (higher) = more high-frequency energy
JITTER = "jitterLocal_sma3nz"
SHIMMER = "shimmerLocaldB_sma3nz"
HNR = "HNRdBACF_sma3nz"
SPEAKING_RATE = "speaking_rate"  # words per voiced second, utterance level only

# Every cue the evidence measures, in report order: the table may only name these.
CUE_KEYS = (F0, F0_VARIABILITY, LOUDNESS, SPECTRAL_SLOPE, SPEAKING_RATE, JITTER, SHIMMER, HNR)
# What each cue is called for a reader (the eGeMAPS names above are for code and tooltips).
CUE_NAMES = {
    F0: "F0 (semitones)",
    F0_VARIABILITY: "F0 variability (semitones)",
    LOUDNESS: "loudness",
    SPECTRAL_SLOPE: "spectral slope 500–1500 Hz",
    SPEAKING_RATE: "speaking rate (words per voiced second)",
    JITTER: "jitter",
    SHIMMER: "shimmer (dB)",
    HNR: "HNR (dB)",
}

TABLE_FILE = "expert_cues.yaml"


class _Row(StrictModel):
    emotion: str
    cue: Literal[CUE_KEYS]  # type: ignore[valid-type]
    direction: Direction
    weak: bool = False
    citation: list[str] = Field(min_length=1)


class _Table(StrictModel):
    references: dict[str, Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    emotions: dict[str, list[str]] = Field(min_length=1)
    rows: list[_Row] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> _Table:
        """Cross-field checks, each naming the offending row so the file is quick to fix."""
        seen: dict[str, str] = {}
        for emotion, labels in self.emotions.items():
            for label in labels:
                if label in seen:
                    raise ValueError(f"label {label!r} is listed under both {seen[label]!r} and {emotion!r}")
                seen[label] = emotion
        pairs = set()
        for i, row in enumerate(self.rows):
            if row.emotion not in self.emotions:
                raise ValueError(f"rows.{i}.emotion: {row.emotion!r} is not one of 'emotions'")
            if unknown := [c for c in row.citation if c not in self.references]:
                raise ValueError(f"rows.{i}.citation: {unknown[0]!r} is not one of 'references'")
            if (row.emotion, row.cue) in pairs:
                raise ValueError(f"rows.{i}: a second row for ({row.emotion}, {row.cue})")
            pairs.add((row.emotion, row.cue))
        return self


@dataclass(frozen=True)
class Expectation:
    """What the experts expect of one cue for one emotion, and on whose authority."""

    cue: str
    direction: Direction
    weak: bool
    citation: tuple[str, ...]  # full references, as in the table's `references`


@dataclass(frozen=True)
class ExpertTable:
    """The loaded table: expectations per table emotion, and dataset label -> table emotion."""

    source: str
    rows: Mapping[str, Mapping[str, Expectation]]  # table emotion -> cue -> expectation
    labels: Mapping[str, str]  # dataset label (lower case) -> table emotion

    def emotion(self, label: str | None) -> str | None:
        """The table emotion a dataset label stands for ('joy' -> 'happiness'); None without a row."""
        return None if label is None else self.labels.get(label.strip().lower())

    def expectations(self, label: str | None) -> Mapping[str, Expectation] | None:
        """Cue -> expectation for a dataset label; None when the label has no row in the table."""
        emotion = self.emotion(label)
        return None if emotion is None else self.rows[emotion]


def load_expert_table(path: Path | str | None = None) -> ExpertTable:
    """The shipped table, or one at `path`. A malformed table raises `BenchmarkError` naming the
    file and the field (e.g. `rows.3.direction`)."""
    if path is None:
        path = Path(str(resources.files("benchmark.explain").joinpath(TABLE_FILE)))
    path = Path(path)
    table = validate(_Table, load_yaml(path), path)
    rows: dict[str, dict[str, Expectation]] = {emotion: {} for emotion in table.emotions}
    for row in table.rows:
        rows[row.emotion][row.cue] = Expectation(
            row.cue, row.direction, row.weak, tuple(table.references[key].strip() for key in row.citation)
        )
    labels = {label.lower(): emotion for emotion, names in table.emotions.items() for label in names}
    return ExpertTable(str(path), rows, labels)
