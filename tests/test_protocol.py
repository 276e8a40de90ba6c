"""The paper's protocol on release-layout trees: training mixtures, per-corpus counts, validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
import soundfile as sf
from corpus_trees import SPEECHCRAFT_EMOTIONS, iemocap_tree, prepare_all
from mlflow import MlflowClient

from benchmark.config import benchmark_home
from benchmark.data.audio import load_audio
from benchmark.data.manifest import Utterance, read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.data.splits import folds, relabel, shared_speakers
from benchmark.errors import BenchmarkError
from benchmark.registry import load_dataset_card, system_configs
from benchmark.tracking.store import load_mlflow_config, tracking_setup
from benchmark.workflows.run import RunRequest, run_experiment

OUTSIDE_IEMOCAP = sum(emotion not in {"neutral", "happy", "sad", "angry"} for emotion in SPEECHCRAFT_EMOTIONS)


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("releases")


@pytest.fixture
def corpora(trees: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    prepare_all(trees)
    return tmp_path


def fold_run(parent_id: str):
    client = MlflowClient()
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert len(children) == 1
    return parent, children[0]


def emotion_stages(system) -> list[tuple[str, str]]:
    """(stage, task) of every stage task that trains the emotion (SSL: the classifier head)."""
    if system.kind == "ssl":
        return [("ssl", "ser")]
    return [
        (s.name, t) for s in system.stages if s.epochs for t in s.tasks if t in ("ser", "ser_sed", "full")
    ]


@pytest.mark.parametrize("name", list(system_configs()))
def test_every_system_trains_with_speechcraft_on_iemocap(corpora: Path, name: str) -> None:
    system = system_configs()[name]
    summary = run_experiment(
        RunRequest(system=name, dataset="iemocap", backbone="tiny", fold="Session1", epochs=1, progress=False)
    )
    parent, fold = fold_run(summary.run_id)
    params, tags = fold.data.params, parent.data.tags
    assert params["data.iemocap.train_utterances"] == "16"  # four sessions of four utterances
    assert params["data.speechcraft.train_utterances"] == str(len(SPEECHCRAFT_EMOTIONS))
    assert params["data.speechcraft.emotion_outside_labels"] == str(OUTSIDE_IEMOCAP)
    assert params["data.iemocap.test_utterances"] == "4"
    stages = emotion_stages(system)
    assert stages, f"{name} trains no emotion"
    for stage, task in stages:  # the emotion is taught by both corpora
        assert int(params[f"train.{stage}.{task}.iemocap"]) == 16
        assert int(params[f"train.{stage}.{task}.speechcraft"]) == len(SPEECHCRAFT_EMOTIONS) - OUTSIDE_IEMOCAP
    for stage in system.stages:
        if "asr" in stage.tasks:
            assert int(params[f"train.{stage.name}.asr.speechcraft"]) == len(SPEECHCRAFT_EMOTIONS)
    assert tags["train_with"] == "speechcraft" and tags["validation"] == "off"
    assert tags["recipe"] == "custom" and tags["folds"] == "Session1"
    inputs = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
              for d in fold.inputs.dataset_inputs}  # fmt: skip
    assert inputs == {("iemocap", "training"), ("speechcraft", "training"), ("iemocap", "test")}
    assert "ser.ua" in summary.mean
    assert ("asr.wer" in summary.mean) == ("transcript" in system.targets)


@pytest.mark.parametrize("name", ["full", "fd-ser-sed", "ssl-hubert"])
def test_meld_trains_with_speechcraft_and_validates_on_dev(corpora: Path, name: str) -> None:
    summary = run_experiment(
        RunRequest(system=name, dataset="meld", backbone="tiny", epochs=1, validation=True, progress=False)
    )
    parent, fold = fold_run(summary.run_id)
    # MELD's seven labels are SpeechCraft's seven under other names: every clip teaches its emotion.
    assert fold.data.params["data.speechcraft.emotion_outside_labels"] == "0"
    assert fold.data.params["data.meld.validation_utterances"] == "2"
    assert "val.ser.ua" in fold.data.metrics and "ser.ua" in fold.data.metrics
    system = system_configs()[name]  # every epoch ends with a validation loss (one epoch per stage)
    history = MlflowClient().get_metric_history(fold.info.run_id, "val.ce")
    assert len(history) == (len(system.stages) if system.kind == "llm" else 1)
    contexts = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context") for d in fold.inputs.dataset_inputs
    }
    assert contexts == {"training", "validation", "test"}
    assert parent.data.tags["validation"] == "on"


def test_train_with_none_trains_on_the_target_alone(corpora: Path) -> None:
    summary = run_experiment(
        RunRequest(
            system="fd-ser-sed", dataset="iemocap", backbone="tiny", fold="Session2",
            train_with=(), epochs=1, progress=False,
        )
    )  # fmt: skip
    parent, fold = fold_run(summary.run_id)
    assert "data.speechcraft.train_utterances" not in fold.data.params
    assert fold.data.params["train.descriptor.ser_sed.iemocap"] == "16"  # emotion-only responses
    assert parent.data.tags["train_with"] == "none"


def test_unprepared_corpora_are_one_line_before_any_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    request = RunRequest(system="full", dataset="iemocap", backbone="tiny", progress=False)
    with pytest.raises(BenchmarkError, match="iemocap is not prepared"):
        run_experiment(request)
    prepare_corpus(load_dataset_card("iemocap"), iemocap_tree(tmp_path / "IEMOCAP_full_release"))
    with pytest.raises(BenchmarkError, match=r"speechcraft is not prepared; datasets/iemocap\.yaml trains"):
        run_experiment(request)
    tracking_setup(load_mlflow_config())
    assert mlflow.search_runs(search_all_experiments=True).empty


# ---------------------------------------------------------------------------------------------
# Validation sets and label maps, on manifest rows alone
# ---------------------------------------------------------------------------------------------


def utterance(uid: str, speaker: str, group: str, dataset: str, emotion: str = "neutral") -> Utterance:
    return Utterance(
        id=uid, audio=f"/x/{uid}.wav", duration=1.0, transcript="hi", emotion=emotion, descriptor=None,
        speaker=speaker, gender=None, group=group, dataset=dataset,
    )  # fmt: skip


def card_rows(name: str) -> dict[str, list[Utterance]]:
    """Rows shaped like each corpus's manifests: its groups, speakers and splits."""
    if name == "demo":  # five speaker groups of two voices each
        rows = [utterance(f"d{g}{s}{i}", f"voice{g}{s}", str(g), "demo") for g in range(1, 6) for s in "ab"
                for i in range(3)]  # fmt: skip
        return {"all": rows}
    if name == "iemocap":  # every session its own two speakers
        rows = [utterance(f"Ses0{n}F_impro01_{s}00{i}", f"Ses0{n}{s}", f"Session{n}", "iemocap")
                for n in range(1, 6) for s in "FM" for i in range(3)]  # fmt: skip
        return {"all": rows}
    assert name == "meld"  # the same cast in every split
    return {split: [utterance(f"{split}{i}", cast, split, "meld") for i, cast in enumerate(["Joey", "Ross"])]
            for split in ("train", "dev", "test")}  # fmt: skip


