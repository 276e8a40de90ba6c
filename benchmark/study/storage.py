"""Where a study's trials live, and how a trial whose worker died is found and run again.

Storages (`--storage`): Optuna's journal file beside the MLflow store (the default; safe for the
worker processes of one machine, which SQLite is not), PostgreSQL or MySQL (workers on many
machines, with Optuna's heartbeat), or `sqlite:///PATH` (one worker process only). The journal has
no heartbeat, so this module gives it one: every trial records its owner (host, pid, process start,
as MLflow runs do in `benchmark.tracking.lifecycle`) and a heartbeat refreshed by a thread, and
`fail_stale_trials` fails a RUNNING trial whose owner is gone or silent for `stale_after_s`, then
queues it again through Optuna's `RetryHeartbeatStaleTrialCallback`, at most `max_retries` times.
`claim` serialises "count the trials, then ask for one" among the workers (a file lock beside the
journal, a PostgreSQL advisory lock), so a study stops at exactly its count. See docs/studies.md.
"""

from __future__ import annotations

import fcntl
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from benchmark.errors import BenchmarkError
from benchmark.tracking.lifecycle import HEARTBEAT, owner_gone_from, owner_tags
from benchmark.tracking.store import MlflowConfig, sqlite_path

JOURNAL = "journal:"
JOURNAL_FILE = "optuna.journal"
# An arbitrary constant: the key of the PostgreSQL advisory lock that `claim` takes.
CLAIM_LOCK_KEY = 4_721_300_813


@dataclass(frozen=True)
class StudyStorage:
    """An Optuna storage by URL: `journal:PATH`, or an SQLAlchemy URL (`postgresql://...`)."""

    url: str

    @property
    def is_journal(self) -> bool:
        return self.url.startswith(JOURNAL)

    @property
    def journal_path(self) -> Path:
        return Path(self.url.removeprefix(JOURNAL))

    @property
    def has_heartbeat(self) -> bool:
        """Whether Optuna itself records heartbeats (the RDB storages); the journal gets ours."""
        return not self.is_journal

    @property
    def multi_process(self) -> bool:
        return not self.url.startswith("sqlite")

    def display(self) -> str:
        """The URL without its password: what the study run's `optuna_storage` tag shows."""
        if self.is_journal:
            return self.url
        return make_url(self.url).render_as_string(hide_password=True)

    def open(self, heartbeat_s: int, stale_after_s: int, max_retries: int) -> BaseStorage:
        retry = retry_callback(max_retries)
        if self.is_journal:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(self.journal_path)))
        try:
            return optuna.storages.RDBStorage(
                self.url,
                heartbeat_interval=heartbeat_s,
                grace_period=stale_after_s,
                heartbeat_stale_trial_callback=retry,
                engine_kwargs={"pool_pre_ping": True},
            )
        except Exception as err:  # a bad URL, a server that does not answer, a missing driver
            raise BenchmarkError(
                f"--storage {self.display()}: cannot open the Optuna storage ({str(err).splitlines()[0]})",
                hint="check the URL, that the server runs, and its driver (pip install -e '.[studies]')",
            ) from err

    @contextmanager
    def claim(self, storage: BaseStorage) -> Iterator[None]:
        """Hold the study's claim lock (module docstring) for the block."""
        if self.is_journal:
            with open(f"{self.journal_path}.claim", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        # A study wraps its RDBStorage in Optuna's cache: the engine is the wrapped storage's.
        engine = getattr(getattr(storage, "_backend", storage), "engine", None)
        if engine is None or engine.dialect.name != "postgresql":  # one SQLite worker, or MySQL
            yield
            return
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": CLAIM_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": CLAIM_LOCK_KEY})


def retry_callback(max_retries: int) -> RetryHeartbeatStaleTrialCallback:
    """Optuna's callback that queues a failed trial again (experimental since 2.8, and stable in use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retries)


def parse_storage(url: str) -> StudyStorage:
    """`--storage`: `journal:PATH`, a `.journal` file, or an SQLAlchemy URL; anything else is refused."""
    if url.startswith(JOURNAL) or url.endswith(".journal"):
        path = Path(url.removeprefix(JOURNAL)).expanduser().resolve()
        return StudyStorage(f"{JOURNAL}{path}")
    try:
        dialect = make_url(url).get_backend_name()
    except ArgumentError as err:
        raise BenchmarkError(
            f"--storage {url!r}: not a storage URL",
            hint="use journal:PATH (one machine) or postgresql://USER:PASSWORD@HOST/DB (many machines)",
        ) from err
    if dialect not in ("postgresql", "mysql", "sqlite"):
        raise BenchmarkError(f"--storage: Optuna cannot keep a study in {dialect}")
    return StudyStorage(url)


def default_storage(config: MlflowConfig) -> StudyStorage:
    """The journal file beside the MLflow store (`mlflow.yaml`'s SQLite database or file store)."""
    uri = config.tracking_uri
    if (db := sqlite_path(uri)) is not None:
        return StudyStorage(f"{JOURNAL}{db.resolve().parent / JOURNAL_FILE}")
    if uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
        return StudyStorage(f"{JOURNAL}{folder.resolve() / JOURNAL_FILE}")
    raise BenchmarkError(
        f"MLflow logs to {uri}, a server: a study there needs a storage every worker reaches",
        hint="pass --storage postgresql://USER:PASSWORD@HOST/DB (README, 'Studies on many machines')",
    )


# ---------------------------------------------------------------------------------------------
# Trial owners, heartbeats, and trials whose worker is gone
# ---------------------------------------------------------------------------------------------


class TrialHeartbeat:
    """Marks a running trial as alive: Optuna's own heartbeat on an RDB storage, the `owner.heartbeat`
    user attribute on the journal, every `interval_s` seconds from a daemon thread."""

    def __init__(self, storage: BaseStorage, study_storage: StudyStorage, trial_id: int, interval_s: float):
        self._storage, self._trial_id, self._interval_s = storage, trial_id, interval_s
        self._native = study_storage.has_heartbeat
        self._stop = threading.Event()
        if not self._native:
            for key, value in owner_tags().items():
                storage.set_trial_user_attr(trial_id, key, value)
        self._beat()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        if self._native:
            self._storage.record_heartbeat(self._trial_id)
        else:
            self._storage.set_trial_user_attr(self._trial_id, HEARTBEAT, f"{time.time():.3f}")

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._beat()
            except Exception:  # a missed beat only matters after stale_after_s; never stop the trial
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def fail_stale_trials(
    study: optuna.Study, study_storage: StudyStorage, stale_after_s: float, max_retries: int
) -> list[FrozenTrial]:
    """Fail the RUNNING trials whose worker is gone and queue them again; returns the failed ones.

    RDB storages: Optuna's heartbeat check (`optuna.storages.fail_stale_trials`), which calls the
    storage's retry callback itself. The journal: the owner check of the module docstring.
    """
    before = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if study_storage.has_heartbeat:
        optuna.storages.fail_stale_trials(study)
        return [
            t for t in study.get_trials(deepcopy=False) if t._trial_id in before and t.state.is_finished()
        ]
    storage, retry = study._storage, retry_callback(max_retries)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = {key: str(value) for key, value in trial.user_attrs.items()}
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        if owner_gone_from(attrs, started, stale_after_s) is None:
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            continue
        frozen = storage.get_trial(trial._trial_id)
        retry(study, frozen)
        failed.append(frozen)
    return failed


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that a later, queued attempt runs again (their failures do not count)."""
    retried: set[int] = set()
    for trial in trials:
        retried.update(trial.system_attrs.get("retry_history", []))
    return retried
