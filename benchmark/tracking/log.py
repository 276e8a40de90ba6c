"""What a command logs into the active run: metrics, params, datasets, artifacts, prediction records.

Every helper requires an active run (`benchmark.tracking.runs.run_context`): mlflow's fluent API would
otherwise silently start a new run in the "Default" experiment. Every write goes through
`lifecycle.tracking_write`: retried while the store is busy, and never cut in half by a signal.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow
import yaml
from pydantic import BaseModel

from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord, write_records
from benchmark.tracking.lifecycle import tracking_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# mlflow.utils.validation.MAX_PARAM_VAL_LENGTH; the full config is logged as config.yaml anyway.
PARAM_LIMIT = 6000
TRUNCATED = "...[truncated, see config.yaml]"

DatasetContext = Literal["training", "validation", "test"]


def _plain(obj: Any) -> Any:
    return obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj


def flatten_params(config: Mapping[str, Any] | BaseModel) -> dict[str, str]:
    """Dotted keys (`decoder.lora_r`, `stages.1.lr`) with string values, cut to MLflow's limit.

    Lists of mappings (the stages) are flattened by index so that each stage's fields can be
    compared across runs in the UI; lists of scalars stay one JSON value.
    """
    flat: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for name, item in value.items():
                walk(item, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                walk(item, f"{key}.{index}")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[key] = text if len(text) <= PARAM_LIMIT else text[: PARAM_LIMIT - len(TRUNCATED)] + TRUNCATED

    walk(_plain(config), "")
    return flat


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: log inside `with run_context(...)`")
    return run.info.run_id


def log_metrics(metrics: Mapping[str, float | None], step: int | None = None) -> None:
    """Log scalars (`train.loss`, `ser.ua`…) at `step`; the training loop's per-step callback.

    None values (a loss term the system does not have, e.g. `train.kl.descriptor` without a
    descriptor branch) are skipped rather than logged as 0.
    """
    _active_run_id()
    values = {key: float(value) for key, value in metrics.items() if value is not None}
    if values:
        tracking_write(mlflow.log_metrics, values, step=step)


def log_params(params: Mapping[str, Any]) -> None:
    """Log params of the active run (values as strings), e.g. `data.iemocap.train_utterances`."""
    _active_run_id()
    if params:
        tracking_write(mlflow.log_params, {key: str(value) for key, value in params.items()})


def log_config(config: Mapping[str, Any] | BaseModel) -> None:
    """Log a fully resolved config: flattened as params (`flatten_params`) and whole as `config.yaml`."""
    _active_run_id()
    tracking_write(mlflow.log_params, flatten_params(config))
    log_yaml(config, "config.yaml")


def log_dataset(
    rows: Sequence[Utterance], name: str, context: DatasetContext, source: Path, manifest_digest: str
) -> None:
    """Log the manifest rows a run saw in one role as an MLflow dataset input (the UI's Datasets
    column): its digest is that of the rows' ids, so two folds' training parts differ, and the tag
    `manifest_digest` names the prepared manifests they were drawn from."""
    import pandas as pd

    _active_run_id()
    frame = pd.DataFrame(
        [
            {"id": r.id, "duration": r.duration, "emotion": r.emotion, "speaker": r.speaker, "group": r.group}
            for r in rows
        ]
    )
    ids = hashlib.sha256("\n".join(sorted(r.id for r in rows)).encode()).hexdigest()[:16]
    with warnings.catch_warnings():  # mlflow registers two identical local-file source types
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_pandas(frame, source=str(source), name=name, digest=ids)
    tracking_write(mlflow.log_input, dataset, context=context, tags={"manifest_digest": manifest_digest})


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-style pipe table (pandas' to_markdown needs tabulate, which the suite does not ship)."""
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join(
        "| " + " | ".join(str(cell).replace("|", r"\|") for cell in line) + " |" for line in lines
    )


def log_text(text: str, name: str) -> None:
    """Log `text` as the artifact `name` (e.g. `comparison.md`)."""
    _active_run_id()
    tracking_write(mlflow.log_text, text, name)


def log_artifact(path: Path | str, folder: str | None = None) -> None:
    """Log the file `path` under the artifact folder `folder` (its own name kept)."""
    _active_run_id()
    tracking_write(mlflow.log_artifact, str(path), artifact_path=folder)


def log_yaml(obj: Any, name: str) -> None:
    """Log a mapping or pydantic model as the YAML artifact `name` (e.g. `config.yaml`)."""
    log_text(yaml.safe_dump(_plain(obj), sort_keys=False, allow_unicode=True), name)


def log_json(obj: Any, name: str) -> None:
    log_text(json.dumps(_plain(obj), indent=2, ensure_ascii=False, default=str), name)


def log_figure(figure: Figure | Path | str, name: str) -> None:
    """Log a matplotlib figure or an image file as the artifact `name` (e.g. `confusion_matrix.png`)."""
    _active_run_id()
    if not isinstance(figure, Path | str):
        tracking_write(mlflow.log_figure, figure, name)
        return
    # log_artifact keeps the file's own name, so copy it under the requested one first.
    artifact = Path(name)
    with tempfile.TemporaryDirectory(prefix="figure-") as tmp:
        local = Path(tmp) / artifact.name
        local.write_bytes(Path(figure).read_bytes())
        log_artifact(local, artifact.parent.as_posix() if artifact.parent.parts else None)


def log_environment() -> None:
    """Log the `doctor` report (packages, devices, corpora) as `environment.json`."""
    from benchmark.environment import environment_record  # imports torch

    log_json(environment_record(), "environment.json")


def log_predictions(records: Iterable[PredictionRecord], split: str) -> str:
    """Log the records of one split as `predictions/<split>.jsonl`; returns that artifact path."""
    _active_run_id()
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"split must be a plain name, got {split!r}")
    with tempfile.TemporaryDirectory(prefix="predictions-") as tmp:
        local = Path(tmp) / f"{split}.jsonl"
        write_records(local, records)
        log_artifact(local, "predictions")
    return f"predictions/{split}.jsonl"
