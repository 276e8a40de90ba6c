"""Prediction records: one JSONL artifact per evaluated split of a run (ARCHITECTURE section 3).

Every statistic and leaderboard cell is recomputed from these records, never from a number copied
by hand, so they are validated on the way in and on the way out: a record with a misspelt or
missing field is an error naming the file and line, not a silently skewed metric.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from benchmark.errors import BenchmarkError


class PredictionRecord(BaseModel):
    """What the system said about one utterance next to the reference.

    Fields a system or corpus does not have are null rather than absent (MELD has no descriptor,
    an SSL baseline writes no free text, so its `raw_output` is null); `fold` names the held-out
    group of cross-validation (IEMOCAP session) and is null for corpora with official splits.
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

    @field_validator("id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


def write_records(path: Path, records: Iterable[PredictionRecord]) -> int:
    """Write `records` to `path` atomically (temporary file + rename); returns how many were written.

    An evaluation killed half-way therefore never leaves a truncated file that would later be read
    as a complete, smaller test set.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(record.model_dump_json() + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_records(path: Path) -> list[PredictionRecord]:
    """Read and validate a records file; the first bad line raises an error naming file and line.

    Duplicate ids are refused: an utterance counted twice would bias every mean computed from it.
    """
    if not path.is_file():
        raise BenchmarkError(f"{path}: prediction records not found")
    records: list[PredictionRecord] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = PredictionRecord.model_validate(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchmarkError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            except ValidationError as err:
                first = err.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "(record)"
                raise BenchmarkError(f"{path}:{number}: field '{field}': {first['msg']}") from err
            if record.id in seen:
                raise BenchmarkError(f"{path}:{number}: duplicate utterance id '{record.id}'")
            seen.add(record.id)
            records.append(record)
    return records


def load_run_records(run_id: str, split: str, tracking_uri: str | None = None) -> list[PredictionRecord]:
    """Download `predictions/<split>.jsonl` of a run and read it.

    `tracking_uri` defaults to mlflow's current one, which `benchmark.track.tracking.tracking_setup`
    sets; the download goes to a temporary folder that is removed afterwards.
    """
    artifact = f"predictions/{split}.jsonl"
    with tempfile.TemporaryDirectory(prefix="records-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=tracking_uri
            )
        except (MlflowException, OSError) as err:
            raise BenchmarkError(
                f"run {run_id}: cannot load {artifact} ({str(err).splitlines()[0]})",
                hint="check the run id and split in the MLflow UI (`python -m benchmark ui`)",
            ) from err
        return read_records(Path(local))
