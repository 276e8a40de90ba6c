"""`benchmark study` end to end on the small demo corpus with the tiny backbone: the Optuna trials,
their MLflow runs, pruning, a worker killed mid-trial, Ctrl-C, and Table 3 through the leaderboard."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from optuna.trial import TrialState

from benchmark import registry
from benchmark.cli import main
from benchmark.study.search import StudyRequest, resolve_spec, study_name
from benchmark.tracking.store import load_mlflow_config, tracking_setup

pytestmark = pytest.mark.slow

QUICK = ["--backbone", "tiny", "--epochs", "1", "--set", "decoder.max_new_tokens=8", "--no-progress"]
OBJECTIVE = "val.ser.ua"


def load(workdir: Path, name: str, trials: int | None = None, storage: str | None = None) -> optuna.Study:
    spec = resolve_spec(
        StudyRequest(
            name, trials=trials, backbone="tiny", epochs=1, overrides={"decoder": {"max_new_tokens": 8}}
        )
    )
    url = storage or f"journal:{workdir / 'mlruns' / 'optuna.journal'}"
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        backend = JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    else:
        backend = url
    return optuna.load_study(study_name=study_name(spec), storage=backend)


def all_runs(filter_string: str = "") -> list[Run]:
    """Runs of the store of the working folder's MLflow config (where the study's processes log)."""
    experiment_id = tracking_setup(load_mlflow_config())
    return MlflowClient().search_runs([experiment_id], filter_string=filter_string, max_results=1000)


def check_trials_and_runs(study: optuna.Study, trials: int) -> None:
    """No trial lost or duplicated; every complete trial has exactly one FINISHED run holding its value."""
    finished = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == trials
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in study.get_trials()]
    assert len(set(numbers)) == len(numbers)
    assert len({t.params["beta"] for t in finished}) == trials
    study_run = study.user_attrs["mlflow_run_id"]
    for trial in finished:
        runs = all_runs(f"tags.kind = 'trial' and tags.trial = '{trial.number}'")
        assert len(runs) == 1
        run = runs[0]
        assert run.data.tags["mlflow.parentRunId"] == study_run and run.data.tags["study"] == "beta"
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        if trial.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
            assert run.data.metrics[OBJECTIVE] == pytest.approx(trial.value)
        # the test part is never touched by a trial: no test metric, input or predictions
        folds = all_runs(f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        assert folds and all("val.ce" in fold.data.metrics for fold in folds)
        for logged in [run, *folds]:
            assert not [name for name in logged.data.metrics if name.startswith(("ser.", "asr.", "sed."))]
            assert "test" not in {i.tags[0].value for i in logged.inputs.dataset_inputs if i.tags}
    assert not all_runs("attributes.status = 'RUNNING'")


def test_a_study_runs_its_trials_as_runs_and_refits_the_best_on_the_test_part(workdir: Path):
    assert main(["study", "beta", "--trials", "2", *QUICK]) == 0

    study = load(workdir, "beta", trials=2)
    check_trials_and_runs(study, 2)
    client = MlflowClient()
    (study_run,) = all_runs("tags.kind = 'study'")
    tags = study_run.data.tags
    assert study_run.info.status == "FINISHED" and study_run.info.run_id == study.user_attrs["mlflow_run_id"]
    assert (tags["study"], tags["objective"], tags["optuna_study"]) == ("beta", OBJECTIVE, study.study_name)
    assert tags["optuna_storage"] == f"journal:{workdir / 'mlruns' / 'optuna.journal'}"
    plots = {Path(a.path).name for a in client.list_artifacts(study_run.info.run_id, "plots")}
    assert {"optimization_history.png", "slice_beta.png", "intermediate_values.png"} <= plots
    # intermediate values: one per epoch of the last stage (two stages of one epoch each), val.ce
    # negated (a maximising study); the first stage's (ASR alone) is logged but not reported
    trial = study.trials[0]
    (fold,) = all_runs(f"tags.`mlflow.parentRunId` = '{trial.user_attrs['mlflow_run_id']}'")
    ce = [m.value for m in client.get_metric_history(fold.info.run_id, "val.ce")]
    assert len(ce) == 2 and trial.intermediate_values == pytest.approx({1: -ce[1]})

    (refit,) = all_runs("tags.kind = 'study-best'")
    assert "mlflow.parentRunId" not in refit.data.tags and refit.info.status == "FINISHED"
    assert refit.data.tags["study_run"] == study_run.info.run_id
    assert refit.data.tags["refit_of"] == str(study.best_trial.number)
    assert float(refit.data.tags["beta"]) == pytest.approx(study.best_trial.params["beta"])
    assert refit.data.tags["validation"] == "off" and "ser.ua" in refit.data.metrics
    assert client.get_run(study_run.info.run_id).data.tags["best_run"] == refit.info.run_id

    # the same command continues the same study: it is complete, so nothing runs again
    assert main(["study", "beta", "--trials", "2", *QUICK]) == 0
    assert len(load(workdir, "beta", trials=2).trials) == 2
    assert len(all_runs("tags.kind = 'study-best'")) == 1 and len(all_runs("tags.kind = 'study'")) == 1


def test_a_pruned_trial_is_pruned_in_optuna_and_not_a_finished_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    assert main(["study", "beta", "--trials", "1", *QUICK]) == 0
    (trial,) = load(workdir, "beta", trials=1).trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    (run,) = all_runs("tags.kind = 'trial'")
    assert run.info.status == "FAILED" and run.data.tags["trial_state"] == "PRUNED"
    assert "pruned after epoch 1 of stage 'descriptor'" in run.data.tags["pruned"]
    assert not all_runs("tags.kind = 'study-best'")  # no complete trial: nothing to refit
    assert not all_runs("attributes.status = 'RUNNING'")


def start_study(workdir: Path, *args: str) -> subprocess.Popen:
    log = (workdir / "study.log").open("a")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "benchmark", "study", "beta", *args, *QUICK]
    return subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)


def running_trial(
    workdir: Path, trials: int, process: subprocess.Popen, timeout: float = 600
) -> optuna.FrozenTrial:
    """The first trial whose run has started training (its MLflow run is known), once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (workdir / "study.log").read_text()[-3000:]
        try:
            trials_now = load(workdir, "beta", trials=trials).get_trials(states=(TrialState.RUNNING,))
        except (KeyError, FileNotFoundError):  # the study is not created yet
            trials_now = []
        started = [t for t in trials_now if "mlflow_run_id" in t.user_attrs and "owner.pid" in t.user_attrs]
        if started:
            time.sleep(2.0)  # well inside its training
            return started[0]
        time.sleep(0.5)
    raise AssertionError("no trial started in time")


