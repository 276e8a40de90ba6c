"""Manifests: one JSONL file per split, one utterance per line (ARCHITECTURE section 3).

Everything downstream (training, evaluation, explanation) reads manifests, never a raw corpus, so
the corpus readers are the only code that knows a corpus's on-disk quirks. Writes are atomic: a
manifest is written to a temporary file beside the target and renamed over it, so an interrupted
or failed `data prepare` never leaves a half-written manifest in place of a good one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from benchmark.errors import BenchmarkError


class Utterance(BaseModel):
    """One row of a manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(row.model_dump_json() + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_manifest(path: Path, check_audio: bool = False) -> list[Utterance]:
    """Read and validate a manifest; the first bad line raises an error naming file and line."""
    if not path.is_file():
        raise BenchmarkError(
            f"{path}: manifest not found",
            hint="run `python -m benchmark data prepare NAME --root PATH` (or `data demo`) first",
        )
    rows: list[Utterance] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = Utterance.model_validate(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchmarkError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            except ValidationError as err:
                first = err.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "(row)"
                raise BenchmarkError(f"{path}:{number}: field '{field}': {first['msg']}") from err
            if row.id in seen:
                raise BenchmarkError(f"{path}:{number}: duplicate utterance id '{row.id}'")
            if check_audio and not Path(row.audio).is_file():
                raise BenchmarkError(f"{path}:{number}: audio file not found: {row.audio}")
            seen.add(row.id)
            rows.append(row)
    return rows
