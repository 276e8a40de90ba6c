"""Study specs, storages and the trial bookkeeping of `benchmark study`, without training anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from benchmark import registry
from benchmark.errors import BenchmarkError
from benchmark.leaderboard.published import load_published
from benchmark.study.search import StudyRequest, TrialObserver, counted, resolve_spec, study_name
from benchmark.study.storage import (
    StudyStorage,
    TrialHeartbeat,
    default_storage,
    fail_stale_trials,
    parse_storage,
)
from benchmark.study.workers import worker_command
from benchmark.tracking.lifecycle import owner_tags
from benchmark.tracking.store import MlflowConfig


def write_study(root: Path, **changes) -> Path:
    data = yaml.safe_load(registry.find("studies", "beta").read_text())
    data.update(changes)
    (root / "studies").mkdir(parents=True, exist_ok=True)
    path = root / "studies" / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_studies_load_and_their_objectives_are_validation_metrics():
    for name in registry.entries("studies"):
        spec = registry.load_study(name)
        assert spec.objective.metric.startswith("val.")
        assert spec.pruner.metric.startswith("val.")
    beta = registry.load_study("beta")
    assert (beta.system, beta.n_trials, beta.sampler.kind, beta.pruner.kind) == ("full", 12, "tpe", "median")
    assert (beta.params["beta"].low, beta.params["beta"].high, beta.params["beta"].log) == (1e-4, 1.0, True)


def test_table3_queues_the_papers_eight_rows_in_order():
    spec = registry.load_study("table3")
    table = load_published().tables["ablation"]
    rows = [row for group in table.groups for row in group.rows]
    assert [(r["system"], r["beta"]) for r in spec.fixed] == [(row.ours, row.beta) for row in rows]
    assert spec.sampler.kind == "queue" and spec.n_trials == 8 and spec.refit == "every"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"objective": {"metric": "ser.ua", "direction": "maximize"}}, "not a validation metric"),
        ({"pruner": {"kind": "median", "metric": "asr.wer"}}, "not a validation metric"),
        ({"params": {"beta": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}, "log-uniform"),
        ({"params": {"beta": {"type": "categorical"}}}, "choices"),
        ({"fixed": [{"beta": 5.0}]}, "outside its search space"),
        ({"fixed": [{"lr": 1e-3}]}, "just the params"),
        ({"sampler": {"kind": "queue"}, "trials": None}, "'queue' sampler runs the 'fixed' trials"),
        ({"trials": None}, "'trials' is needed"),
        ({"samplr": {"kind": "tpe"}}, "samplr"),
    ],
)
def test_a_bad_spec_names_its_file_and_field(tmp_path: Path, changes: dict, message: str):
    path = write_study(tmp_path, name="mine", **changes)
    registry.add_registry(tmp_path)
    try:
        with pytest.raises(BenchmarkError) as err:
            registry.load_study("mine")
    finally:
        registry._extra_roots.remove(tmp_path)
    assert str(path) in err.value.message and message in err.value.message
    field = next(iter(changes))
    if field not in ("sampler", "trials"):  # checks across fields name the fields in their message
        assert f"field '{field}" in err.value.message


def test_unknown_system_of_a_study_is_refused(tmp_path: Path):
    write_study(tmp_path, name="mine", system="fulll")
    registry.add_registry(tmp_path)
    try:
        with pytest.raises(BenchmarkError, match="unknown system 'fulll'"):
            registry.load_study("mine")
    finally:
        registry._extra_roots.remove(tmp_path)


def test_a_trial_of_several_seeds_reports_each_ones_last_stage_after_the_other():
    spec, system = registry.load_study("beta"), registry.load_system("full")
    earlier = sum(stage.epochs for stage in system.stages[:-1])
    last = system.stages[-1].epochs
    assert earlier and last > 1  # the schedule this test is about: stages before the last
    trial = optuna.create_study(direction=spec.objective.direction).ask()
    observer = TrialObserver(trial, spec)
    observer.started("run-id", system)
    sign = 1.0 if spec.pruner.direction == spec.objective.direction else -1.0
    for event in range(2 * (earlier + last)):  # two seeds' trainings, each every stage again
        observer.validated({spec.pruner.metric: float(event), "val.other": -1.0})
        observer.validated({"val.other": -1.0})  # without the pruner's metric: not an epoch
    reported = trial.study._storage.get_trial(trial._trial_id).intermediate_values
    first = [float(earlier + k) for k in range(last)]
    second = [float(2 * earlier + last + k) for k in range(last)]
    assert reported == {step + 1: sign * value for step, value in enumerate(first + second)}


def test_the_command_line_makes_another_study_except_for_the_trial_count():
    base = resolve_spec(StudyRequest("beta"))
    assert study_name(resolve_spec(StudyRequest("beta", trials=3))) == study_name(base)
    for changed in (
        StudyRequest("beta", epochs=1),
        StudyRequest("beta", backbone="tiny"),
        StudyRequest("beta", overrides={"decoder": {"max_new_tokens": 8}}),
    ):
        assert study_name(resolve_spec(changed)) != study_name(base)
    with pytest.raises(BenchmarkError, match="drop --trials"):
        resolve_spec(StudyRequest("table3", trials=3))


def test_a_worker_is_started_with_the_same_study_options():
    request = StudyRequest(
        "beta", storage="journal:/x/optuna.journal", backbone="tiny", epochs=1, trials=3,
        overrides={"decoder": {"max_new_tokens": 8}}, progress=False,
    )  # fmt: skip
    command = worker_command(request)
    assert command[:3] == [sys.executable, "-m", "benchmark"]
    tail = command[command.index("study") :]
    assert tail[:5] == ["study", "beta", "--worker", "--storage", "journal:/x/optuna.journal"]
    assert "--set" in tail and "decoder.max_new_tokens=8" in tail and "--no-progress" in tail
    assert tail[tail.index("--epochs") + 1] == "1" and tail[tail.index("--backbone") + 1] == "tiny"


def test_storage_urls(tmp_path: Path):
    journal = parse_storage(f"journal:{tmp_path}/s.journal")
    assert journal.is_journal and journal.journal_path == tmp_path / "s.journal" and journal.multi_process
    assert parse_storage(str(tmp_path / "t.journal")).url == f"journal:{tmp_path / 't.journal'}"
    pg = parse_storage("postgresql://optuna:secret@db.example.org:5432/studies")
    assert pg.display() == "postgresql://optuna:***@db.example.org:5432/studies" and pg.has_heartbeat
    assert not parse_storage("sqlite:///x.db").multi_process
    with pytest.raises(BenchmarkError, match="not a storage URL"):
        parse_storage("nonsense")
    with pytest.raises(BenchmarkError, match="cannot keep a study in mssql"):
        parse_storage("mssql://host/db")
    beside = default_storage(MlflowConfig(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert beside.url == f"journal:{tmp_path / 'mlruns' / 'optuna.journal'}"
    with pytest.raises(BenchmarkError, match="a server"):
        default_storage(MlflowConfig(tracking_uri="http://127.0.0.1:5000"))


def journal_study(tmp_path: Path) -> tuple[optuna.Study, StudyStorage]:
    storage = parse_storage(f"journal:{tmp_path}/optuna.journal")
    study = optuna.create_study(study_name="s", storage=storage.open(30, 600, max_retries=2))
    return study, storage


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_journal_trial_whose_worker_died_is_failed_and_queued_again(tmp_path: Path):
    study, storage = journal_study(tmp_path)
    alive = study.ask()
    TrialHeartbeat(study._storage, storage, alive._trial_id, 30).stop()  # owned by this process
    orphan = study.ask()
    trial = study.ask()
    for key, value in {**owner_tags(), "owner.pid": str(dead_pid())}.items():
        study._storage.set_trial_user_attr(orphan._trial_id, key, value)
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 0.5)

    failed = fail_stale_trials(study, storage, stale_after_s=600, max_retries=2)

    assert [t.number for t in failed] == [orphan.number]
    trials = study.get_trials()
    assert trials[alive.number].state == TrialState.RUNNING
    assert trials[orphan.number].state == TrialState.FAIL
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == orphan.number
    assert counted(trials) == 3  # the alive, the complete and the queued retry; not the failed attempt
    assert fail_stale_trials(study, storage, stale_after_s=600, max_retries=2) == []


def test_a_silent_trial_of_another_host_is_stale_after_the_limit(tmp_path: Path):
    study, storage = journal_study(tmp_path)
    trial = study.ask()
    tags = {**owner_tags(), "owner.host": "elsewhere", "owner.heartbeat": "1000.0"}
    for key, value in tags.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    assert [t.number for t in fail_stale_trials(study, storage, 600, max_retries=0)] == [trial.number]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]  # max_retries=0: not queued again


def test_the_claim_lock_is_exclusive_between_processes(tmp_path: Path):
    study, storage = journal_study(tmp_path)
    probe = (
        "import fcntl, sys; f = open(sys.argv[1], 'a');\n"
        "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
        "except BlockingIOError:\n    print('held')"
    )
    lock = f"{storage.journal_path}.claim"

    def other_process() -> str:
        return subprocess.run(
            [sys.executable, "-c", probe, lock], capture_output=True, text=True
        ).stdout.strip()

    with storage.claim(study._storage):
        assert other_process() == "held"
    assert other_process() == "free"


def test_the_claim_lock_is_exclusive_on_postgresql(postgres):
    """The lock is taken on the server even though a study wraps its RDBStorage in Optuna's cache:
    without it, two workers that finish at once both count too few trials and both ask one more."""
    from sqlalchemy import create_engine, text

    from benchmark.study.storage import CLAIM_LOCK_KEY, parse_storage

    url = postgres.create_database("claim_lock")
    storage = parse_storage(url)
    study = optuna.create_study(study_name="claim", storage=storage.open(60, 600, 0))
    probe = create_engine(url)

    def other_session() -> str:
        with probe.connect() as connection:
            free = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": CLAIM_LOCK_KEY}).scalar()
            if free:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": CLAIM_LOCK_KEY})
        return "free" if free else "held"

    with storage.claim(study._storage):
        assert other_session() == "held"
    assert other_session() == "free"
    probe.dispose()


@pytest.mark.parametrize(
    ("values", "complete", "refits", "said"),
    [
        ([0.5, None], True, {0: "r0"}, "refit of trial 0 on the test part: MLflow run r0"),
        ([0.5, None], True, {}, "no refit yet: the same command without --no-refit"),
        ([None, None], True, {}, "no trial completed (all pruned or failed): nothing to refit"),
        ([0.5], False, {}, "the study is short of its 12 trials"),
    ],
)
def test_the_study_summary_says_what_was_refit(values, complete, refits, said, capsys, tmp_path: Path):
    from benchmark.console import print_study
    from benchmark.study.coordinator import StudySummary

    study = optuna.create_study(direction="maximize")
    distribution = {"beta": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    for value in values:
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(params={"beta": 0.01}, distributions=distribution,
                                                  value=value, state=state))  # fmt: skip
    storage = parse_storage(f"journal:{tmp_path / 'study.journal'}")
    print_study(StudySummary(resolve_spec(StudyRequest("beta")), study, storage, "run", refits, complete))
    out = capsys.readouterr().out
    assert said in out
    assert ("nothing to refit" in out) == (said.startswith("no trial completed"))


def test_workers_on_one_machine_share_its_cores(monkeypatch: pytest.MonkeyPatch):
    from benchmark.study.workers import worker_environment

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert worker_environment(2)["OMP_NUM_THREADS"] == "4" and worker_environment(3)["MKL_NUM_THREADS"] == "2"
    assert worker_environment(16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # the user's choice wins
    assert worker_environment(2)["OMP_NUM_THREADS"] == "6" and "MKL_NUM_THREADS" not in worker_environment(2)