def test_a_worker_killed_mid_trial_fails_its_trial_which_is_run_again(workdir: Path):
    process = start_study(workdir, "--trials", "3", "--workers", "2", "--no-refit")
    victim = running_trial(workdir, 3, process)
    os.kill(int(victim.user_attrs["owner.pid"]), signal.SIGKILL)
    assert process.wait(timeout=1500) == 0, (workdir / "study.log").read_text()[-3000:]

    study = load(workdir, "beta", trials=3)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    check_trials_and_runs(study, 3)
    killed_run = MlflowClient().get_run(victim.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED" and killed_run.data.tags["trial_state"] == "FAIL"
    retry_run = MlflowClient().get_run(retry.user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["retry_of"] == str(victim.number)


def test_ctrl_c_leaves_nothing_running_and_the_same_command_continues(workdir: Path):
    process = start_study(workdir, "--trials", "1", "--no-refit")
    victim = running_trial(workdir, 1, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 130
    study = load(workdir, "beta", trials=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert not all_runs("attributes.status = 'RUNNING'")
    assert MlflowClient().get_run(victim.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    (study_run,) = all_runs("tags.kind = 'study'")
    assert study_run.info.status == "KILLED"

    assert main(["study", "beta", "--trials", "1", "--no-refit", *QUICK]) == 0
    study = load(workdir, "beta", trials=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].system_attrs["failed_trial"] == 0
    (again,) = all_runs("tags.kind = 'study'")  # the same study run, reopened and finished
    assert again.info.run_id == study_run.info.run_id and again.info.status == "FINISHED"


def test_table3_shortened_fills_table_3_through_the_leaderboard(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture
):
    """Three of the eight rows (one-stage, fd-ser-asr and full at 1e-4), each trial refit on the test part."""
    data = yaml.safe_load(registry.find("studies", "table3").read_text())
    data["fixed"] = [data["fixed"][0], data["fixed"][2], data["fixed"][3]]
    root = tmp_path_factory.mktemp("registry")
    (root / "studies").mkdir()
    (root / "studies" / "table3.yaml").write_text(yaml.safe_dump(data))
    registry.add_registry(root)
    try:
        assert main(["study", "table3", *QUICK]) == 0
    finally:
        registry._extra_roots.remove(root)
    refits = [*all_runs("tags.kind = 'study-best'"), *all_runs("tags.kind = 'study-refit'")]
    assert sorted((r.data.tags["system"], float(r.data.tags["beta"])) for r in refits) == sorted(
        [("one-stage", 1.0), ("fd-ser-asr", 1e-3), ("full", 1e-4)]
    )
    capsys.readouterr()
    assert main(["leaderboard", "--table", "ablation", "--study", "table3", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    measured = {row["ID"]: row for row in rows if row["source"] == "measured"}
    assert sorted(measured) == [str(n) for n in range(1, 9)]  # Table 3's eight rows, in its layout
    assert [measured[n]["System"] for n in "12345678"] == [
        "one-stage",
        "two-stage",
        "fd-ser-asr",
        *["full"] * 5,
    ]
    assert {n for n, row in measured.items() if row["DEMO UA% ↑"] != "–"} == {"1", "3", "4"}
    assert measured["3"]["DEMO B@4 ↑"] == "–" and measured["4"]["DEMO B@4 ↑"] != "–"  # row 3: no descriptor


def test_two_workers_share_a_study_on_postgresql(
    workdir: Path, postgres, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
):
    """The scale-out path on loopback: MLflow and the Optuna study on one PostgreSQL server."""
    tracking, storage = postgres.create_database("mlflow_two"), postgres.create_database("optuna_two")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    process = start_study(workdir, "--trials", "3", "--workers", "2", "--no-refit", "--storage", storage)
    assert process.wait(timeout=1500) == 0, (workdir / "study.log").read_text()[-3000:]
    request.addfinalizer(lambda: mlflow.set_tracking_uri(None))  # later tests find their own store
    study = load(workdir, "beta", trials=3, storage=storage)
    check_trials_and_runs(study, 3)
    owners = {t.user_attrs.get("owner.pid") for t in study.trials}
    assert owners == {None}  # an RDB storage keeps Optuna's own heartbeat, not ours
    (study_run,) = all_runs("tags.kind = 'study'")
    assert study_run.data.tags["optuna_storage"] == storage
    workers = {
        MlflowClient().get_run(t.user_attrs["mlflow_run_id"]).data.tags["owner.pid"] for t in study.trials
    }
    assert len(workers) == 2  # both worker processes took trials
