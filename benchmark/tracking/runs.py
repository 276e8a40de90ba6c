"""Opening and ending MLflow runs: `run_context`, the one way a command starts a run.

`run_context` opens a run (a parent run in the experiment of `store.tracking_setup`, or a nested
one under the active run) and guarantees that it ends FINISHED, FAILED (an exception, re-raised)
or KILLED (Ctrl-C, SIGTERM): nothing stays RUNNING and a crashed run is never shown as FINISHED.
A parent whose nested run failed ends FAILED too, even when the parent's code caught the
exception and went on. Every run records its owner and a heartbeat (`benchmark.tracking.lifecycle`),
and every write goes through `lifecycle.tracking_write`: retried while the store is busy, and never
cut in half by a signal. Every run of `run_context` also logs MLflow's system metrics (`system/*`:
CPU, memory, disk, network, GPU where there is one) every `runs.system_metrics_s` of `mlflow.yaml`;
MLflow's monitor thread ends with the run (`mlflow.end_run`).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from benchmark.signals import killed_runs, signals_held
from benchmark.tracking.lifecycle import (
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    heartbeat,
    owner_tags,
    tracking_write,
)
from benchmark.tracking.log import log_config
from benchmark.tracking.store import RunsConfig, current_experiment

# Parent run id -> the status of a nested run that did not finish (read when the parent ends).
_failed_children: dict[str, str] = {}
# MLflow's system-metrics monitor logs four INFO lines per run (start, no GPU, stop, stopped).
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


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


def _end(run_id: str, status: str) -> None:
    """Store the run's final status (retried while the store is busy), then pop mlflow's run stack.

    mlflow's own `end_run` pops its stack *before* it writes, so a failed write there could not be
    retried without ending the parent instead: the status is written first, by the client. Then
    `end_run` stops the run's system-metrics monitor (joined, its last samples flushed); were its
    own write to fail, the monitor would still stop at its next sample, seeing the run ended.
    """
    tracking_write(MlflowClient().set_terminated, run_id, status)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        with suppress(MlflowException):  # the stack is popped and the status already stored
            mlflow.end_run(status)


@contextmanager
def _sampling_interval(seconds: float | None) -> Iterator[None]:
    """Give the system-metrics monitor that `mlflow.start_run` makes `seconds` between samples.

    MLflow's monitor reads its interval from MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL alone, when
    it is made: the variable is set for the start of the run and removed after, so that it never
    looks like the user's own setting; an interval the user exported wins.
    """
    if seconds is None or MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.defined:
        yield
        return
    MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.set(seconds)
    try:
        yield
    finally:
        MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.unset()


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
    flattened and whole as `config.yaml` (`log.log_config`). Ends FINISHED, FAILED on an exception
    (re-raised), KILLED on Ctrl-C, SIGTERM or SystemExit; the heartbeat and the system metrics
    (module docstring) run while it is open.
    """
    parent = mlflow.active_run()
    experiment = current_experiment()
    if parent is None and experiment is None:
        raise RuntimeError("call tracking_setup(config) before run_context")
    all_tags = {key: str(value) for key, value in (tags or {}).items()} | owner_tags()
    if parent is None:
        all_tags.setdefault("git_sha", git_sha())
    # mlflow would put a nested run in the *current* experiment, not its parent's: name it.
    experiment_id = parent.info.experiment_id if parent else experiment.experiment_id
    runs = experiment.runs if experiment else RunsConfig()
    run_id, status = None, KILLED  # KILLED unless the block finishes or raises an Exception
    try:
        # a signal during the start is raised once `run_id` is known
        with signals_held(), _sampling_interval(runs.system_metrics_s):
            run = tracking_write(
                mlflow.start_run,
                experiment_id=experiment_id,
                run_name=name,
                nested=parent is not None,
                tags=all_tags,
                log_system_metrics=runs.system_metrics_s is not None,
            )
            run_id = run.info.run_id
            heartbeat.add(run_id, mlflow.get_tracking_uri(), runs.heartbeat_s)
        if params is not None:
            log_config(params)
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


@contextmanager
def held_run(name: str, tags: Mapping[str, object], run_id: str | None = None) -> Iterator[str]:
    """Open a top-level run (or reopen `run_id`) without making it the active run, and always end it.

    A study's run is held this way: its trials, in this process or in worker processes on other
    machines, name it as their parent by the `mlflow.parentRunId` tag rather than by nesting, so
    a pruned or failed trial does not fail the study (as a failed nested run fails its parent in
    `run_context`). Ends like `run_context`: FINISHED, FAILED on an exception, KILLED on a stop.
    It logs no system metrics: its trials log their own, and it may stay open for days.
    """
    experiment = current_experiment()
    if experiment is None:
        raise RuntimeError("call tracking_setup(config) before held_run")
    client = MlflowClient()
    all_tags = {key: str(value) for key, value in tags.items()} | owner_tags()
    status = KILLED
    with signals_held():
        if run_id is None:
            all_tags.setdefault("git_sha", git_sha())
            run = tracking_write(client.create_run, experiment.experiment_id, tags=all_tags, run_name=name)
            run_id = run.info.run_id
        else:
            tracking_write(client.update_run, run_id, status=RUNNING)
            for key, value in all_tags.items():
                tracking_write(client.set_tag, run_id, key, value)
        heartbeat.add(run_id, mlflow.get_tracking_uri(), experiment.runs.heartbeat_s)
    try:
        yield run_id
        status = FINISHED
    except Exception:
        status = FAILED
        raise
    finally:
        with signals_held():
            heartbeat.discard(run_id)
            tracking_write(client.set_terminated, run_id, status)
            if status == KILLED:
                killed_runs.append(run_id)
