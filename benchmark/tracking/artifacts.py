"""Finding a run's records in MLflow: its prediction records (the contract is
`benchmark.data.records`) and its explanation records (`benchmark.explain.quality`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from benchmark.data.records import PredictionRecord, read_records
from benchmark.errors import BenchmarkError
from benchmark.explain.quality import ExplanationRecord, read_explanations

T = TypeVar("T")


def load_run_records(run_id: str, split: str, tracking_uri: str | None = None) -> list[PredictionRecord]:
    """Download `predictions/<split>.jsonl` of a run and read it.

    `tracking_uri` defaults to mlflow's current one, which `benchmark.tracking.store.tracking_setup`
    sets; the download goes to a temporary folder that is removed afterwards.
    """
    return _read_artifact(run_id, f"predictions/{split}.jsonl", read_records, tracking_uri)


def load_run_explanations(run_id: str) -> list[ExplanationRecord]:
    """The explanation records `explain RUN_ID --all` logged (`explanations/utterances.jsonl`)."""
    return _read_artifact(run_id, "explanations/utterances.jsonl", read_explanations)


def _read_artifact(
    run_id: str, artifact: str, read: Callable[[Path], list[T]], tracking_uri: str | None = None
) -> list[T]:
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
        return read(Path(local))
