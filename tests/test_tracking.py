"""MLflow tracking: config, run states against the store, artifacts, records, and the UI server.

Creating an MLflow SQLite database runs its migrations (seconds), so the tests share one store per
module and isolate themselves by experiment name and working directory instead.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow_server import free_port, search_runs, serving

from benchmark.config import load_yaml, validate
from benchmark.data.records import PredictionRecord, read_records, write_records
from benchmark.errors import BenchmarkError
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.log import (
    PARAM_LIMIT,
    TRUNCATED,
    flatten_params,
    log_environment,
    log_figure,
    log_json,
    log_metrics,
    log_predictions,
)
from benchmark.tracking.lookup import find_runs
from benchmark.tracking.runs import run_context
from benchmark.tracking.store import REPO_CONFIG, MlflowConfig, RunsConfig, load_mlflow_config, tracking_setup
from benchmark.workflows.ui import ui_command

CONFIG = {
    "name": "full",
    "beta": 1e-4,
    "decoder": {"lora_r": 8, "lora_target_modules": ["q_proj", "v_proj"]},
    "stages": [{"name": "content", "lr": 2e-4}, {"name": "descriptor", "lr": 2e-5}],
    "notes": "x" * 7000,
}
PARENT_TAGS = {
    "system": "full",
    "dataset": "demo",
    "backbone": "tiny",
    "beta": 1e-4,
    "schedule": "alternating",
}


def record(utt: str, fold: str | None = "g1") -> PredictionRecord:
    return PredictionRecord(
        id=utt,
        ref_emotion="angry",
        hyp_emotion="happy",
        ref_transcript="hello there",
        hyp_transcript="hello",
        ref_descriptor="a loud male voice",
        hyp_descriptor=None,
        raw_output="Transcript: hello\nEmotion: happy",
        fold=fold,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow_store') / 'mlflow.db'}"


@pytest.fixture
def tracked(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[MlflowConfig]:
    """The shared store, an experiment of this test's own, artifacts under its tmp directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("BENCHMARK_MLFLOW_EXPERIMENT", f"test-{request.node.name}")
    config = load_mlflow_config()
    tracking_setup(config)
    yield config
    while mlflow.active_run() is not None:  # never leak a run into the next test
        mlflow.end_run()


def status_of(run_id: str) -> str:
    return MlflowClient().get_run(run_id).info.status


def test_config_defaults_match_file_and_resolve_against_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BENCHMARK_MLFLOW_EXPERIMENT", raising=False)
    assert validate(MlflowConfig, load_yaml(REPO_CONFIG), "mlflow.yaml") == MlflowConfig()
    config = load_mlflow_config()
    cwd = tmp_path.resolve()
    assert config.tracking_uri == f"sqlite:///{cwd}/mlruns/mlflow.db"
    assert config.artifact_location == str(cwd / "mlruns" / "artifacts")
    assert (config.experiment, config.ui.host, config.ui.port) == ("explainable-ser", "127.0.0.1", 5000)
    assert ui_command(config, port=5123)[-5:] == ["127.0.0.1", "--port", "5123", "--workers", "1"]


