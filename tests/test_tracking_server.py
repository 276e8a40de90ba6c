"""One tracking store for every node: `mlflow server` on PostgreSQL, the runs' files served by it.

The server is started as docs/tracking.md starts it (on a free loopback port). One small `benchmark
run` writes to it over HTTP; `leaderboard` and `compare` read the run back through it; its files
lie under the server's artifact destination and none in the client's folder; `ui` points at the
server's own UI instead of serving the store again.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow_server import tracking_server

from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.tracking import tags as tag
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.log import log_params, log_predictions
from benchmark.tracking.runs import run_context
from benchmark.tracking.store import load_mlflow_config, tracking_setup
from benchmark.workflows.ui import serve_ui

pytestmark = pytest.mark.slow

QUICK = ["--backbone", "tiny", "--epochs", "1", "--fold", "1", "--set", "decoder.max_new_tokens=8"]


@pytest.fixture
def server(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, artifact destination) of a tracking server on a fresh PostgreSQL database."""
    folder = tmp_path_factory.mktemp("tracking_server")
    artifacts = folder / "mlartifacts"
    backend = postgres.create_database("mlflow_server")
    with tracking_server(backend, artifacts, folder / "server.log") as base:
        yield base, artifacts
    mlflow.set_tracking_uri(None)  # later tests find their own store, not this stopped server


def log_baseline(trained: Run) -> str:
    """A run of the trained run's setup that answers "neutral" every time: compare's baseline."""
    records = load_run_records(trained.info.run_id, "pooled")
    kept = {k: v for k, v in trained.data.tags.items() if not k.startswith(("mlflow.", "owner."))}
    with run_context("constant baseline", tags={**kept, tag.SYSTEM: "no-fd"}) as run:
        log_params({"targets": trained.data.params["targets"]})
        log_predictions([r.model_copy(update={"hyp_emotion": "neutral"}) for r in records], "pooled")
    return run.info.run_id


def test_a_run_writes_to_the_server_and_every_reader_reads_through_it(
    workdir: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
):
    base, artifacts = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    assert main(["run", "--system", "full", *QUICK]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "system metrics" not in err, err

    client = MlflowClient(base)
    experiment_id = tracking_setup(load_mlflow_config())
    runs = client.search_runs([experiment_id], "tags.system = 'full'")
    (fold,) = [run for run in runs if tag.FOLD in run.data.tags]
    (trained,) = [run for run in runs if run.info.run_id == fold.data.tags["mlflow.parentRunId"]]
    for run in (trained, fold):
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # the server's, proxied
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
            run.data.metrics
        )
    # the predictions went through the server to its destination; the client kept no copy
    experiment_files = artifacts / experiment_id
    assert (experiment_files / trained.info.run_id / "artifacts" / "predictions" / "pooled.jsonl").is_file()
    assert (experiment_files / fold.info.run_id / "artifacts" / "predictions" / "fold-1.jsonl").is_file()
    assert not (workdir / "mlruns").exists()

    table = workdir / "table2.csv"
    leaderboard = ["leaderboard", "--table", "ser", "--dataset", "demo", "--runs", trained.info.run_id]
    assert main([*leaderboard, "--format", "csv", "--out", str(table)]) == 0
    (row,) = [row for row in csv.DictReader(table.open(encoding="utf-8")) if row["System"] == "full"]
    assert row["DEMO UA% ↑"].rstrip("*") == f"{100 * trained.data.metrics['ser.ua']:.1f}"

    baseline = log_baseline(trained)
    compare = ["compare", trained.info.run_id, "--baseline", baseline, "--metric", "ser.ua"]
    assert main([*compare, "--bootstrap", "50"]) == 0
    assert "kind=comparison" in capfd.readouterr().out
    (comparison,) = client.search_runs([experiment_id], "tags.kind = 'comparison'")
    assert comparison.data.tags["compared_run_ids"] == trained.info.run_id
    ua = trained.data.metrics["ser.ua"]  # as the run logged it; compare recomputes it from the records
    assert comparison.data.metrics["compare.full.ser.ua.value"] == pytest.approx(ua)
    assert (experiment_files / comparison.info.run_id / "artifacts" / "comparison.md").is_file()

    with pytest.raises(BenchmarkError, match="serves the MLflow UI itself") as refused:
        serve_ui(load_mlflow_config())
    runs_table = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert refused.value.hint == f"open {runs_table}"
