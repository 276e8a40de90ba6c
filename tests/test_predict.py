"""`benchmark predict RUN_ID PATH...` and `explain RUN_ID PATH`: a trained system on recordings of
one's own, by the run's own prediction path; bad files are one line each and lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from mlflow import MlflowClient
from test_reader_meld import write_clip
from test_saliency import LABELS, noise, tiny_captioner

from benchmark.cli import main
from benchmark.data.audio import SAMPLE_RATE, AudioError, load_audio
from benchmark.data.corpus import load_corpus
from benchmark.data.records import PredictionRecord
from benchmark.eval.label_scores import emotion_task, label_probabilities, label_response
from benchmark.explain.evidence import stretch_baseline
from benchmark.explain.expert_cues import F0_VARIABILITY, LOUDNESS, SPEAKING_RATE
from benchmark.nn.encoder import build_encoder
from benchmark.registry import load_dataset_card
from benchmark.tracking.artifacts import load_run_records
from benchmark.tracking.lookup import fold_runs
from benchmark.workflows.predict import audio_files
from benchmark.workflows.run import RunRequest, run_experiment


def test_folders_are_searched_for_audio_and_missing_paths_are_lines(tmp_path: Path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/2.wav", "a/deep/1.FLAC", "a/notes.txt", "b.m4a"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    files, failures = audio_files(
        [
            tmp_path / "a",
            tmp_path / "b.m4a",
            tmp_path / "a" / "2.wav",
            tmp_path / "empty",
            tmp_path / "nope.wav",
        ]
    )
    assert files == [tmp_path / "a" / "2.wav", tmp_path / "a" / "deep" / "1.FLAC", tmp_path / "b.m4a"]
    assert len(failures) == 2
    assert failures[0].startswith(f"{tmp_path / 'empty'}: folder holds no audio file")
    assert failures[1] == f"{tmp_path / 'nope.wav'}: no such file or folder"


def test_m4a_and_misnamed_files_are_decoded_by_ffmpeg(tmp_path: Path):
    write_clip(tmp_path / "tone.m4a", 1.0, rate=22050)  # a 440 Hz tone as AAC in an MP4 container
    wave = load_audio(tmp_path / "tone.m4a")
    assert abs(len(wave) / SAMPLE_RATE - 1.0) < 0.1  # AAC pads a frame or so
    spectrum = np.abs(np.fft.rfft(wave[2000:14000]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / 12000 - 440) < 5
    (tmp_path / "tone.wav").write_bytes((tmp_path / "tone.m4a").read_bytes())  # an AAC under a .wav name
    assert np.allclose(load_audio(tmp_path / "tone.wav"), wave)
    (tmp_path / "notes.wav").write_text("not audio at all\n")
    with pytest.raises(AudioError, match=r"notes\.wav: unreadable or corrupt audio, or not audio"):
        load_audio(tmp_path / "notes.wav")


def test_captioner_label_probabilities_are_the_teacher_forced_label_tokens():
    encoder = build_encoder("tiny", "hubert")
    model = tiny_captioner(encoder)
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(encoder.num_layers, 2, 30, encoder.hidden_size, generator=generator)
    mask = torch.arange(30)[None, :] < torch.tensor([30, 21])[:, None]
    descriptors = ["A low, slow and quiet voice.", None]
    got = label_probabilities(model, hidden, mask, LABELS, descriptors)

    # Independently: one utterance and one label at a time, the label's tokens counted from the end
    # of the whole response (before its end-of-turn token), and a softmax by hand.
    tokenizer, task = model.decoder.tokenizer, emotion_task(model)
    for b, descriptor in enumerate(descriptors):
        scores = []
        for label in LABELS:
            context, label_text = label_response(task, descriptor, label)
            n = len(tokenizer(context + label_text, add_special_tokens=False)["input_ids"]) - len(
                tokenizer(context, add_special_tokens=False)["input_ids"]
            )
            with torch.no_grad():
                (per_token,) = model.response_log_probs(
                    hidden[:, b : b + 1], mask[b : b + 1], [context + label_text]
                )
            scores.append(float(per_token[-1 - n : -1].sum()))
        expected = np.exp(scores) / np.exp(scores).sum()
        assert list(got[b]) == LABELS
        assert np.allclose([got[b][label] for label in LABELS], expected, atol=1e-5)
        assert abs(sum(got[b].values()) - 1) < 1e-6


def test_a_recording_is_its_own_baseline(tmp_path: Path):
    quiet, loud = noise(1.0, seed=1) * 0.05, noise(1.0, seed=2)
    sf.write(tmp_path / "steps.wav", np.concatenate([quiet, loud]), SAMPLE_RATE)
    baseline = stretch_baseline(tmp_path / "steps.wav")
    assert baseline.utterances[LOUDNESS] == 4  # four 0.5 s stretches
    assert baseline.std[LOUDNESS] > 0 and baseline.mean[LOUDNESS] is not None
    # The loud half is above the quiet half's stretches, by the baseline's own spread.
    assert baseline.z(LOUDNESS, baseline.mean[LOUDNESS] + baseline.std[LOUDNESS]) == pytest.approx(1.0)
    for cue in (F0_VARIABILITY, SPEAKING_RATE):  # no whole-utterance reference inside one recording
        assert baseline.mean[cue] is None and baseline.z(cue, 1.0) is None


# --- With a trained run -----------------------------------------------------------------------


def logged_test_rows(run_id: str) -> tuple[list[PredictionRecord], list[Path]]:
    """The run's logged test records (one fold) and their audio files, in the logged order."""
    (fold_run,) = fold_runs(MlflowClient().get_run(run_id)).values()
    records = load_run_records(fold_run.info.run_id, "fold-1")
    rows = {row.id: row for split in load_corpus(load_dataset_card("demo")).values() for row in split}
    return records, [Path(rows[r.id].audio) for r in records]


