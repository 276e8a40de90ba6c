"""Prediction records: one JSONL artifact per evaluated split of a run (docs/architecture.md).

Every statistic and leaderboard cell is recomputed from these records, never from a number copied
by hand, so they are validated on the way in and on the way out: a record with a misspelt or
missing field is an error naming the file and line, not a silently skewed metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from benchmark.config import Language
from benchmark.data.jsonl import read_jsonl, write_jsonl
from benchmark.errors import BenchmarkError


class PredictionRecord(BaseModel):
    """What the system said about one utterance next to the reference.

    Fields a system or corpus does not have are null rather than absent (MELD has no descriptor,
    an SSL baseline writes no free text, so its `raw_output` is null); `fold` names the held-out
    group of cross-validation (IEMOCAP session) and is null for corpora with official splits;
    `seed` is null unless the run trained each fold several times.

    `language` is the language of the references (the manifest row's, `Utterance.language`), which
    decides how the descriptor is tokenised and which hypothesis language counts as a mismatch.
    It is optional so that records written before it existed still read: null means the language
    of the run's corpus (its dataset card), which is how those records were scored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    ref_emotion: str | None
    hyp_emotion: str | None
    ref_transcript: str | None
    hyp_transcript: str | None
    ref_descriptor: str | None
    hyp_descriptor: str | None
    raw_output: str | None
    fold: str | None
    language: Language | None = None
    seed: int | None = None  # the training's seed where a run trains each fold several times

    @property
    def key(self) -> str:
        """What identifies the record in a run's pooled records: the utterance, and the seed when
        the run trained several (`run --seeds K`); what paired tests pair."""
        return self.id if self.seed is None else f"{self.id}@seed{self.seed}"

    @field_validator("id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


def write_records(path: Path, records: Iterable[PredictionRecord]) -> int:
    """Write `records` to `path` atomically (a killed evaluation never leaves a truncated file
    that would later be read as a complete, smaller test set); returns how many were written."""
    return write_jsonl(path, records)


def read_records(path: Path) -> list[PredictionRecord]:
    """Read and validate a records file; a bad line or a repeated id raises naming file and line."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: prediction records not found")
    return [record for _, record in read_jsonl(path, PredictionRecord)]
