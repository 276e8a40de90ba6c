"""`benchmark evaluate`: a trained run scored zero-shot on another corpus, without retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.config import benchmark_home
from benchmark.data import audit
from benchmark.data.audit import read_audit
from benchmark.data.examples import Example
from benchmark.data.manifest import read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.errors import BenchmarkError
from benchmark.eval.predict import predict
from benchmark.leaderboard.board import build_boards
from benchmark.leaderboard.render import render
from benchmark.nn.backbones import get_backbone
from benchmark.nn.encoder import build_encoder
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.nn.system import build_system
from benchmark.registry import load_dataset_card
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.models import fold_model
from benchmark.train.loop import train
from benchmark.train.ssl import build_ssl_baseline, pretrained_top_layers
from benchmark.train.trained import export_trained_model, rebuild_trained_model
from benchmark.workflows.evaluate import evaluate_run
from benchmark.workflows.run import RunRequest, resolve_system, run_experiment

CAPTIONS = ["语气平静，语速正常", "声音响亮，情绪激动", "语调低沉，显得伤心"]


def emosec_from_demo(workdir: Path, count: int = 3) -> Path:
    """An EMOSEC-layout folder (SECap's test release) whose wavs are copies of the first demo
    utterances: speaker group 1's, so fold 1 never trained on them and every other fold did."""
    demo = read_manifest(benchmark_home() / "datasets" / "demo" / "all.jsonl")
    root = workdir / "SECap" / "dataset"
    (root / "wav").mkdir(parents=True)
    captions = {}
    for k, row in enumerate(demo[:count]):
        utt = f"tx_emotion_0020100{k:04d}"
        shutil.copy(row.audio, root / "wav" / f"{utt}.wav")
        captions[utt] = CAPTIONS[k % len(CAPTIONS)]
    (root / "fid2captions.json").write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture
def emosec(workdir: Path) -> Path:
    card = load_dataset_card("emosec")
    prepare_corpus(card, emosec_from_demo(workdir), None, strict=True)
    return workdir


def test_exported_weights_rebuild_the_same_model(tmp_path: Path):
    system = resolve_system(RunRequest(system="full", epochs=1), get_backbone("tiny"))
    encoder = build_encoder("tiny")
    torch.manual_seed(0)
    examples = [
        Example(f"u{k}", torch.randn(encoder.num_layers, 20 + 5 * k, encoder.hidden_size), transcript="a b",
                descriptor="d", emotion="sad")
        for k in range(4)
    ]  # fmt: skip
    torch.manual_seed(system.training.seed)
    model = build_system(system, encoder.num_layers, encoder.hidden_size, backbone="tiny")
    train(model, examples, progress=False)
    shape = (encoder.num_layers, encoder.hidden_size)
    path = export_trained_model(model, system, tmp_path / "system.pt", "tiny", shape)
    torch.manual_seed(123)  # a different global seed: only the file and the system's seed may decide
    rebuilt = rebuild_trained_model(torch.load(path, weights_only=True), encoder, str(path))
    labels = ["neutral", "happy", "angry", "sad"]
    assert predict(rebuilt, examples, labels, None, progress=False) == predict(
        model, examples, labels, None, progress=False
    )


@pytest.mark.parametrize("finetune_layers", [0, 1])
def test_an_exported_ssl_baseline_rebuilds_the_same_model(tmp_path: Path, finetune_layers: int):
    overrides = {"ssl": {"finetune_layers": finetune_layers}}
    system = resolve_system(
        RunRequest(system="ssl-hubert", epochs=1, overrides=overrides), get_backbone("tiny")
    )
    encoder = build_encoder("tiny")
    shape = (encoder.num_layers, encoder.hidden_size)
    labels = ["neutral", "happy", "angry", "sad"]
    model = build_ssl_baseline(system, *shape, labels, top_layers=pretrained_top_layers(system, encoder))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))  # trained weights differ from a fresh build's
    path = export_trained_model(model, system, tmp_path / "system.pt", "tiny", shape)
    rebuilt = rebuild_trained_model(torch.load(path, weights_only=True), encoder, str(path))
    hidden, mask = torch.randn(shape[0], 2, 30, shape[1]), torch.ones(2, 30, dtype=torch.bool)
    assert isinstance(rebuilt, SSLBaseline) and rebuilt.labels == labels
    assert torch.equal(rebuilt(hidden, mask)[0], model.eval()(hidden, mask)[0])
    fresh = build_ssl_baseline(system, *shape, labels, top_layers=pretrained_top_layers(system, encoder))
    assert not torch.equal(fresh.eval()(hidden, mask)[0], model(hidden, mask)[0])


