"""User mistakes give one `error:` line (and a hint), exit status 2 and no traceback.

Audio that the encoder cannot take (too short, silent, NaN) is caught when a corpus is prepared,
at its row, and at run time with the file's name; values the configs cannot use are refused with
the field they belong to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_reader_iemocap import good_session
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, WavLMConfig

from benchmark.cli import main
from benchmark.data.audio import (
    DEMO_FRONT_END,
    MIN_SAMPLES,
    SSL_FRONT_END,
    AudioError,
    load_audio,
    probe_audio,
    receptive_field,
)
from benchmark.data.manifest import read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.errors import BenchmarkError
from benchmark.registry import load_dataset_card
from benchmark.train.demo_backbone import demo_config


@pytest.fixture(autouse=True)
def unwrapped_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at 160 columns when stderr is not a terminal; these tests check the messages
    themselves, which must be one line however long their paths are."""
    from benchmark.console import error_console

    monkeypatch.setattr(error_console, "soft_wrap", True)


def one_error(capsys: pytest.CaptureFixture[str]) -> tuple[str, str | None]:
    """(error line, hint line or None) that end a failed command's stderr (library log lines may come
    before them); fails on a traceback or anything else after the error line."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.rstrip("\n").split("\n")
    lines = lines[next((i for i, line in enumerate(lines) if line.startswith("error: ")), 0) :]
    assert lines[0].startswith("error: ") and len(lines) <= 2, err
    if len(lines) == 2:
        assert lines[1].startswith("  hint: "), err
        return lines[0], lines[1]
    return lines[0], None


# ---------------------------------------------------------------------------------------------
# Audio the encoder cannot use
# ---------------------------------------------------------------------------------------------


def test_min_samples_is_the_receptive_field_of_every_front_end():
    for config in (HubertConfig(), Wav2Vec2Config(), WavLMConfig()):  # the large checkpoints' front end
        assert (tuple(config.conv_kernel), tuple(config.conv_stride)) == SSL_FRONT_END
    assert receptive_field(*SSL_FRONT_END) == 400  # 25 ms at 16 kHz
    demo = demo_config()
    assert (tuple(demo.conv_kernel), tuple(demo.conv_stride)) == DEMO_FRONT_END
    assert MIN_SAMPLES == receptive_field(*DEMO_FRONT_END) == 560  # 35 ms

    # The bound is tight: one sample less and the encoder's conv1d fails.
    model = HubertModel(HubertConfig(**{**demo.to_dict(), "num_hidden_layers": 1})).eval()
    with torch.no_grad():
        assert model(torch.randn(1, MIN_SAMPLES)).last_hidden_state.shape[1] == 1
        with pytest.raises(RuntimeError):
            model(torch.randn(1, MIN_SAMPLES - 1))


def tone(samples: int, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(samples) / rate)).astype(np.float32)


def write_bad(path: Path, kind: str) -> None:
    """A wav the encoder cannot use: a real header with 8 samples (60 bytes), silence, NaN, or a
    44.1 kHz file that is long enough before resampling and too short after it."""
    if kind == "short":
        sf.write(path, tone(8), 16000, subtype="PCM_16")
        assert path.stat().st_size == 60
    elif kind == "silent":
        sf.write(path, np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    elif kind == "nan":
        wave = tone(8000)
        wave[100] = np.nan
        sf.write(path, wave, 16000, subtype="FLOAT")
    elif kind == "short-44k":
        sf.write(path, tone(1200, 44100), 44100, subtype="PCM_16")  # 435 samples at 16 kHz


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("short", r"audio too short \(0\.5 ms; the encoder needs at least 35 ms, 560 samples at 16 kHz\)"),
        ("short-44k", "audio too short"),
        ("silent", r"silent audio \(peak amplitude 0, below 0\.0001\)"),
        ("nan", "NaN or infinite samples"),
    ],
)
def test_probe_rejects_unusable_audio_naming_the_file(tmp_path: Path, kind: str, reason: str):
    path = tmp_path / f"{kind}.wav"
    write_bad(path, kind)
    with pytest.raises(AudioError, match=reason) as err:
        probe_audio(path)
    assert err.value.message.startswith(f"{path}: ")


def test_probe_accepts_the_shortest_usable_and_quiet_audio(tmp_path: Path):
    sf.write(tmp_path / "edge.wav", tone(MIN_SAMPLES), 16000, subtype="PCM_16")
    assert probe_audio(tmp_path / "edge.wav") == pytest.approx(MIN_SAMPLES / 16000)
    quiet = np.zeros(8000, np.float32)
    quiet[4000] = 2e-4  # a few 16-bit steps above silence
    sf.write(tmp_path / "quiet.wav", quiet, 16000, subtype="FLOAT")
    assert probe_audio(tmp_path / "quiet.wav") == pytest.approx(0.5)


def test_load_audio_at_run_time_names_a_too_short_file(tmp_path: Path):
    write_bad(tmp_path / "cut.wav", "short")
    with pytest.raises(AudioError, match=rf"^{tmp_path / 'cut.wav'}: audio too short"):
        load_audio(tmp_path / "cut.wav")


def test_the_feature_cache_at_run_time_names_a_too_short_file(tmp_path: Path):
    from benchmark.data.features import FeatureCache
    from benchmark.data.manifest import Utterance
    from benchmark.nn.encoder import build_encoder

    write_bad(tmp_path / "cut.wav", "short")
    row = Utterance(
        id="cut", audio=str(tmp_path / "cut.wav"), duration=0.5, transcript="hi", emotion=None,
        descriptor=None, speaker="s1", gender=None, group="1", dataset="test",
    )  # fmt: skip
    cache = FeatureCache(tmp_path / "features", build_encoder("tiny", "hubert"), progress=False)
    with pytest.raises(AudioError, match=rf"^{tmp_path / 'cut.wav'}: audio too short"):
        cache.get([row])


BAD_SESSIONS = {1: "short", 2: "silent", 3: "nan", 4: "short-44k"}  # session 5 stays clean


def release_with_bad_audio(root: Path) -> dict[int, Path]:
    """Five clean IEMOCAP sessions, then the first wav of sessions 1-4 replaced by unusable audio;
    returns the label file of each damaged session (the damaged utterance is on its line 3)."""
    labels = {}
    for number in range(1, 6):
        good_session(root, number)
    for number, kind in BAD_SESSIONS.items():
        dialog = f"Ses0{number}F_impro02"
        write_bad(root / f"Session{number}" / "sentences" / "wav" / dialog / f"{dialog}_F000.wav", kind)
        labels[number] = root / f"Session{number}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
    return labels


def test_prepare_skips_unusable_audio_at_its_row(tmp_path: Path):
    root, out = tmp_path / "IEMOCAP_full_release", tmp_path / "prepared"
    labels = release_with_bad_audio(root)
    report = prepare_corpus(load_dataset_card("iemocap"), root, out)

    located = {(issue.source, issue.line): issue.reason for issue in report.issues}
    assert set(located) == {(str(labels[n]), 3) for n in BAD_SESSIONS}
    assert "audio too short" in located[str(labels[1]), 3]
    assert "silent audio" in located[str(labels[2]), 3]
    assert "NaN" in located[str(labels[3]), 3]
    assert "audio too short" in located[str(labels[4]), 3]
    rows = read_manifest(out / "all.jsonl", check_audio=True)
    kept = {row.id for row in rows if row.id.endswith("_impro02_F000")}
    assert len(rows) == 6 and kept == {"Ses05F_impro02_F000"}


def test_strict_prepare_fails_on_unusable_audio_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    root, out = tmp_path / "IEMOCAP_full_release", tmp_path / "prepared"
    labels = release_with_bad_audio(root)
    with pytest.raises(BenchmarkError, match="4 bad row") as err:
        prepare_corpus(load_dataset_card("iemocap"), root, out, strict=True)
    assert f"{labels[1]}:3: Ses01F_impro02_F000: " in err.value.message
    assert not out.exists()

    assert main(["data", "prepare", "iemocap", "--root", str(root), "--out", str(out), "--strict"]) == 2
    err_text = capsys.readouterr().err
    assert "Traceback" not in err_text and f"{labels[1]}:3:" in err_text and "audio too short" in err_text
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Paths and files given on the command line
# ---------------------------------------------------------------------------------------------


def test_prepare_refuses_an_existing_file_as_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "IEMOCAP_full_release"
    good_session(root, 1)
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    assert main(["data", "prepare", "iemocap", "--root", str(root), "--out", str(target)]) == 2
    error, hint = one_error(capsys)
    assert error == f"error: {target}: exists and is not a folder" and "--out" in hint
    assert target.read_text() == "mine"


def test_leaderboard_refuses_an_unwritable_out_before_building_the_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from benchmark.leaderboard import board as leaderboard

    def not_yet(*args, **kwargs):
        raise AssertionError("the board was built before --out was checked")

    monkeypatch.setattr(leaderboard, "build_board", not_yet)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out in (blocker / "dir" / "x.md", tmp_path):  # a folder that cannot exist; a folder as the file
        assert main(["leaderboard", "--table", "ser", "--out", str(out)]) == 2
        error, _ = one_error(capsys)
        assert error.startswith(f"error: {out}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no temporary file left


def test_leaderboard_refuses_an_unknown_dataset(capsys: pytest.CaptureFixture[str]):
    assert main(["leaderboard", "--table", "ser", "--dataset", "nosuch"]) == 2
    error, hint = one_error(capsys)
    assert error == "error: unknown dataset 'nosuch'" and "demo" in hint and "iemocap" in hint


@pytest.mark.parametrize("alpha", ["7", "0", "1", "-0.1", "nan"])
def test_compare_refuses_an_alpha_outside_0_1(alpha: str, capsys: pytest.CaptureFixture[str]):
    assert main(["compare", "--baseline", "no-fd", "--alpha", alpha]) == 2
    error, _ = one_error(capsys)
    assert error.startswith("error: alpha must be strictly between 0 and 1")


# ---------------------------------------------------------------------------------------------
# Config values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--beta", "inf"], "beta"),
        (["--beta", "nan"], "beta"),
        (["--beta", "-1"], "beta"),
        (["--set", "decoder.lora_r=0"], "decoder.lora_r"),
        (["--set", "decoder.lora_alpha=0"], "decoder.lora_alpha"),
        (["--set", "decoder.lora_dropout=5"], "decoder.lora_dropout"),
        (["--set", "decoder.lora_dropout=1"], "decoder.lora_dropout"),
        (["--set", "training.max_grad_norm=.inf"], "training.max_grad_norm"),
    ],
)
def test_run_refuses_unusable_config_values_naming_the_field(
    args: list[str], field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--system", "full", "--backbone", "tiny", *args]) == 2
    error, _ = one_error(capsys)
    assert f"field '{field}'" in error


# ---------------------------------------------------------------------------------------------
# A damaged demo cache
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("damage", [b'{"id": "demo_s01_neu', b"\xff\xfe garbage \x00\n"])
def test_damaged_demo_cache_says_how_to_rebuild_it(
    damage: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from benchmark.data.demo import build_demo_corpus

    monkeypatch.chdir(tmp_path)
    manifest = build_demo_corpus(size=8, seed=0, progress=False)
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join(lines[:5]) + damage)  # a truncated or garbage sixth line

    for command in (["data", "demo", "--size", "8"], ["run", "--system", "full", "--backbone", "tiny"]):
        assert main(command) == 2
        error, hint = one_error(capsys)
        assert error.startswith(f"error: {manifest}:6: ")
        assert hint == "  hint: run `python -m benchmark data demo --rebuild`"


@pytest.mark.slow
def test_rebuild_replaces_a_damaged_demo_cache(capsys: pytest.CaptureFixture[str]):
    from benchmark.data.demo import build_demo_corpus

    manifest = build_demo_corpus(size=8, seed=0, progress=False)
    Path(read_manifest(manifest)[0].audio).unlink()
    assert main(["data", "demo", "--size", "8"]) == 2
    error, hint = one_error(capsys)
    assert error.startswith(f"error: {manifest}:1: audio file not found") and "--rebuild" in hint

    assert main(["data", "demo", "--size", "8", "--rebuild"]) == 0
    assert len(read_manifest(manifest, check_audio=True)) == 8
    assert sorted(p.name for p in manifest.parent.parent.iterdir()) == ["demo"]  # nothing left beside it
