"""`benchmark evaluate`: a trained run scored zero-shot on another corpus, without retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.config import benchmark_home
from benchmark.data.examples import Example
from benchmark.data.manifest import read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.errors import BenchmarkError
from benchmark.eval.predict import predict
from benchmark.nn.backbones import get_backbone
from benchmark.nn.system import build_system
from benchmark.registry import load_dataset_card
from benchmark.track.experiment import RunRequest, resolve_system, run_experiment
from benchmark.track.records import load_run_records
from benchmark.track.zero_shot import evaluate_run
from benchmark.train.checkpoint import export_trained_system, load_group_weights
from benchmark.train.loop import train

CAPTIONS = ["语气平静，语速正常", "声音响亮，情绪激动", "语调低沉，显得伤心"]


def emosec_from_demo(workdir: Path, count: int = 3) -> Path:
    """An EMOSEC-layout folder (SECap's test release) whose wavs are demo utterances."""
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
    torch.manual_seed(0)
    examples = [
        Example(f"u{k}", torch.randn(3, 20 + 5 * k, 16), transcript="a b", descriptor="d", emotion="sad")
        for k in range(4)
    ]
    torch.manual_seed(system.training.seed)
    model = build_system(system, 3, 16, backbone="tiny")
    train(model, examples, progress=False)
    path = export_trained_system(model, tmp_path / "system.pt")
    torch.manual_seed(123)  # a different random LLM: only the exported weights may make them equal
    rebuilt = build_system(system, 3, 16, backbone="tiny")
    load_group_weights(rebuilt, torch.load(path, weights_only=True)["groups"], path)
    labels = ["neutral", "happy", "angry", "sad"]
    assert predict(rebuilt, examples, labels, None, progress=False) == predict(
        model, examples, labels, None, progress=False
    )


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
    assert set(summary.metrics) == set(run.data.metrics) and summary.metrics
    assert 0 <= summary.metrics["sed.language_mismatch"] <= 1  # one language: no sed.zh.* keys
    assert not any(name.startswith(("sed.zh.", "sed.en.")) for name in summary.metrics)

    assert main(["evaluate", source.run_id, "--dataset", "demo"]) == 2
    assert "no test split" in capsys.readouterr().err


@pytest.mark.slow
def test_several_fold_models_need_a_choice(emosec: Path):
    source = run_experiment(RunRequest(system="no-fd", backbone="tiny", fold="all", epochs=1, progress=False))
    with pytest.raises(BenchmarkError, match=r"folds \['1', '2', '3', '4', '5'\]; pick one with --fold"):
        evaluate_run(source.run_id, "emosec", progress=False)
    summary = evaluate_run(source.run_id, "emosec", fold="3", progress=False)
    assert MlflowClient().get_run(summary.run_id).data.tags["source_fold"] == "3"