@pytest.mark.slow
def test_evaluate_scores_a_run_on_a_zero_shot_corpus(emosec: Path, capsys: pytest.CaptureFixture[str]):
    source = run_experiment(RunRequest(system="full", backbone="tiny", fold="1", epochs=1, progress=False))
    summary = evaluate_run(source.run_id, "emosec", progress=False)
    run = MlflowClient().get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["kind"], tags["dataset"], tags["system"]) == ("evaluation", "emosec", "full")
    assert (tags["source_run"], tags["source_fold"], tags["source_dataset"]) == (source.run_id, "1", "demo")
    records = load_run_records(summary.run_id, "pooled")
    assert [r.ref_descriptor for r in records] == CAPTIONS
    assert all(r.ref_emotion is None and r.raw_output for r in records)
    assert [r.language for r in records] == ["zh"] * len(CAPTIONS)  # the manifest rows' language
    scores = {name for name in run.data.metrics if not name.startswith(("system/", "audit."))}
    assert set(summary.metrics) == scores and summary.metrics  # besides MLflow's own and the audit's
    assert [run.data.metrics[f"audit.{kind}"] for kind in audit.KINDS] == [0, 0, 0, 0]
    assert "overlap" not in tags and not summary.notes
    assert 0 <= summary.metrics["sed.language_mismatch"] <= 1  # one language: no sed.zh.* keys
    assert not any(name.startswith(("sed.zh.", "sed.en.")) for name in summary.metrics)

    assert main(["evaluate", source.run_id, "--dataset", "demo"]) == 2
    assert "no test split" in capsys.readouterr().err


@pytest.mark.slow
def test_several_fold_models_need_a_choice_and_folds_that_trained_on_the_test_audio_are_refused(
    emosec: Path, capsys: pytest.CaptureFixture[str]
):
    source = run_experiment(RunRequest(system="no-fd", backbone="tiny", fold="all", epochs=1, progress=False))
    with pytest.raises(BenchmarkError, match=r"folds \['1', '2', '3', '4', '5'\]; pick one with --fold"):
        evaluate_run(source.run_id, "emosec", progress=False)
    copied = [row.id for row in read_manifest(benchmark_home() / "datasets" / "demo" / "all.jsonl")[:3]]

    # Fold 3 trained on group 1, whose first three clips EMOSEC's test split holds under other ids.
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    assert main(["evaluate", source.run_id, "--dataset", "emosec", "--fold", "3"]) == 2
    error = capsys.readouterr().err
    where = f"emosec, zero-shot from fold 3 of run {source.run_id}"
    assert f"{where}: test utterance emosec_tx_emotion_00201000000 (emosec) has the audio of " in error
    assert f"training utterance {copied[0]} (demo) (audio-exact); 3 such pair(s)" in error
    assert "--allow-overlap" in error
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before  # none was opened

    summary = evaluate_run(source.run_id, "emosec", fold="3", progress=False, allow_overlap=True)
    run = MlflowClient().get_run(summary.run_id)
    assert (run.data.tags["source_fold"], run.data.tags["overlap"]) == ("3", "3")
    assert summary.notes == [
        "audit: 3 test clip(s) had their audio in the training mixture (--allow-overlap) "
        "(listed in the run's audit.tsv)"
    ]
    logged = read_audit(Path(MlflowClient().download_artifacts(summary.run_id, "audit.tsv")))
    assert {(r["kind"], r["train_id"], r["test_corpus"]) for r in logged} == {
        ("audio-exact", uid, "emosec") for uid in copied
    }
    board = render(build_boards("sed", ["emosec"], [summary.run_id]), "md")
    (line,) = [line for line in board.splitlines() if line.startswith("| 1 | no-fd | measured |")]
    cells = [cell.strip() for cell in line.split("|")[4:-1] if cell.strip() != "–"]  # – : not measured
    assert cells and all(cell.endswith("†") for cell in cells)
    assert f"† row 1 on emosec (run {summary.run_id}): trained with 3 test clip(s)" in board

    # A source run's corpus that is not prepared here cannot be audited: said, and scored anyway.
    shutil.rmtree(benchmark_home() / "datasets" / "demo")
    summary = evaluate_run(source.run_id, "emosec", fold="2", progress=False)
    assert summary.notes == ["audit: not checked: demo, the source run's training data, not prepared here"]
    assert "overlap" not in MlflowClient().get_run(summary.run_id).data.tags


@pytest.mark.slow
def test_an_ssl_run_logs_its_model_and_is_refused_zero_shot(emosec: Path):
    source = run_experiment(
        RunRequest(system="ssl-hubert", backbone="tiny", fold="1", epochs=1, progress=False)
    )
    _, fold, saved = fold_model(source.run_id, None)
    assert (fold, saved["kind"], saved["backbone"]) == ("1", "ssl", "tiny")
    assert saved["labels"] == list(load_dataset_card("demo").labels)
    with pytest.raises(BenchmarkError, match="is an SSL baseline"):
        evaluate_run(source.run_id, "emosec", progress=False)
