"""Manifests: one JSONL file per split, one utterance per line (docs/architecture.md).

Everything downstream (training, evaluation, explanation) reads manifests, never a raw corpus, so
the corpus readers are the only code that knows a corpus's on-disk quirks. Reading validates
every line and writing is atomic (`benchmark.data.jsonl`), so a failed `data prepare` never leaves
a half-written manifest in place of a good one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from benchmark.config import Language
from benchmark.data.jsonl import read_jsonl, write_jsonl
from benchmark.errors import BenchmarkError


class Utterance(BaseModel):
    """One row of a manifest (an infinite duration is as wrong as a negative one).

    `language` is the language of the utterance's reference texts ("en" or "zh"): that of its
    descriptor where it has one, since the captioning metrics tokenise by it (PTB tokens for
    English, characters for Mandarin). Every reader writes it: the dataset card's `language`,
    unless the corpus says otherwise per utterance (EMOSEC, whose captions are Mandarin or English,
    is detected caption by caption). It may be null, and is absent from manifests written before
    the field existed: null means "the dataset card's language" (`language_of`), which is how
    those manifests were always scored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    audio: str
    duration: float
    transcript: str | None
    emotion: str | None
    descriptor: str | None
    speaker: str
    gender: str | None
    group: str
    dataset: str
    language: Language | None = None

    def language_of(self, default: Language) -> Language:
        """The utterance's language; `default` (its dataset card's) where the row has none."""
        return self.language or default

    @field_validator("id", "audio", "speaker", "group", "dataset")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator("gender")
    @classmethod
    def _gender(cls, value: str | None) -> str | None:
        if value is not None and value not in ("female", "male"):
            raise ValueError("must be 'female', 'male' or null")
        return value


@dataclass(frozen=True)
class RowIssue:
    """A raw-corpus row that could not become an utterance, located by file and line."""

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.reason}"


def write_manifest(path: Path, rows: Iterable[Utterance]) -> int:
    """Write `rows` to `path` atomically; returns the number of rows written."""
    return write_jsonl(path, rows)


def read_manifest(path: Path, check_audio: bool = False, rebuild_hint: str | None = None) -> list[Utterance]:
    """Read and validate a manifest; the first bad line raises an error naming file and line.

    `rebuild_hint` says how to write the manifest again; it is the hint of any error about its
    content (a bad line, a missing audio file).
    """
    if not path.is_file():
        raise BenchmarkError(
            f"{path}: manifest not found",
            hint="run `python -m benchmark data prepare NAME --root PATH` (or `data demo`) first",
        )
    rows = read_jsonl(path, Utterance, hint=rebuild_hint)
    if check_audio:
        for number, row in rows:
            if not Path(row.audio).is_file():
                raise BenchmarkError(f"{path}:{number}: audio file not found: {row.audio}", hint=rebuild_hint)
    return [row for _, row in rows]
