"""The thin layer over MLflow that every command logs through (ARCHITECTURE sections 3 and 8).

- `load_mlflow_config` reads `mlflow.yaml` (./mlflow.yaml in the working directory first, then the
  one at the root of the clone; built-in defaults equal to that file otherwise, so an installed
  wheel needs no copy of it). `MLFLOW_TRACKING_URI` and `BENCHMARK_MLFLOW_EXPERIMENT` override it.
  A relative sqlite file or artifact folder is resolved against the working directory.
- `tracking_setup` points mlflow at the store and creates the experiment.
- `tracking_setup` also marks as FAILED the runs of the experiment whose owner is gone (a SIGKILL,
  a dead machine: `benchmark.track.lifecycle`), once per process, so every command that reads or
  writes runs starts from true statuses.
- `run_context` opens a run (a parent run, or a nested one under the active run) and guarantees
  that it ends FINISHED, FAILED (an exception, re-raised) or KILLED (Ctrl-C, SIGTERM): nothing
  stays RUNNING and a crashed run is never shown as FINISHED. A parent whose nested run failed ends
  FAILED too, even when the parent's code caught the exception and went on. Every run records its
  owner and a heartbeat.
- Every write goes through `lifecycle.tracking_write`: retried while the store is busy, and never
  cut in half by a signal.
- `log_*` helpers require an active run: mlflow's fluent API would otherwise silently start a new
  run in the "Default" experiment.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from pydantic import BaseModel, Field, model_validator

from benchmark.config import StrictModel, load_yaml, validate
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord, write_records
from benchmark.errors import BenchmarkError
from benchmark.track.lifecycle import StaleRun, heartbeat, mark_stale_runs, owner_tags, tracking_write
from benchmark.track.signals import killed_runs, signals_held

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPO_CONFIG = Path(__file__).resolve().parents[2] / "mlflow.yaml"
# mlflow.utils.validation.MAX_PARAM_VAL_LENGTH; the full config is logged as config.yaml anyway.
PARAM_LIMIT = 6000
TRUNCATED = "...[truncated, see config.yaml]"
FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)

# Without this experiment tag MLflow 3's UI opens an experiment on its (empty) GenAI traces overview.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

# The experiment of the last tracking_setup: top-level runs go there, never to mlflow's "Default".
_experiment_id: str | None = None
_runs_config: RunsConfig | None = None
# (tracking URI, experiment id) pairs already swept for stale runs by this process.
_swept: set[tuple[str, str]] = set()
# Parent run id -> the status of a nested run that did not finish (read when the parent ends).
_failed_children: dict[str, str] = {}


class UIConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)


class RunsConfig(StrictModel):
    """How often an open run proves its owner alive, and how long a silence marks it stale.

    The silence limit matters only for runs owned by another host (on this host a dead or reused
    pid is seen at once); it must cover many missed beats, so a briefly busy store is not a death.
    """

    heartbeat_s: float = Field(30.0, gt=0)
    stale_after_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RunsConfig:
        if self.stale_after_s < 3 * self.heartbeat_s:
            raise ValueError("stale_after_s must be at least three heartbeats (3 x heartbeat_s)")
        return self


class MlflowConfig(StrictModel):
    """Where runs go. `artifact_location: null` leaves it to the store (a server's proxied root)."""

    tracking_uri: str = Field("sqlite:///mlruns/mlflow.db", min_length=1)
    artifact_location: str | None = "mlruns/artifacts"
    experiment: str = Field("explainable-ser", min_length=1)
    ui: UIConfig = Field(default_factory=UIConfig)
    runs: RunsConfig = Field(default_factory=RunsConfig)


def _is_uri(location: str) -> bool:
    """True for `s3://…`, `file:///…`, `mlflow-artifacts:/…`; False for a plain (Windows) path."""
    return len(urlparse(location).scheme) > 1


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for any other store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def _resolve(config: MlflowConfig, cwd: Path) -> MlflowConfig:
    """Make a relative sqlite file and artifact folder absolute against `cwd`.

    Runs record absolute artifact URIs, so a relative path would otherwise mean a different place
    for every working directory a command or the UI is started from.
    """
    update: dict[str, Any] = {}
    db = sqlite_path(config.tracking_uri)
    if db is not None and not db.is_absolute():
        query = config.tracking_uri.partition("?")[2]
        update["tracking_uri"] = f"sqlite:///{(cwd / db).resolve()}" + (f"?{query}" if query else "")
    location = config.artifact_location
    if location is not None and not _is_uri(location) and not Path(location).is_absolute():
        update["artifact_location"] = str((cwd / location).resolve())
    return config.model_copy(update=update)


def load_mlflow_config(path: Path | None = None) -> MlflowConfig:
    """Read the tracking config (see the module docstring for the search order and overrides)."""
    if path is None:
        path = next((p for p in (Path.cwd() / "mlflow.yaml", REPO_CONFIG) if p.is_file()), None)
    data = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "built-in MLflow defaults"
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        data["tracking_uri"] = uri
        source += " + MLFLOW_TRACKING_URI"
    if experiment := os.environ.get("BENCHMARK_MLFLOW_EXPERIMENT"):
        data["experiment"] = experiment
        source += " + BENCHMARK_MLFLOW_EXPERIMENT"
    return _resolve(validate(MlflowConfig, data, source), Path.cwd())


@contextmanager
def _first_open_lock(db: Path | None) -> Iterator[None]:
    """Opening a new SQLite store runs MLflow's schema migration; two processes that do it at once
    (two `run`s started together) crash all but one with `OperationalError`. The first open of a
    store is therefore taken one process at a time, under an exclusive lock on a file beside it."""
    if db is None:
        yield
        return
    with (db.parent / f".{db.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tracking_setup(config: MlflowConfig) -> str:
    """Point mlflow at the store, create folders and the experiment if absent; returns its id.

    The first call of a process for an experiment also marks its stale runs FAILED (module
    docstring), and says so on standard error.
    """
    if (db := sqlite_path(config.tracking_uri)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    if config.artifact_location and not _is_uri(config.artifact_location):
        Path(config.artifact_location).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(config.tracking_uri)
    with _first_open_lock(db):
        client = MlflowClient()
        experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        try:
            experiment_id = tracking_write(
                client.create_experiment,
                config.experiment,
                config.artifact_location,
                tags=dict([EXPERIMENT_KIND]),
            )
        except MlflowException as err:  # another process created it between our two calls
            if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment_id = client.get_experiment_by_name(config.experiment).experiment_id
    elif experiment.lifecycle_stage == "deleted":
        raise BenchmarkError(
            f"MLflow experiment '{config.experiment}' is deleted (in {config.tracking_uri})",
            hint="restore it in the MLflow UI, or set BENCHMARK_MLFLOW_EXPERIMENT to another name",
        )
    else:
        experiment_id = experiment.experiment_id
        key, value = EXPERIMENT_KIND
        if experiment.tags.get(key) != value:  # an experiment made before the tag was set
            tracking_write(client.set_experiment_tag, experiment_id, key, value)
    global _experiment_id, _runs_config
    _experiment_id, _runs_config = experiment_id, config.runs
    mlflow.set_experiment(experiment_id=experiment_id)  # for mlflow's own fluent calls and integrations
    if (config.tracking_uri, experiment_id) not in _swept:
        _swept.add((config.tracking_uri, experiment_id))
        report_stale(mark_stale_runs(client, experiment_id, config.runs.stale_after_s))
    return experiment_id


def report_stale(stale: list[StaleRun]) -> None:
    """One line per run marked stale, on standard error (the tables of a command go to stdout)."""
    for run in stale:
        print(f"marked run {run.run_id} ({run.name}) FAILED: {run.reason}", file=sys.stderr)


def git_sha() -> str:
    """The commit of the code that runs, or "unknown" outside a git clone (an installed wheel)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


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


def _end(run_id: str, status: str) -> None:
    """Store the run's final status (retried while the store is busy), then pop mlflow's run stack.

    mlflow's own `end_run` pops its stack *before* it writes, so a failed write there could not be
    retried without ending the parent instead: the status is written first, by the client.
    """
    tracking_write(MlflowClient().set_terminated, run_id, status)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        with suppress(MlflowException):  # the stack is popped and the status already stored
            mlflow.end_run(status)


@contextmanager
def run_context(
    name: str,
    tags: Mapping[str, object] | None = None,
    params: Mapping[str, Any] | BaseModel | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start a run, nested under the active run if there is one, and always end it.

    A parent run (`benchmark run`) is given the tags `system`, `dataset`, `backbone`, `beta` and
    `schedule` by its caller; `git_sha` is added to every top-level run, the owner tags
    (`lifecycle.owner_tags`) to every run. `params` (the fully resolved config) are logged
    flattened (`flatten_params`) and whole as `config.yaml`. Ends FINISHED, FAILED on an exception
    (re-raised), KILLED on Ctrl-C, SIGTERM or SystemExit; the heartbeat runs while it is open.
    """
    parent = mlflow.active_run()
    if parent is None and _experiment_id is None:
        raise RuntimeError("call tracking_setup(config) before run_context")
    all_tags = {key: str(value) for key, value in (tags or {}).items()} | owner_tags()
    if parent is None:
        all_tags.setdefault("git_sha", git_sha())
    # mlflow would put a nested run in the *current* experiment, not its parent's: name it.
    experiment_id = parent.info.experiment_id if parent else _experiment_id
    run_id, status = None, KILLED  # KILLED unless the block finishes or raises an Exception
    try:
        with signals_held():  # a signal during the start is raised once `run_id` is known
            run = tracking_write(
                mlflow.start_run,
                experiment_id=experiment_id,
                run_name=name,
                nested=parent is not None,
                tags=all_tags,
            )
            run_id = run.info.run_id
            heartbeat.add(run_id, mlflow.get_tracking_uri(), (_runs_config or RunsConfig()).heartbeat_s)
        if params is not None:
            tracking_write(mlflow.log_params, flatten_params(params))
            log_yaml(params, "config.yaml")
        yield run
        status = _failed_children.get(run_id, FINISHED)
    except Exception:
        status = FAILED
        raise
    finally:
        if run_id is not None:
            with signals_held():
                _finish(run_id, status, parent, name)


def _finish(run_id: str, status: str, parent: mlflow.ActiveRun | None, name: str) -> None:
    """End one run of `run_context` and tell its parent how it ended."""
    heartbeat.discard(run_id)
    _end(run_id, status)
    _failed_children.pop(run_id, None)
    if status == KILLED:
        killed_runs.append(run_id)
    if parent is not None and status != FINISHED:
        # KILLED outranks FAILED when several children of one parent end badly.
        if _failed_children.get(parent.info.run_id) != KILLED:
            _failed_children[parent.info.run_id] = status
        tracking_write(MlflowClient().set_tag, parent.info.run_id, "failed_child", name)


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


DatasetContext = Literal["training", "validation", "test"]


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
    from benchmark.track.environment import environment_record  # imports torch and deepspeed

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


def find_runs(
    system: str | None = None,
    dataset: str | None = None,
    status: str | None = FINISHED,
    config: MlflowConfig | None = None,
) -> list[Run]:
    """The latest top-level run per (system, dataset, backbone, beta), newest first.

    A rerun of the same configuration supersedes the earlier one, so leaderboards and comparisons
    never mix two runs of one table cell; `status=None` includes unfinished and failed runs.
    """
    experiment_id = tracking_setup(config or load_mlflow_config())
    clauses = [f"tags.system = '{system}'"] if system else []
    clauses += [f"tags.dataset = '{dataset}'"] if dataset else []
    clauses += [f"attributes.status = '{status}'"] if status else []
    clauses.append("tags.`mlflow.parentRunId` IS NULL")
    client = MlflowClient()
    latest: dict[tuple[str, ...], Run] = {}
    page_token = None
    while True:  # ends on the last page: mlflow returns no token then
        page = client.search_runs(
            [experiment_id],
            filter_string=" and ".join(clauses),
            order_by=["attributes.start_time DESC"],
            page_token=page_token,
        )
        for run in page:
            if "system" not in run.data.tags:  # comparison runs: they hold tests, not a system's results
                continue
            key = tuple(run.data.tags.get(tag, "") for tag in ("system", "dataset", "backbone", "beta"))
            latest.setdefault(key, run)
        page_token = page.token
        if not page_token:
            return list(latest.values())


def interrupted_run(tag: str, value: str) -> Run | None:
    """The newest top-level run with tag `tag` = `value` that ended FAILED or KILLED, or None.

    What `--resume` continues, so that the new run can link to it (tag `resumed_from`).
    """
    experiment_id = _experiment_id or tracking_setup(load_mlflow_config())
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag}` = '{value}' and tags.`mlflow.parentRunId` IS NULL",
        order_by=["attributes.start_time DESC"],
    )
    return next((run for run in runs if run.info.status in (FAILED, KILLED)), None)
