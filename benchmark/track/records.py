"""Finding a run's prediction records in MLflow (the record contract is `benchmark.data.records`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from benchmark.data.records import PredictionRecord, read_records
from benchmark.errors import BenchmarkError


def load_run_records(run_id: str, split: str, tracking_uri: str | None = None) -> list[PredictionRecord]:
    """Download `predictions/<split>.jsonl` of a run and read it.

    `tracking_uri` defaults to mlflow's current one, which `benchmark.track.store.tracking_setup`
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
