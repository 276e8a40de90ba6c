"""Two processes under `torchrun` are one run: DeepSpeed's CPU accelerator over gloo, ZeRO-2 and ZeRO-3.

The same multi-rank code runs on GPUs and nodes. Checked: one parent run and one fold run, every
test utterance predicted exactly once, the records equal to those of the same trained model
predicted by one process, and a SIGTERM to the launcher leaving nothing RUNNING.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmark.data.corpus import load_corpus
from benchmark.data.examples import examples_of
from benchmark.data.features import FeatureCache
from benchmark.data.records import PredictionRecord
from benchmark.data.splits import folds
from benchmark.eval.predict import predict, score_records
from benchmark.registry import load_dataset_card
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.models import fold_model
from benchmark.tracking.store import current_experiment, load_mlflow_config, tracking_setup
from benchmark.train.trained import load_trained_model

RUN = ["run", "--system", "full", "--backbone", "tiny", "--epochs", "1", "--fold", "1", "--features", "cache"]


def launch(engine: str, workdir: Path) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node 2 -m benchmark run ...` in `workdir`, output to a log."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "benchmark", *RUN, "--deepspeed", engine]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    log = (workdir / f"torchrun-{engine}.log").open("wb")
    return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)


def all_runs() -> list:
    tracking_setup(load_mlflow_config())
    return MlflowClient().search_runs([current_experiment().experiment_id])


def log_tail(workdir: Path, engine: str) -> str:
    return (workdir / f"torchrun-{engine}.log").read_text(errors="replace")[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_two_processes_make_one_run_with_each_test_utterance_predicted_once(engine: str, workdir: Path):
    process = launch(engine, workdir)
    assert process.wait(timeout=600) == 0, log_tail(workdir, engine)
    runs = all_runs()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 2, [r.info.run_name for r in runs]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["world_size"] == "2"
    assert parent.data.tags["devices"] == "2 x cpu on 1 node" and parent.data.tags["engine"] == engine

    card = load_dataset_card("demo")
    (fold,) = folds(card, load_corpus(card), "1", False)
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    records = load_run_records(child.info.run_id, "fold-1")
    assert sorted(r.id for r in records) == sorted(row.id for row in fold.test)

    # The same trained model, predicted by this one process, gives the very same records.
    _, _, saved = fold_model(parent.info.run_id, "1")
    model, encoder = load_trained_model(saved, "the fold's model")
    loaders = FeatureCache(None, encoder, progress=False).loaders(fold.test)
    examples = examples_of(fold.test, dict(zip([row.id for row in fold.test], loaders, strict=True)))
    alone = predict(model, examples, card.labels, "1", progress=False)
    score_records(alone, card, model.config, fold.test)  # fills the languages, as logging does
    assert [r.model_dump() for r in records] == [PredictionRecord(**one).model_dump() for one in alone]


@pytest.mark.slow
def test_a_sigterm_to_the_launcher_leaves_no_run_running(workdir: Path):
    process = launch("zero2", workdir)
    deadline = time.monotonic() + 300
    while not any("fold" in r.data.tags for r in all_runs()):  # training has begun
        assert process.poll() is None and time.monotonic() < deadline, log_tail(workdir, "zero2")
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    statuses = {r.info.run_name: r.info.status for r in all_runs()}
    assert "RUNNING" not in statuses.values() and statuses, (statuses, log_tail(workdir, "zero2"))
    assert all(status == "KILLED" for status in statuses.values()), statuses


def test_ranks_that_read_other_data_stop_in_one_line(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    from benchmark.errors import BenchmarkError
    from benchmark.workflows import run as experiment

    card = load_dataset_card("demo")
    mixture = experiment.Mixture(card, folds(card, load_corpus(card), "1", False), [], {}, {"demo": card})
    experiment.check_same_data(mixture)  # one process: nothing to compare
    monkeypatch.setattr(experiment, "all_gathered", lambda value: [value, "0" * 16])
    with pytest.raises(BenchmarkError, match=r"rank 1 reads other data than rank 0 \(manifest digest 0{16}"):
        experiment.check_same_data(mixture)


def test_resume_refuses_a_run_of_another_world_size(monkeypatch: pytest.MonkeyPatch):
    from types import SimpleNamespace

    from benchmark.errors import BenchmarkError
    from benchmark.workflows import run as experiment

    tags = {"world_size": "2"}
    interrupted = SimpleNamespace(info=SimpleNamespace(run_id="r1"), data=SimpleNamespace(tags=tags))
    monkeypatch.setattr(experiment, "interrupted_run", lambda key, value: interrupted)
    assert experiment.resumable_run("digest", 2) is interrupted
    with pytest.raises(BenchmarkError, match="run r1 trained with 2 processes, this one has 1"):
        experiment.resumable_run("digest", 1)
