"""Runs that always end: signals, a busy store, and runs whose owner is gone.

- A signal (SIGINT, SIGTERM): `benchmark.signals` turns it into an exception that ends every open
  run KILLED, and holds it while a tracking write (`tracking_write`) is in progress.
- A busy store (SQLite's "database is locked"): `tracking_write` retries the write with backoff.
- SIGKILL or a dead machine: every run records its owner (`owner.host`, `owner.pid`,
  `owner.process_start`) and a heartbeat (`owner.heartbeat`) that a thread refreshes, and
  `mark_stale_runs` ends FAILED (`ended_by=stale`, `stale_reason`) the RUNNING runs whose owner is
  gone. `benchmark.tracking.runs.run_context` opens every run with these tags, and
  `benchmark.tracking.store.tracking_setup` sweeps stale runs once per process and experiment.
What a user sees of all this: docs/troubleshooting.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import psutil
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

from benchmark.signals import signals_held

T = TypeVar("T")

# The owner tags of every run (module docstring).
OWNER_HOST, OWNER_PID = "owner.host", "owner.pid"
OWNER_START, HEARTBEAT = "owner.process_start", "owner.heartbeat"
RUNNING = RunStatus.to_string(RunStatus.RUNNING)
FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)
# Busy-store retries: 0.05 s doubling to 2 s between tries, for at most this long in all.
RETRY_SECONDS = 60.0
# Two starts of one process are the same process when their recorded start times agree this closely.
START_TOLERANCE_S = 1.0


def is_busy(err: BaseException) -> bool:
    """True for the store's "try again" answers: SQLite's "database is locked", and a lost race to
    register a dataset. MLflow's `log_input` looks the dataset up and inserts it when absent; two
    processes logging the same one at once (two study workers, the same fold's validation part)
    both insert, and the loser's IntegrityError means the row now exists: its retry finds it."""
    if not isinstance(err, MlflowException):
        return False
    message = str(err)
    lost_race = "IntegrityError" in message and "datasets" in message
    return err.error_code == "TEMPORARILY_UNAVAILABLE" or "database is locked" in message or lost_race


class _HideBusyTracebacks(logging.Filter):
    """MLflow logs a full traceback for every busy-store answer; a retried write needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_HideBusyTracebacks())


def tracking_write(write: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call `write(*args, **kwargs)` with signals held, retrying it while the store is busy."""
    delay, deadline = 0.05, time.monotonic() + RETRY_SECONDS
    with signals_held():
        while True:
            try:
                return write(*args, **kwargs)
            except MlflowException as err:
                if not is_busy(err) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


# --------------------------------------------------------------------------------------------
# Owners and heartbeats
# --------------------------------------------------------------------------------------------


def process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # it exists; its start time is hidden from us
        return float("nan")


def owner_tags() -> dict[str, str]:
    """Who owns a run started now: this host, this process and when it started, a first heartbeat."""
    return {
        OWNER_HOST: socket.gethostname(),
        OWNER_PID: str(os.getpid()),
        OWNER_START: f"{process_start(os.getpid()):.3f}",
        HEARTBEAT: f"{time.time():.3f}",
    }


class Heartbeat:
    """A daemon thread that refreshes `owner.heartbeat` of every open run every `interval_s` seconds.

    A failed refresh (a busy or unreachable store) is skipped and tried again next time: a missed
    beat only matters after `stale_after_s`, and training must never stop for one.
    """

    def __init__(self) -> None:
        self._runs: dict[str, str] = {}  # run id -> tracking URI
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval_s = 30.0

    def add(self, run_id: str, tracking_uri: str, interval_s: float) -> None:
        with self._lock:
            self._runs[run_id] = tracking_uri
            self.interval_s = interval_s
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="mlflow-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def _beat(self) -> None:
        while not self._wake.wait(self.interval_s):
            with self._lock:
                runs = dict(self._runs)
            now = f"{time.time():.3f}"
            for run_id, uri in runs.items():
                try:
                    MlflowClient(uri).set_tag(run_id, HEARTBEAT, now)
                except Exception:  # see the class docstring
                    continue


heartbeat = Heartbeat()


@dataclass(frozen=True)
class StaleRun:
    run_id: str
    name: str
    reason: str


def owner_gone(run: Run, stale_after_s: float, now: float | None = None) -> tuple[str, float] | None:
    """Why `run`'s owner is gone, and the last time it was known alive (epoch seconds), or None.

    A run without owner tags (written before they existed) is judged by its start time alone.
    """
    return owner_gone_from(run.data.tags, run.info.start_time / 1000, stale_after_s, now)


def owner_gone_from(
    tags: Mapping[str, str], started_s: float, stale_after_s: float, now: float | None = None
) -> tuple[str, float] | None:
    """`owner_gone` for any record of owner tags (an MLflow run's, an Optuna trial's user attributes)
    that started at `started_s` (epoch seconds)."""
    now = time.time() if now is None else now
    last_seen = float(tags.get(HEARTBEAT, started_s))
    host, pid = tags.get(OWNER_HOST), tags.get(OWNER_PID)
    if host == socket.gethostname() and pid is not None and pid.isdigit():
        started = process_start(int(pid))
        if started is None:
            return f"its process {pid} on {host} has exited", last_seen
        recorded = float(tags.get(OWNER_START, "nan"))
        if abs(started - recorded) > START_TOLERANCE_S:  # False when either is unknown (nan)
            return f"its process id {pid} on {host} now belongs to another process", last_seen
    if now - last_seen > stale_after_s:
        owner = f"{host}:{pid}" if host else "its owner (not recorded)"
        return f"no heartbeat from {owner} for {now - last_seen:.0f} s (limit {stale_after_s:g} s)", last_seen
    return None


def running_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """Every RUNNING run of the experiment, nested ones included."""
    runs: list[Run] = []
    page_token = None
    while True:  # ends on the last page: mlflow returns no token then
        page = client.search_runs(
            [experiment_id], filter_string=f"attributes.status = '{RUNNING}'", page_token=page_token
        )
        runs += page
        page_token = page.token
        if not page_token:
            return runs


def mark_stale_runs(client: MlflowClient, experiment_id: str, stale_after_s: float) -> list[StaleRun]:
    """End as FAILED (tags `ended_by=stale`, `stale_reason`) the RUNNING runs whose owner is gone.

    The end time is the owner's last heartbeat, the last moment the run is known to have been alive.
    """
    stale: list[StaleRun] = []
    for run in running_runs(client, experiment_id):  # listed first: marking changes the pages
        found = owner_gone(run, stale_after_s)
        if found is None:
            continue
        stale.append(end_stale_run(client, run, *found))
    return stale


def end_stale_run(
    client: MlflowClient,
    run: Run,
    reason: str,
    last_seen: float | None = None,
    tags: Mapping[str, str] | None = None,
) -> StaleRun:
    """End `run`, whose owner is gone, as FAILED with the tags `ended_by=stale`, `stale_reason` and
    `tags`: the one place a stale run ends. Its end time is the owner's last heartbeat if known."""
    run_id = run.info.run_id
    for key, value in {"ended_by": "stale", "stale_reason": reason, **(tags or {})}.items():
        tracking_write(client.set_tag, run_id, key, value)
    end_time = None if last_seen is None else int(last_seen * 1000)
    tracking_write(client.set_terminated, run_id, FAILED, end_time=end_time)
    return StaleRun(run_id, run.info.run_name or run_id, reason)
