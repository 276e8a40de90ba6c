"""`benchmark run` end to end on a small demo corpus with the tiny backbone, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark import registry
from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.nn.backbones import get_backbone
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.lookup import find_runs, finished_run
from benchmark.train import loop
from benchmark.workflows import run as experiment
from benchmark.workflows.run import RunRequest, resolve_system, run_experiment


def request(**changes) -> RunRequest:
    fields = dict(system="full", backbone="tiny", fold="1", epochs=1, progress=False)
    return RunRequest(**{**fields, **changes})


@pytest.mark.slow
def test_run_logs_metrics_records_and_artifacts(workdir: Path):
    summary = run_experiment(request())
    client = MlflowClient()
    parent = client.get_run(summary.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["system"] == "full" and parent.data.tags["backbone"] == "tiny"
    assert parent.data.params["beta"] == "0.0001" and parent.data.params["decoder.regime"] == "full"
    for key in ("ser.ua", "ser.wa", "ser.macro_f1", "asr.wer", "sed.bleu4", "sed.cider"):
        assert key in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'"
    )
    assert [c.data.tags["fold"] for c in children] == ["1"]
    child = children[0]
    assert child.info.status == "FINISHED"
    assert len(client.get_metric_history(child.info.run_id, "train.loss")) > 1
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"confusion_matrix.png", "predictions"} <= artifacts
    parent_artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
    assert {
        "config.yaml",
        "environment.json",
        "confusion_matrix_pooled.png",
        "predictions",
    } <= parent_artifacts
    records = load_run_records(child.info.run_id, "fold-1")
    assert len(records) == 8 and all(r.fold == "1" for r in records)
    assert all(r.raw_output.startswith("[asr] ") for r in records)
    # the logged fold metric is recomputed from the logged records, not copied
    assert child.data.metrics["ser.ua"] == pytest.approx(summary.fold_metrics["1"]["ser.ua"])


@pytest.mark.slow
def test_a_crash_marks_the_runs_failed(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(*args, **kwargs):
        raise RuntimeError("generation crashed")

    monkeypatch.setattr(experiment, "predict", broken)
    with pytest.raises(RuntimeError, match="generation crashed"):
        run_experiment(request())
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name("explainable-ser").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FAILED"}
    parent = next(r for r in runs if "fold" not in r.data.tags)
    assert (Path(parent.data.tags["checkpoints"]) / "fold-1" / "last.pt").is_file()  # kept for --resume


@pytest.mark.slow
def test_runs_of_one_configuration_keep_their_checkpoints_apart(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    """Runs of one configuration keep their own checkpoint folders, so two at once never write into
    (or delete) each other's files."""
    folders = []
    real_train = loop.train

    def train_and_look(*args, checkpoint_dir: Path, **kwargs):
        real_train(*args, checkpoint_dir=checkpoint_dir, **kwargs)
        folders.append(checkpoint_dir)
        assert (checkpoint_dir / "last.pt").is_file()

    monkeypatch.setattr(loop, "train", train_and_look)
    first, second = run_experiment(request()), run_experiment(request())
    tags = [MlflowClient().get_run(s.run_id).data.tags for s in (first, second)]
    assert tags[0]["config_digest"] == tags[1]["config_digest"]
    assert tags[0]["checkpoints"] != tags[1]["checkpoints"]
    assert [f.parent for f in folders] == [Path(t["checkpoints"]) for t in tags]
    assert not any(f.exists() for f in folders)  # removed once the run finished


@pytest.mark.slow
def test_random_weights_log_training_curves_and_no_results(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    """A backbone with random weights (paper-shape; here one of tiny size, so that it runs on a CPU)
    trains and logs its curves under `random_weights=true`, and nothing that could pass for a
    result: no scores (validation ones neither), predictions or model, and no lookup takes it."""
    backbones = workdir / "registry" / "models" / "backbones"
    backbones.mkdir(parents=True)
    tiny = get_backbone("tiny").model_copy(update={"name": "tiny-random", "random_weights": True})
    (backbones / "tiny-random.yaml").write_text(yaml.safe_dump(tiny.model_dump()))
    monkeypatch.setattr(registry, "_extra_roots", [workdir / "registry"])
    monkeypatch.setattr(experiment, "require_gpu", lambda backbone: None)  # paper-shape's refusal on CPU
    summary = run_experiment(request(backbone="tiny-random", validation=True))
    assert summary.fold_metrics == {"1": {}} and summary.mean == {}
    client = MlflowClient()
    parent = client.get_run(summary.run_id)
    (child,) = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'"
    )
    assert parent.info.status == child.info.status == "FINISHED"
    assert parent.data.tags["random_weights"] == child.data.tags["random_weights"] == "true"
    assert len(client.get_metric_history(child.info.run_id, "train.tokens_per_s")) > 1
    for run in (parent, child):
        assert not [key for key in run.data.metrics if any(task in key for task in ("ser.", "asr.", "sed."))]
        assert not {"model", "predictions"} & {a.path for a in client.list_artifacts(run.info.run_id)}
    assert find_runs() == []
    with pytest.raises(BenchmarkError, match="random weights"):
        finished_run(summary.run_id)


def test_bad_requests_fail_before_any_work(workdir: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["run", "--system", "full", "--backbone", "tiny", "--fold", "9"]) == 2
    assert "unknown fold '9'" in capsys.readouterr().err
    assert main(["run", "--system", "full", "--dataset", "emosec"]) == 2
    assert "zero-shot" in capsys.readouterr().err
    assert main(["run", "--system", "full", "--set", "training.batch_sise=2"]) == 2
    assert "batch_sise" in capsys.readouterr().err
    assert not Path("mlruns").exists()


def test_backbone_sets_the_decoder_regime_and_demo_scale_training():
    paper = resolve_system(RunRequest(system="full"), get_backbone("paper"))
    assert paper.decoder.regime == "lora"
    assert [(s.lr, s.epochs) for s in paper.stages] == [(2e-4, 4), (2e-5, 4)]
    demo = resolve_system(RunRequest(system="full", beta=1e-2), get_backbone("demo"))
    assert demo.decoder.regime == "full" and demo.beta == 1e-2
    assert [(s.lr, s.epochs) for s in demo.stages] == [(1e-3, 24), (1e-3, 24)]
    quick = resolve_system(RunRequest(system="full", epochs=1), get_backbone("demo"))
    assert [s.epochs for s in quick.stages] == [1, 1]
    # a user's --set of one decoder field keeps the backbone's decoder regime (a deep merge)
    rank = resolve_system(
        RunRequest(system="full", overrides={"decoder": {"lora_r": 4}}), get_backbone("demo")
    )
    assert (rank.decoder.regime, rank.decoder.lora_r) == ("full", 4)


@pytest.mark.slow
def test_cached_features_are_read_per_batch_with_the_records_of_the_same_features_in_memory(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    """With the cache on, the plan holds loaders of the cache files, never the corpus's hidden
    states; the run predicts exactly what it predicts with the same features held in memory."""
    from benchmark.data.features import CachedFeatures, FeatureCache

    plan, _ = experiment.plan_run(request())
    assert all(isinstance(f, CachedFeatures) for f in plan.features.values())
    streamed = load_run_records(run_experiment(request()).run_id, "pooled")
    monkeypatch.setattr(FeatureCache, "loaders", FeatureCache.get)  # the same files, read up front
    plan, _ = experiment.plan_run(request())
    assert not any(isinstance(f, CachedFeatures) for f in plan.features.values())
    assert load_run_records(run_experiment(request()).run_id, "pooled") == streamed
