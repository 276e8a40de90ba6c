"""A fold run's trained model (`model/system.pt`, `benchmark.train.trained`), found and loaded."""

from __future__ import annotations

import tempfile
from typing import Any

import mlflow
import torch
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from benchmark.errors import BenchmarkError
from benchmark.tracking import tags as tag
from benchmark.tracking.lookup import finished_run, fold_runs
from benchmark.train.trained import ARTIFACT


def fold_model(run_id: str, fold: str | None) -> tuple[Run, str, dict[str, Any]]:
    """The run `run_id` (a parent or a fold run), the fold chosen, and that fold's saved model.

    `fold` may be None when the run has one fold only: a run of several folds holds several
    models, each trained without its fold's speakers, and the caller must say which.
    """
    run = finished_run(run_id, top_level=False)
    by_fold = fold_runs(run)
    if not by_fold:
        kind = run.data.tags.get(tag.KIND, "untagged")
        raise BenchmarkError(
            f"run {run_id} is not a training run (kind: {kind}): it has no fold run holding a trained model",
            hint="pass a run of `benchmark run` (its parent run or one fold run)",
        )
    if fold is None and len(by_fold) == 1:
        fold = next(iter(by_fold))
    if fold not in by_fold:
        raise BenchmarkError(
            f"run {run_id} has models of folds {sorted(by_fold)}; pick one with --fold",
            hint="each fold's model was trained without that fold's speakers; any of them is a valid source",
        )
    model_run = by_fold[fold]
    with tempfile.TemporaryDirectory(prefix="system-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=model_run.info.run_id, artifact_path=str(ARTIFACT), dst_path=tmp
            )
        except (MlflowException, OSError) as err:
            raise BenchmarkError(
                f"run {model_run.info.run_id} (fold {fold}) holds no {ARTIFACT}",
                hint="older runs of SSL baselines logged no model; re-run the system",
            ) from err
        return run, fold, torch.load(path, map_location="cpu", weights_only=True)
