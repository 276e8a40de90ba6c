"""The PostgreSQL test server: it takes SQL over TCP, and serves as storage to Optuna and MLflow."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import optuna
import pytest

# heartbeat_interval and fail_stale_trials are marked experimental; the studies rely on both.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_server_round_trips_rows_over_loopback(postgres):
    url = postgres.create_database("round_trip")
    assert url == f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/round_trip"
    connection = postgres.connect("round_trip")
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE scores (name text PRIMARY KEY, value double precision)")
            cursor.executemany("INSERT INTO scores VALUES (%s, %s)", [("wer", 0.25), ("bleu", 0.5)])
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, value FROM scores ORDER BY name")
            assert cursor.fetchall() == [("bleu", 0.5), ("wer", 0.25)]
            cursor.execute("SELECT inet_server_addr()::text")
            assert cursor.fetchone()[0].startswith("127.0.0.1")
    finally:
        connection.close()


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)


def square(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -1, 1) ** 2


def test_optuna_handles_share_one_study(postgres):
    url = postgres.create_database("optuna_study")
    study = optuna.create_study(study_name="shared", storage=rdb_storage(url), direction="minimize")
    study.optimize(square, n_trials=3)
    first = optuna.load_study(study_name="shared", storage=rdb_storage(url))
    second = optuna.load_study(study_name="shared", storage=rdb_storage(url))
    assert [t.params for t in first.trials] == [t.params for t in study.trials]
    # A trial run through one handle is seen through the other.
    first.optimize(square, n_trials=1)
    assert len(second.trials) == 4
    assert second.best_value == min(t.value for t in first.trials)


def test_optuna_fails_a_trial_whose_heartbeat_stopped(postgres):
    storage = rdb_storage(postgres.create_database("optuna_heartbeat"))
    study = optuna.create_study(study_name="stale", storage=storage)
    trial_id = storage.create_new_trial(storage.get_study_id_from_name("stale"))
    storage.record_heartbeat(trial_id)
    time.sleep(2.2)  # past grace_period: the worker is taken for dead
    optuna.storages.fail_stale_trials(study)
    assert storage.get_trial(trial_id).state == optuna.trial.TrialState.FAIL


def test_mlflow_tracks_a_run_in_postgres(postgres, tmp_path: Path):
    url = postgres.create_database("mlflow_tracking")
    mlflow.set_tracking_uri(url)
    try:
        experiment_id = mlflow.create_experiment("pg", artifact_location=tmp_path.as_uri())
        with mlflow.start_run(experiment_id=experiment_id, run_name="one") as run:
            mlflow.log_param("lr", "0.001")
            mlflow.log_metric("uar", 0.61)
        stored = mlflow.MlflowClient(url).get_run(run.info.run_id)
        assert stored.info.status == "FINISHED"
        assert stored.info.run_name == "one"
        assert stored.data.params == {"lr": "0.001"}
        assert stored.data.metrics == {"uar": 0.61}
        assert mlflow.get_experiment_by_name("pg").experiment_id == experiment_id
    finally:
        mlflow.end_run()
        mlflow.set_tracking_uri(None)