def predict_json(capsys: pytest.CaptureFixture[str], *args: str, status: int = 0) -> tuple[list[dict], str]:
    capsys.readouterr()  # what training printed before
    assert main(["predict", *args, "--json"]) == status
    out, err = capsys.readouterr()
    return [json.loads(line) for line in out.splitlines()], err


@pytest.mark.slow
def test_a_test_utterance_by_path_gets_the_record_its_run_logged(
    workdir: Path, capsys: pytest.CaptureFixture[str]
):
    run = run_experiment(RunRequest(system="full", backbone="tiny", fold="1", epochs=1, progress=False))
    records, paths = logged_test_rows(run.run_id)
    out, err = predict_json(capsys, run.run_id, *map(str, paths), "--out", "predictions.jsonl")
    assert "failed" not in err
    assert [o["file"] for o in out] == [str(p) for p in paths]
    for o, record in zip(out, records, strict=True):
        said = (o["emotion"], o["transcript"], o["descriptor"], o["raw_output"])
        assert said == (record.hyp_emotion, record.hyp_transcript, record.hyp_descriptor, record.raw_output)
        assert (o["run"], o["fold"]) == (run.run_id, "1")
        assert set(o["probabilities"]) == set(load_dataset_card("demo").labels)
        assert abs(sum(o["probabilities"].values()) - 1) < 1e-6
    assert [json.loads(line) for line in Path("predictions.jsonl").read_text().splitlines()] == out


def reencode(source: Path, folder: Path) -> tuple[Path, Path]:
    """`source` as 44.1 kHz stereo FLAC and as 22.05 kHz mono Ogg Vorbis."""
    wave, rate = sf.read(source, dtype="float32")
    hi = soxr.resample(wave, rate, 44100)
    flac, ogg = folder / "copy.flac", folder / "copy.ogg"
    sf.write(flac, np.stack([hi, hi], axis=1), 44100, subtype="PCM_24")
    sf.write(ogg, soxr.resample(wave, rate, 22050), 22050, format="OGG", subtype="VORBIS")
    return flac, ogg


def bad_inputs(folder: Path) -> list[Path]:
    """One of each input that cannot be predicted (the issue's list)."""
    (folder / "notes.wav").write_text("not audio\n")
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "silent.wav", np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    sf.write(folder / "short.wav", noise(0.01), SAMPLE_RATE)  # under the encoders' receptive field
    sf.write(folder / "long.wav", noise(31.0), SAMPLE_RATE)  # over the tiny backbone's 30 s
    (folder / "no-audio").mkdir()
    (folder / "no-audio" / "readme.txt").write_text("nothing to hear\n")
    return [
        folder / name
        for name in ("notes.wav", "empty.wav", "silent.wav", "short.wav", "long.wav", "no-audio")
    ]