def test_config_file_in_cwd_and_environment_override(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.yaml").write_text(
        "experiment: mine\nartifact_location: s3://bucket/x\nui:\n  port: 5050\n"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BENCHMARK_MLFLOW_EXPERIMENT", raising=False)
    config = load_mlflow_config()
    assert (config.experiment, config.artifact_location, config.ui.port) == ("mine", "s3://bucket/x", 5050)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/db.sqlite")
    monkeypatch.setenv("BENCHMARK_MLFLOW_EXPERIMENT", "other")
    config = load_mlflow_config()
    assert (config.tracking_uri, config.experiment) == ("sqlite:////abs/db.sqlite", "other")


def test_a_tracking_server_keeps_the_files_of_the_runs(tmp_path: Path, monkeypatch) -> None:
    """A plain folder would be the folder of whichever node made the experiment; a URI is kept."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.org:5000")
    assert load_mlflow_config().artifact_location is None  # the file's mlruns/artifacts is dropped
    (tmp_path / "mlflow.yaml").write_text("artifact_location: file:///shared/mlartifacts\n")
    assert load_mlflow_config().artifact_location == "file:///shared/mlartifacts"


def test_a_tracking_server_that_does_not_answer_is_one_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(BenchmarkError, match=r"tracking server http://127\.0\.0\.1:\d+ did not answer: API"):
        tracking_setup(load_mlflow_config())


def test_each_command_tracks_into_the_store_of_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; read back as the user's override, it
    sent a later command of the same process, in another folder, to the first folder's store."""
    stores = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        tracking_setup(load_mlflow_config())
        stores.append(mlflow.get_tracking_uri())
        assert "MLFLOW_TRACKING_URI" not in os.environ  # the environment stays as the user set it
    assert stores == [f"sqlite:///{tmp_path / n / 'mlruns' / 'mlflow.db'}" for n in ("first", "second")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mine.db'}")
    tracking_setup(load_mlflow_config())
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mine.db'}"  # the user's, kept


def test_config_bad_field_names_file_and_field(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.yaml").write_text("ui:\n  prot: 5000\n")
    with pytest.raises(BenchmarkError, match=r"mlflow\.yaml: field 'ui\.prot'"):
        load_mlflow_config()
    (tmp_path / "mlflow.yaml").write_text("ui:\n  port: 99999\n")
    with pytest.raises(BenchmarkError, match=r"field 'ui\.port'"):
        load_mlflow_config()


def test_flatten_params_dotted_and_truncated() -> None:
    flat = flatten_params(CONFIG)
    assert flat["decoder.lora_r"] == "8"
    assert flat["decoder.lora_target_modules"] == '["q_proj", "v_proj"]'
    assert flat["stages.1.lr"] == "2e-05"
    assert len(flat["notes"]) == PARAM_LIMIT and flat["notes"].endswith(TRUNCATED)


def test_parent_and_nested_runs_finish_with_params_tags_artifacts(tracked: MlflowConfig, monkeypatch) -> None:
    monkeypatch.setattr(
        "benchmark.environment.environment_record", lambda: {"checks": [], "torch_threads": 1}
    )
    with run_context("full-demo", tags=PARENT_TAGS, params=CONFIG) as parent:
        log_environment()
        figure = Figure()  # no pyplot: no GUI backend, nothing global to close
        figure.subplots().plot([0, 1])
        log_figure(figure, "confusion_matrix.png")
        children = []
        for fold in ("g1", "g2"):
            with run_context(f"fold-{fold}", tags={"fold": fold}) as child:
                for step in range(3):
                    log_metrics({"train.loss": 1.0 / (step + 1), "train.kl.descriptor": None}, step=step)
                log_predictions([record("a", fold), record("b", fold)], "test")
                children.append(child.info.run_id)
        log_json({"ser.ua": 0.5}, "summary.json")

    client = MlflowClient()
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["decoder.lora_r"] == "8" and run.data.params["stages.0.name"] == "content"
    assert {k: run.data.tags[k] for k in PARENT_TAGS} == {k: str(v) for k, v in PARENT_TAGS.items()}
    assert run.data.tags["git_sha"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "environment.json", "confusion_matrix.png", "summary.json"} <= names
    logged = load_yaml(
        Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.yaml"))
    )
    assert logged["notes"] == CONFIG["notes"]  # the artifact keeps what the param had to cut
    assert Path(run.info.artifact_uri).is_relative_to(Path(tracked.artifact_location))
    for child_id in children:
        child = client.get_run(child_id)
        assert child.info.status == "FINISHED"
        assert child.info.experiment_id == run.info.experiment_id
        assert child.data.tags["mlflow.parentRunId"] == run.info.run_id
        assert [m.value for m in client.get_metric_history(child_id, "train.loss")] == [1.0, 0.5, 1 / 3]
        assert "train.kl.descriptor" not in child.data.metrics
        assert [r.id for r in load_run_records(child_id, "test")] == ["a", "b"]
    assert [r.info.run_id for r in find_runs(system="full", dataset="demo")] == [run.info.run_id]


def test_exception_in_nested_run_fails_parent_and_reraises(tracked: MlflowConfig) -> None:
    ids = {}
    with pytest.raises(ZeroDivisionError), run_context("parent", tags={"system": "full"}) as parent:
        ids["parent"] = parent.info.run_id
        with run_context("fold-1") as child:
            ids["child"] = child.info.run_id
            _ = 1 / 0
    assert status_of(ids["child"]) == "FAILED" and status_of(ids["parent"]) == "FAILED"
    assert mlflow.active_run() is None
    assert find_runs(system="full") == []
    assert [r.info.run_id for r in find_runs(system="full", status="FAILED")] == [ids["parent"]]


def test_caught_nested_failure_still_fails_parent(tracked: MlflowConfig) -> None:
    with run_context("parent") as parent:
        with pytest.raises(ValueError), run_context("fold-1"):
            raise ValueError("bad fold")
        with run_context("fold-2") as second:
            pass
    assert status_of(second.info.run_id) == "FINISHED"
    assert status_of(parent.info.run_id) == "FAILED"
    assert MlflowClient().get_run(parent.info.run_id).data.tags["failed_child"] == "fold-1"


def test_keyboard_interrupt_kills_runs(tracked: MlflowConfig) -> None:
    with pytest.raises(KeyboardInterrupt), run_context("parent") as parent, run_context("stage-1") as child:
        raise KeyboardInterrupt
    assert status_of(child.info.run_id) == "KILLED" and status_of(parent.info.run_id) == "KILLED"


def monitors() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "SystemMetricsMonitor"]


def system_metrics(run_id: str) -> set[str]:
    return {name for name in MlflowClient().get_run(run_id).data.metrics if name.startswith("system/")}


def test_every_run_logs_system_metrics_and_its_monitor_ends_with_it(tracked: MlflowConfig, monkeypatch):
    tracking_setup(tracked.model_copy(update={"runs": RunsConfig(system_metrics_s=0.2)}))
    with run_context("parent") as parent, run_context("fold-1") as child:
        assert len(monitors()) == 2
        time.sleep(1.0)  # a sample, the interval, and the run still RUNNING: a logged step
    assert monitors() == []
    assert "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" not in os.environ  # set for the start only
    cpu_and_memory = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}
    assert cpu_and_memory <= system_metrics(parent.info.run_id)
    assert cpu_and_memory <= system_metrics(child.info.run_id)
    # MLflow's own variable wins over mlflow.yaml; null in mlflow.yaml starts no monitor
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    tracking_setup(tracked.model_copy(update={"runs": RunsConfig(system_metrics_s=3600)}))
    with run_context("sampled by the variable") as sampled:
        time.sleep(1.0)
    assert "system/cpu_utilization_percentage" in system_metrics(sampled.info.run_id)
    tracking_setup(tracked.model_copy(update={"runs": RunsConfig(system_metrics_s=None)}))
    with run_context("none") as unsampled:
        assert monitors() == []
    assert system_metrics(unsampled.info.run_id) == set()


def test_logging_outside_a_run_is_an_error(tracked: MlflowConfig) -> None:
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_metrics({"train.loss": 1.0}, step=0)


def test_records_roundtrip_and_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    records = [record("a"), record("b", fold=None)]
    assert write_records(path, records) == 2
    assert read_records(path) == records
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["hyp_emotoin"] = bad.pop("hyp_emotion")
    path.write_text(f"{lines[0]}\n\n{json.dumps(bad)}\n")
    with pytest.raises(BenchmarkError, match=rf"{path}:3: field 'hyp_emotion'"):
        read_records(path)
    path.write_text(f"{lines[0]}\n{lines[0]}\n")
    with pytest.raises(BenchmarkError, match=rf"{path}:2: duplicate utterance id 'a'"):
        read_records(path)


def test_missing_predictions_artifact_is_a_clear_error(tracked: MlflowConfig) -> None:
    with run_context("no-predictions") as run:
        pass
    with pytest.raises(BenchmarkError, match=r"cannot load predictions/dev\.jsonl"):
        load_run_records(run.info.run_id, "dev")


@pytest.mark.slow
def test_ui_server_serves_logged_runs(tracked: MlflowConfig, tmp_path: Path) -> None:
    with run_context("seen-by-ui", tags={"system": "full"}) as run:
        log_metrics({"ser.ua": 0.75})
    with serving(tracked, tmp_path / "server.log") as base:
        runs = search_runs(base, run.info.experiment_id)
    assert [r["info"]["run_id"] for r in runs] == [run.info.run_id]
    assert runs[0]["info"]["status"] == "FINISHED"
    assert not (tmp_path / "mlartifacts").exists()


def _open_store(barrier, uri: str, results) -> None:
    """One process of the race below: wait for the others, then open the store."""
    config = load_mlflow_config().model_copy(update={"tracking_uri": uri})
    barrier.wait()
    try:
        tracking_setup(config)
        results.put("ok")
    except Exception as err:  # the failure is the observation
        results.put(f"{type(err).__name__}: {err}")


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Without the first-open lock, three of four such processes died in MLflow's migration."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    workers = [context.Process(target=_open_store, args=(barrier, uri, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [results.get(timeout=5) for _ in workers] == ["ok"] * 4