@pytest.mark.parametrize("name", ["demo", "iemocap", "meld"])
def test_validation_is_held_out_of_training_and_disjoint_in_speakers(name: str) -> None:
    card = load_dataset_card(name)
    for fold in folds(card, card_rows(name), "all", validation=True):
        val_ids = {row.id for row in fold.validation}
        assert val_ids and not val_ids & {row.id for row in [*fold.train, *fold.test]}
        if name == "meld":  # MELD's dev split: one cast in every split, so only the dialogues differ
            assert {row.group for row in fold.validation} == {"dev"}
            continue
        assert not shared_speakers(fold.validation, fold.train), fold.name
        assert not shared_speakers(fold.validation, fold.test), fold.name
    without = folds(card, card_rows(name), "all")
    with_val = folds(card, card_rows(name), "all", validation=True)
    for plain, held in zip(without, with_val, strict=True):
        assert plain.test == held.test  # validation never changes what is tested
        if name != "meld":
            assert {r.id for r in plain.train} == {r.id for r in [*held.train, *held.validation]}


def test_iemocap_validation_is_one_speaker_of_the_next_session() -> None:
    card = load_dataset_card("iemocap")
    fold = folds(card, card_rows("iemocap"), "Session5", validation=True)[0]
    assert {row.speaker for row in fold.validation} == {"Ses01F"}


