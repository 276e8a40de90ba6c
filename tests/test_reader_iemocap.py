"""IEMOCAP reader on a small release written in the real on-disk format, quirks included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmark.data.manifest import read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.data.readers.iemocap import read
from benchmark.errors import BenchmarkError
from benchmark.registry import load_dataset_card

VAD = "[2.5000, 2.5000, 2.5000]"
EVALUATORS = ["C-E2:\tNeutral;\t()", "C-F1:\tNeutral;\t(curious)", "A-E3:\tval 3; act 2; dom  2;\t()"]


def write_dialog(session_dir: Path, dialog: str, rows: list[tuple[str, str, str, str]]) -> Path:
    """Write one dialog's label file, transcription file and wavs; returns the label file.

    rows: (utterance id, raw label, transcript or None for "not in the transcription file",
    wav: "ok", "absent" or "corrupt"). Each label block is the label line, three evaluator lines
    and a blank line, after a `%` header and a blank line: utterance i sits on line 3 + 5 * i.
    """
    labels = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    transcripts = [f"{dialog}_FXX0 [001.0000-002.0000]: Not an utterance.", "M: [LAUGHTER]"]
    for i, (utt_id, label, text, wav) in enumerate(rows):
        start = 2.0 * i + 1
        labels += [f"[{start:.4f} - {start + 1:.4f}]\t{utt_id}\t{label}\t{VAD}", *EVALUATORS, ""]
        if text is not None:
            transcripts.append(f"{utt_id} [{start:08.4f}-{start + 1:08.4f}]: {text}".rstrip())
        path = session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        if wav == "ok":
            seconds = 0.25 + 0.05 * i
            tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(16000 * seconds)) / 16000)
            sf.write(path, tone.astype(np.float32), 16000, subtype="PCM_16")
        elif wav == "corrupt":
            path.write_bytes(b"this is not a RIFF header, just some text" * 4)
    label_file = session_dir / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text("\n".join(labels) + "\n")
    transcript_file = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
    transcript_file.parent.mkdir(parents=True, exist_ok=True)
    transcript_file.write_text("\n".join(transcripts) + "\n")
    return label_file


def add_release_clutter(session_dir: Path) -> None:
    """The real release's non-label files beside the label files; read as labels, each would fail."""
    label_dir = session_dir / "dialog" / "EmoEvaluation"
    bogus = f"[1.0000 - 2.0000]\tSes01F_bogus_F000\tang\t{VAD}\n"
    (label_dir / "Categorical").mkdir()
    (label_dir / "Categorical" / "Ses01F_impro01_e1_cat.txt").write_text(
        "Ses01F_impro01_F000 :Neutral state; ()\n" + bogus
    )
    (label_dir / "Attribute").mkdir()
    (label_dir / "Attribute" / "Ses01F_impro01_e3_atr.txt").write_text(bogus)
    (label_dir / "._Ses01F_impro01.txt").write_bytes(
        b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X\n" + bogus.encode()
    )
    (label_dir / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (label_dir / "Ses01F_impro01.pk").write_bytes(bytes(range(256)))
    (label_dir / "Ses01F_impro01.anvil").write_text("<annotation/>\n")
    (session_dir / "dialog" / "transcriptions" / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07junk")


def good_session(root: Path, number: int) -> None:
    session_dir = root / f"Session{number}"
    dialog = f"Ses0{number}F_impro02"
    write_dialog(
        session_dir,
        dialog,
        [(f"{dialog}_F000", "ang", "Get out!", "ok"), (f"{dialog}_M000", "neu", "Fine, fine.", "ok")],
    )


def make_release(root: Path) -> dict[str, Path]:
    """Sessions 1 and 2 (Session3..5 are missing); returns the label files by dialog."""
    session1 = root / "Session1"
    impro = write_dialog(
        session1,
        "Ses01F_impro01",
        [
            ("Ses01F_impro01_F000", "neu", "Excuse me.", "ok"),  # line 3
            ("Ses01F_impro01_M000", "exc", "Yeah, I'd love to, so, you know, sure.", "ok"),  # line 8
            ("Ses01F_impro01_F001", "fru", "Ugh.", "ok"),  # line 13: dropped
            ("Ses01F_impro01_M001", "xxx", "Hm.", "ok"),  # line 18: dropped
            ("Ses01F_impro01_F002", "zzz", "What?", "ok"),  # line 23: unknown label
            ("Ses01F_impro01_M002", "ang", "No way.", "absent"),  # line 28: no wav
        ],
    )
    script = write_dialog(
        session1,
        "Ses01M_script01_1",
        [
            ("Ses01M_script01_1_F000", "sad", "It's gone, all of it.", "ok"),  # line 3
            ("Ses01M_script01_1_M000", "neu", "", "ok"),  # line 8: empty transcript
            ("Ses01M_script01_1_F001", "hap", "Wonderful!", "corrupt"),  # line 13: corrupt wav
            ("Ses01M_script01_1_M001", "neu", None, "ok"),  # line 18: not in the transcription file
        ],
    )
    add_release_clutter(session1)
    good_session(root, 2)
    return {"impro": impro, "script": script}


@pytest.fixture
def card():
    return load_dataset_card("iemocap")


def test_reader_keeps_good_rows_and_locates_every_bad_one(tmp_path: Path, card):
    files = make_release(tmp_path / "IEMOCAP_full_release")
    result = read(tmp_path / "IEMOCAP_full_release", card, tmp_path / "out")

    rows = result.splits["all"]
    assert list(result.splits) == ["all"]
    assert [r.id for r in rows] == [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_M000",
        "Ses01M_script01_1_F000",
        "Ses02F_impro02_F000",
        "Ses02F_impro02_M000",
    ]
    by_id = {r.id: r for r in rows}
    excited = by_id["Ses01F_impro01_M000"]
    assert excited.emotion == "happy"
    assert (excited.speaker, excited.gender, excited.group) == ("Ses01M", "male", "Session1")
    assert excited.transcript == "Yeah, I'd love to, so, you know, sure."
    assert excited.duration == pytest.approx(0.30)
    assert Path(excited.audio).is_absolute() and Path(excited.audio).is_file()
    assert excited.dataset == "iemocap" and excited.descriptor is None
    assert {r.language for r in rows} == {"en"}  # the card's language
    sad = by_id["Ses01M_script01_1_F000"]
    assert (sad.emotion, sad.speaker, sad.gender) == ("sad", "Ses01F", "female")
    assert {r.group for r in rows} <= set(card.protocol.folds)

    assert result.dropped == {"fru": 1, "xxx": 1}
    located = {(Path(i.source).name, i.line): i.reason for i in result.issues}
    impro, script = files["impro"].name, files["script"].name
    assert set(located) == {
        (impro, 23),
        (impro, 28),
        (script, 8),
        (script, 13),
        (script, 18),
        ("Session3", None),
        ("Session4", None),
        ("Session5", None),
    }
    assert "unknown emotion label 'zzz'" in located[impro, 23]
    assert "audio file not found" in located[impro, 28]
    assert "empty transcript" in located[script, 8]
    assert "corrupt" in located[script, 13]
    assert "missing from" in located[script, 18]
    assert "session folder not found" in located["Session3", None]
    assert all(i.source == str(files["impro"]) for i in result.issues if Path(i.source).name == impro)


def test_prepare_writes_manifest_and_issues(tmp_path: Path, card):
    root, out = tmp_path / "IEMOCAP_full_release", tmp_path / "prepared"
    make_release(root)
    report = prepare_corpus(card, root, out)

    rows = read_manifest(out / "all.jsonl", check_audio=True)
    assert len(rows) == 5
    issues = (out / "issues.tsv").read_text().splitlines()
    assert issues[0] == "source\tline\treason" and len(issues) == 1 + len(report.issues) == 9
    assert json.loads((out / "prepare.json").read_text())["dropped_labels"] == {"fru": 1, "xxx": 1}
    assert {s.group for s in report.summaries} == {"Session1", "Session2"}


def test_strict_names_file_and_line_and_writes_nothing(tmp_path: Path, card):
    root, out = tmp_path / "IEMOCAP_full_release", tmp_path / "prepared"
    files = make_release(root)
    fresh = tmp_path / "fresh"
    with pytest.raises(BenchmarkError, match="--strict") as err:
        prepare_corpus(card, root, fresh, strict=True)
    assert f"{files['impro']}:23: Ses01F_impro01_F002: unknown emotion label 'zzz'" in str(err.value)
    assert f"{files['script']}:13:" in str(err.value)
    assert not (fresh / "all.jsonl").exists() and not (fresh / "issues.tsv").exists()

    prepare_corpus(card, root, out)
    before = (out / "all.jsonl").read_bytes()
    (
        files["impro"].parent.parent.parent
        / "sentences"
        / "wav"
        / "Ses01F_impro01"
        / "Ses01F_impro01_F000.wav"
    ).unlink()
    with pytest.raises(
        BenchmarkError, match=r"Ses01F_impro01\.txt:3: Ses01F_impro01_F000: audio file not found"
    ):
        prepare_corpus(card, root, out, strict=True)
    assert (out / "all.jsonl").read_bytes() == before


def test_strict_accepts_a_clean_release(tmp_path: Path, card):
    root = tmp_path / "IEMOCAP_full_release"
    for number in range(1, 6):
        good_session(root, number)
    add_release_clutter(root / "Session1")
    report = prepare_corpus(card, root, tmp_path / "prepared", strict=True)
    assert report.issues == [] and not report.dropped
    rows = read_manifest(tmp_path / "prepared" / "all.jsonl")
    assert sorted({r.group for r in rows}) == card.protocol.folds
    assert {r.speaker for r in rows} == {f"Ses0{n}{g}" for n in range(1, 6) for g in "FM"}