@pytest.mark.slow
def test_re_encoded_copies_keep_the_emotion_and_bad_files_lose_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str]
):
    run = run_experiment(RunRequest(system="ssl-hubert", backbone="tiny", fold="1", epochs=1, progress=False))
    records, paths = logged_test_rows(run.run_id)
    out, _ = predict_json(capsys, run.run_id, *map(str, paths))
    assert [o["emotion"] for o in out] == [r.hyp_emotion for r in records]

    def margin(o: dict) -> float:
        first, second = sorted(o["probabilities"].values(), reverse=True)[:2]
        return first - second

    clearest = max(range(len(out)), key=lambda i: margin(out[i]))
    flac, ogg = reencode(paths[clearest], workdir)
    bad = bad_inputs(workdir)
    out, err = predict_json(
        capsys, run.run_id, str(bad[0]), str(flac), *map(str, bad[1:]), str(ogg), status=1
    )
    assert [o["file"] for o in out] == [str(flac), str(ogg)]  # every good file, in the order given
    assert {o["emotion"] for o in out} == {records[clearest].hyp_emotion}
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-6 for o in out)
    lines = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(lines) == len(bad)
    for path, why in zip(
        bad,
        (
            "not audio",
            "empty file",
            "silent audio",
            "too short",
            "cut it into utterances",
            "holds no audio",
        ),
        strict=True,
    ):
        assert sum(str(path) in line and why in line for line in lines) == 1, (path, why, lines)
    assert f"{len(bad)} failed, 2 predicted" in err and "Traceback" not in err

    assert main(["predict", run.run_id, str(flac)]) == 0  # the table
    assert str(flac) in capsys.readouterr().out

    not_trained = MlflowClient().create_run(MlflowClient().get_run(run.run_id).info.experiment_id)
    MlflowClient().set_terminated(not_trained.info.run_id)
    assert main(["predict", not_trained.info.run_id, str(flac)]) == 2
    assert "is not a training run" in capsys.readouterr().err

    (fold_run,) = fold_runs(MlflowClient().get_run(run.run_id)).values()
    model_file = Path(mlflow.artifacts.download_artifacts(fold_run.info.artifact_uri)) / "model"
    for path in model_file.iterdir():
        path.unlink()  # the file store's artifact itself: a model lost after the run
    assert main(["predict", run.run_id, str(flac)]) == 2
    err = capsys.readouterr().err
    assert "holds no model/system.pt" in err and "Traceback" not in err


@pytest.mark.slow
def test_explain_a_recording_of_ones_own(workdir: Path, capsys: pytest.CaptureFixture[str]):
    run = run_experiment(RunRequest(system="ssl-hubert", backbone="tiny", fold="1", epochs=1, progress=False))
    _, paths = logged_test_rows(run.run_id)
    flac, _ = reencode(paths[0], workdir)
    duration = len(load_audio(flac)) / SAMPLE_RATE

    capsys.readouterr()
    assert main(["explain", run.run_id, str(flac), "--k", "3", "--json", "--html", "page.html"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["audio"] == str(flac) and out["fold"] == "1"
    assert 1 <= len(out["windows"]) <= 3
    assert all(0 <= w["start"] < w["end"] <= duration + 1e-9 for w in out["windows"])
    assert out["baseline"]["source"].startswith("the recording itself")
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-6
    assert out["prediction"]["emotion"] in out["probabilities"]
    logged = {a.path for a in MlflowClient().list_artifacts(run.run_id, "explanations")}
    assert out["page"] == "explanations/page.html" and out["page"] in logged and out["figure"] in logged
    assert Path("page.html").read_text().count('class="window-clip"') == len(out["windows"])

    speaker = workdir / "speaker"
    speaker.mkdir()
    for i, path in enumerate(paths[1:4]):
        (speaker / f"{i}.wav").write_bytes(path.read_bytes())
    assert main(["explain", run.run_id, str(flac), "--baseline", str(speaker), "--no-figure"]) == 0
    text = capsys.readouterr().out
    assert f"the speaker's recordings in {speaker}: 3 files" in text and str(flac) in text

    (speaker / "0.wav").unlink()
    (speaker / "1.wav").unlink()
    assert main(["explain", run.run_id, str(flac), "--baseline", str(speaker)]) == 2
    assert "a speaker baseline needs 3 or more" in capsys.readouterr().err