def test_validation_without_a_declared_set_is_refused() -> None:
    card = load_dataset_card("iemocap").model_copy(
        update={"protocol": load_dataset_card("iemocap").protocol.model_copy(update={"validation": None})}
    )
    with pytest.raises(BenchmarkError, match="declares no validation set"):
        folds(card, card_rows("iemocap"), "Session1", validation=True)


def test_labels_map_through_the_target_card() -> None:
    speechcraft = load_dataset_card("speechcraft")
    rows = [
        utterance(f"s{i}", "POD1", "podcast", "speechcraft", label)
        for i, label in enumerate(speechcraft.labels)
    ]
    to_iemocap = relabel(rows, speechcraft, load_dataset_card("iemocap"))
    assert [r.emotion for r in to_iemocap.rows] == ["neutral", "happy", "sad", "angry", None, None, None]
    assert dict(to_iemocap.outside) == {"surprised": 1, "disgusted": 1, "fearful": 1}
    to_meld = relabel(rows, speechcraft, load_dataset_card("meld"))
    assert [r.emotion for r in to_meld.rows] == [
        "neutral",
        "joy",
        "sadness",
        "anger",
        "surprise",
        "disgust",
        "fear",
    ]
    assert not to_meld.outside


def test_zero_shot_emosec_evaluation_carries_the_source_setup_and_audits_its_mixture(
    corpora: Path, trees: Path, tmp_path: Path
) -> None:
    from benchmark.workflows.evaluate import evaluate_run

    summary = run_experiment(
        RunRequest(
            system="full", dataset="iemocap", backbone="tiny", fold="Session1", epochs=1, progress=False
        )
    )
    result = evaluate_run(summary.run_id, "emosec", progress=False)
    client = MlflowClient()
    source, tags = client.get_run(summary.run_id).data.tags, client.get_run(result.run_id).data.tags
    assert tags["source_setup"] == source["setup"] and tags["setup"] != source["setup"]
    assert (tags["dataset"], tags["train_with"], tags["folds"]) == ("emosec", "speechcraft", "Session1")
    assert tags["recipe"] == "custom"  # the source ran with --epochs 1
    assert "overlap" not in tags and client.get_run(result.run_id).data.metrics["audit.audio-exact"] == 0

    # A SpeechCraft clip, trained on through train_with, in EMOSEC's test split stops the evaluation.
    (crafted, *_) = read_manifest(benchmark_home() / "datasets" / "speechcraft" / "train.jsonl")
    planted = shutil.copytree(trees / "SECap" / "dataset", tmp_path / "planted-emosec")
    sf.write(str(planted / "wav" / "tx_emotion_00201000015.wav"), load_audio(crafted.audio), 16000)
    prepare_corpus(load_dataset_card("emosec"), planted, strict=True)
    with pytest.raises(BenchmarkError, match=f"training utterance {crafted.id} \\(speechcraft\\)"):
        evaluate_run(summary.run_id, "emosec", progress=False)


def test_an_ssl_baseline_fine_tunes_its_top_layer_through_run(corpora: Path) -> None:
    summary = run_experiment(
        RunRequest(
            system="ssl-hubert", dataset="iemocap", backbone="tiny", fold="Session3", epochs=1,
            overrides={"ssl": {"finetune_layers": 1}}, progress=False,
        )
    )  # fmt: skip
    parent, fold = fold_run(summary.run_id)
    assert parent.data.params["ssl.finetune_layers"] == "1"
    assert MlflowClient().get_metric_history(fold.info.run_id, "train.encoder_lr")
    assert "ser.ua" in summary.mean and "asr.wer" in summary.mean
