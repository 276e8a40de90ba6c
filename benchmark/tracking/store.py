"""Where runs go: the MLflow config (`mlflow.yaml`) and `tracking_setup` (docs/architecture.md).

- `load_mlflow_config` reads `mlflow.yaml` (./mlflow.yaml in the working directory first, then the
  one at the root of the clone; built-in defaults equal to that file otherwise, so an installed
  wheel needs no copy of it). `MLFLOW_TRACKING_URI` and `BENCHMARK_MLFLOW_EXPERIMENT` override it.
  A relative sqlite file or artifact folder is resolved against the working directory. With a
  tracking server (`http://`, `https://`) a plain artifact folder is dropped: runs send their files
  to the server (`--serve-artifacts`), so that every node and the UI find them (docs/tracking.md).
- `tracking_setup` points mlflow at the store and creates the experiment; every command calls it
  once, before it starts or searches runs (`benchmark.tracking.runs`, `benchmark.tracking.lookup`),
  which then work in that experiment (`current_experiment`). It also marks as FAILED the runs whose
  owner is gone (`benchmark.tracking.lifecycle`), once per process and experiment, so every command
  that reads or writes runs starts from true statuses.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Experiment as MlflowExperiment
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from pydantic import Field, model_validator

from benchmark.config import StrictModel, load_yaml, validate
from benchmark.errors import BenchmarkError
from benchmark.tracking.lifecycle import StaleRun, mark_stale_runs, tracking_write

REPO_CONFIG = Path(__file__).resolve().parents[2] / "mlflow.yaml"

# Without this experiment tag MLflow 3's UI opens an experiment on its (empty) GenAI traces overview.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


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
    # Seconds between samples of MLflow's system metrics (CPU, memory, GPU); null: none logged.
    system_metrics_s: float | None = Field(10.0, gt=0)

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


@dataclass(frozen=True)
class Experiment:
    """What the last `tracking_setup` set up: where top-level runs go, how their heartbeat runs."""

    experiment_id: str
    runs: RunsConfig


# The experiment of the last tracking_setup: top-level runs go there, never to mlflow's "Default".
_current: Experiment | None = None
# (tracking URI, experiment id) pairs already swept for stale runs by this process.
_swept: set[tuple[str, str]] = set()


def _is_uri(location: str) -> bool:
    """True for `s3://…`, `file:///…`, `mlflow-artifacts:/…`; False for a plain (Windows) path."""
    return len(urlparse(location).scheme) > 1


def is_tracking_server(tracking_uri: str) -> bool:
    """True for a tracking server's URI (`http://`, `https://`), False for a database or folder."""
    return urlparse(tracking_uri).scheme in ("http", "https")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for any other store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def _resolve(config: MlflowConfig, cwd: Path) -> MlflowConfig:
    """Make a relative sqlite file and artifact folder absolute against `cwd`; a server keeps its own.

    Runs record absolute artifact URIs, so a relative path would otherwise mean a different place
    for every working directory a command or the UI is started from. A plain folder given with a
    tracking server (the default folder, when only MLFLOW_TRACKING_URI names the server) would be
    a folder of whichever node made the experiment: the server's own artifact store is used instead.
    """
    update: dict[str, Any] = {}
    db = sqlite_path(config.tracking_uri)
    if db is not None and not db.is_absolute():
        query = config.tracking_uri.partition("?")[2]
        update["tracking_uri"] = f"sqlite:///{(cwd / db).resolve()}" + (f"?{query}" if query else "")
    location = config.artifact_location
    if location is not None and not _is_uri(location):
        if is_tracking_server(config.tracking_uri):
            update["artifact_location"] = None
        elif not Path(location).is_absolute():
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


def _experiment_by_name(client: MlflowClient, config: MlflowConfig) -> MlflowExperiment | None:
    """The first request to the store; a tracking server that does not answer is one clear error."""
    try:
        return client.get_experiment_by_name(config.experiment)
    except MlflowException as err:
        if not is_tracking_server(config.tracking_uri):
            raise
        raise BenchmarkError(
            f"the MLflow tracking server {config.tracking_uri} did not answer: {str(err).splitlines()[0]}",
            hint="start it (docs/tracking.md), or point MLFLOW_TRACKING_URI at one that runs",
        ) from err


def tracking_setup(config: MlflowConfig) -> str:
    """Point mlflow at the store, create folders and the experiment if absent; returns its id.

    The first call of a process for an experiment also marks its stale runs FAILED (module
    docstring), and says so on standard error.
    """
    if (db := sqlite_path(config.tracking_uri)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    if config.artifact_location and not _is_uri(config.artifact_location):
        Path(config.artifact_location).mkdir(parents=True, exist_ok=True)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(config.tracking_uri)
    # mlflow also exports the URI as MLFLOW_TRACKING_URI, which `load_mlflow_config` reads as the
    # user's override: a later command of this process in another folder would then track into
    # this folder's store. The environment is left as the user set it.
    if user_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_uri
    with _first_open_lock(db):
        client = MlflowClient()
        experiment = _experiment_by_name(client, config)
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
    global _current
    _current = Experiment(experiment_id, config.runs)
    mlflow.set_experiment(experiment_id=experiment_id)  # for mlflow's own fluent calls and integrations
    if (config.tracking_uri, experiment_id) not in _swept:
        _swept.add((config.tracking_uri, experiment_id))
        report_stale(mark_stale_runs(client, experiment_id, config.runs.stale_after_s))
    return experiment_id


def current_experiment() -> Experiment | None:
    """The experiment of the last `tracking_setup` of this process, or None before the first."""
    return _current


def report_stale(stale: list[StaleRun]) -> None:
    """One line per run marked stale, on standard error (the tables of a command go to stdout)."""
    for run in stale:
        print(f"marked run {run.run_id} ({run.name}) FAILED: {run.reason}", file=sys.stderr)
