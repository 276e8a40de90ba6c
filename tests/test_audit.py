"""`data audit` and `run`'s overlap check: planted copies, re-encodings, transcripts and speakers
are found with both ids and their kind, clean corpora give nothing, and `run` refuses a fold whose
test audio it would train on unless told to train anyway (then the run and its cells are marked)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import soxr
from corpus_trees import IEMOCAP_LINES, prepare_all
from mlflow import MlflowClient

from benchmark.cli import main
from benchmark.config import benchmark_home
from benchmark.data import audit
from benchmark.data.audio import load_audio
from benchmark.data.audit import (
    COLUMNS,
    AuditReport,
    Finding,
    audit_corpora,
    fingerprints,
    normalise_transcript,
    read_audit,
)
from benchmark.data.manifest import Utterance, read_manifest, write_manifest
from benchmark.registry import load_dataset_card


def demo_manifest() -> Path:
    return benchmark_home() / "datasets" / "demo" / "all.jsonl"


def audit_demo() -> AuditReport:
    return audit_corpora([load_dataset_card("demo")], progress=False)


def pairs(report: AuditReport | list[Finding], kind: str) -> set[tuple[str, str]]:
    """(training id, evaluated id) of the findings of one kind."""
    findings = report.findings if isinstance(report, AuditReport) else report
    return {(f.train_id, f.test_id) for f in findings if f.kind == kind}


def both_ways(first: str, second: str) -> set[tuple[str, str]]:
    return {(first, second), (second, first)}


@dataclass(frozen=True)
class Planted:
    copied: str  # a group-1 utterance, and its copy (flac, another id) in group 2
    copy: str
    at_44k: str  # a group-1 utterance, and its copy written at 44.1 kHz in group 3
    copy_44k: str
    at_8k: str  # a group-1 utterance, and its copy written at 8 kHz in group 4
    copy_8k: str
    said: str  # a group-1 utterance whose transcript a group-4 one repeats, cased and punctuated
    repeated: str
    speaker: str  # a group-1 speaker now also speaking one utterance of group 5
    moved: str


def _row(source: Utterance, uid: str, audio: Path, group: str, speaker: str) -> Utterance:
    seconds = sf.info(str(audio)).duration
    update = {"id": uid, "audio": str(audio), "duration": seconds, "group": group, "speaker": speaker}
    return source.model_copy(update={**update, "transcript": f"planted {uid}", "descriptor": None})


def plant(folder: Path) -> Planted:
    """Plant one overlap of each kind in the prepared 40-utterance demo corpus (groups of 8)."""
    rows = read_manifest(demo_manifest())
    group = {g: [r for r in rows if r.group == g] for g in "12345"}
    one = group["1"]
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(str(folder / "copy.flac"), sf.read(one[0].audio)[0], 16000, subtype="PCM_16")
    for name, rate, source in (("44k", 44100, one[1]), ("8k", 8000, one[2])):
        wave = soxr.resample(load_audio(source.audio), 16000, rate, quality="HQ")
        sf.write(str(folder / f"copy_{name}.wav"), np.clip(wave, -1, 1), rate, subtype="PCM_16")
    added = [
        _row(group["2"][0], "demo_planted_copy", folder / "copy.flac", "2", group["2"][0].speaker),
        _row(group["3"][0], "demo_planted_44k", folder / "copy_44k.wav", "3", group["3"][0].speaker),
        _row(group["4"][0], "demo_planted_8k", folder / "copy_8k.wav", "4", group["4"][0].speaker),
    ]
    said, repeated, moved = one[3], group["4"][1], group["5"][1]
    echo = "  " + said.transcript.upper().replace(" ", "   ").replace(".", " ?! ")
    changed = {
        repeated.id: repeated.model_copy(update={"transcript": echo}),
        moved.id: moved.model_copy(update={"speaker": one[4].speaker}),
    }
    write_manifest(demo_manifest(), [changed.get(r.id, r) for r in rows] + added)
    return Planted(
        one[0].id, "demo_planted_copy", one[1].id, "demo_planted_44k", one[2].id, "demo_planted_8k",
        said.id, repeated.id, one[4].speaker, moved.id,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The fingerprints and the transcripts
# ---------------------------------------------------------------------------------------------


def test_transcripts_are_compared_case_punctuation_and_spacing_aside() -> None:
    assert normalise_transcript("  Hello,   WORLD!! How's it going?") == "hello world how s it going"
    assert normalise_transcript("悲伤，逆流成河。") == "悲伤 逆流成河"
    assert normalise_transcript(None) == normalise_transcript("...") == normalise_transcript("  ") == ""


def test_a_copy_hashes_alike_and_a_reencoding_has_the_same_envelope(workdir: Path) -> None:
    source = read_manifest(demo_manifest())[0]
    copies = {"flac": workdir / "copy.flac", "44k": workdir / "44k.wav", "8k": workdir / "8k.wav"}
    sf.write(str(copies["flac"]), sf.read(source.audio)[0], 16000, subtype="PCM_16")
    for name, rate in (("44k", 44100), ("8k", 8000)):
        wave = soxr.resample(load_audio(source.audio), 16000, rate, quality="HQ")
        sf.write(str(copies[name]), np.clip(wave, -1, 1), rate, subtype="PCM_16")
    tone = workdir / "tone.wav"
    sf.write(str(tone), 0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000), 16000, subtype="PCM_16")
    prints = fingerprints([source.audio, *copies.values(), tone])
    original = prints[source.audio]
    assert original.informative and not prints[str(tone)].informative  # a steady tone: exact only
    assert prints[str(copies["flac"])].sha256 == original.sha256
    for name in ("44k", "8k"):  # soxr's round trip is not bit-exact, the envelope nearly is
        copy = prints[str(copies[name])]
        assert copy.sha256 != original.sha256 and abs(copy.seconds - original.seconds) < audit.NEAR_SECONDS
        length = min(len(copy.envelope), len(original.envelope))
        assert np.corrcoef(copy.envelope[:length], original.envelope[:length])[0, 1] >= audit.NEAR_CORRELATION


def test_fingerprints_are_cached_per_file_and_remade_when_it_changes(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = read_manifest(demo_manifest())
    first = fingerprints([row.audio for row in rows])
    assert len(list((benchmark_home() / "audit").rglob("*.bin"))) == len(rows)

    def unmeasurable(path):
        raise AssertionError(f"{path} decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(audit, "measure", unmeasurable)
        again = fingerprints([row.audio for row in rows])
    assert {p: f.sha256 for p, f in again.items()} == {p: f.sha256 for p, f in first.items()}
    changed = Path(rows[0].audio)
    shutil.copy(rows[1].audio, changed)  # new content, size and modification time: measured again
    assert fingerprints([changed])[str(changed)].sha256 == first[rows[1].audio].sha256


# ---------------------------------------------------------------------------------------------
# `data audit` on the demo corpus, clean and with planted overlaps
# ---------------------------------------------------------------------------------------------


def test_the_clean_demo_corpus_has_no_overlap(workdir: Path) -> None:
    report = audit_demo()
    assert report.corpora == ["demo"] and report.utterances == 40
    assert report.findings == []


def test_planted_overlaps_are_found_with_both_ids_and_their_kind(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = plant(workdir / "planted")
    report = audit_demo()
    # Each pair both ways: each side is in the test group of one fold and trains in the other's.
    assert pairs(report, "audio-exact") == both_ways(p.copy, p.copied)
    assert pairs(report, "audio-near") == both_ways(p.copy_44k, p.at_44k) | both_ways(p.copy_8k, p.at_8k)
    assert pairs(report, "transcript") == both_ways(p.repeated, p.said)
    speakers = {(f.shared, f.train_part, f.test_part) for f in report.findings if f.kind == "speaker"}
    assert speakers == {(p.speaker, "5", "1"), (p.speaker, "1", "5")}
    assert len(report.findings) == 10  # nothing else: the clean corpus has no overlap
    exact = next(f for f in report.findings if f.kind == "audio-exact" and f.test_id == p.copied)
    assert exact.fields()[:7] == ("audio-exact", "demo", "2", p.copy, "demo", "1", p.copied)

    out = workdir / "out" / "audit.tsv"
    assert main(["data", "audit", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for kind in ("audio-exact", "audio-near", "transcript", "speaker"):
        assert kind in printed
    assert p.copy in printed and f"wrote {out}: 10 finding(s)" in " ".join(printed.split())
    assert out.read_text().splitlines()[0].split("\t") == list(COLUMNS)
    rows = read_audit(out)
    assert [tuple(row[c] for c in COLUMNS) for row in rows] == [f.fields() for f in report.findings]
    assert {(row["train_id"], row["test_id"]) for row in rows if row["kind"] == "audio-exact"} == both_ways(
        p.copy, p.copied
    )
    here = workdir / "here"
    here.mkdir()
    with pytest.MonkeyPatch.context() as patch:  # without --out: ./audit.tsv
        patch.chdir(here)
        assert main(["data", "audit", "demo", "--no-progress"]) == 0
    assert len(read_audit(here / "audit.tsv")) == 10


def test_auditing_an_unprepared_corpus_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "audit", "iemocap"]) == 2
    assert "not prepared: iemocap" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# `run`: refused before training, or trained with --allow-overlap and marked
# ---------------------------------------------------------------------------------------------

QUICK_RUN = ["run", "--system", "ssl-hubert", "--backbone", "tiny", "--epochs", "1"]


def test_run_refuses_a_fold_whose_test_audio_it_would_train_on(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = plant(workdir / "planted")
    assert main(QUICK_RUN) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    error, hint = lines[at:]
    assert error == (
        f"error: fold 1: test utterance {p.copied} (demo) has the audio of training utterance {p.copy} "
        "(demo) (audio-exact); 3 such pair(s); see `python -m benchmark data audit`"
    )
    assert "--allow-overlap" in hint
    assert mlflow.search_runs(search_all_experiments=True).empty  # stopped before any run opened


@pytest.mark.slow
def test_allow_overlap_trains_tags_the_run_and_marks_its_leaderboard_cells(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmark.leaderboard.board import build_boards
    from benchmark.leaderboard.render import render

    p = plant(workdir / "planted")
    assert main([*QUICK_RUN, "--allow-overlap"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "note: audit: 3 test clip(s) had their audio in the training mixture (--allow-overlap); " in out
    assert "1 evaluated utterance(s) share a transcript" in out and "1 speaker(s) are on both sides" in out
    (run,) = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("explainable-ser").experiment_id],
        filter_string="tags.`mlflow.parentRunId` IS NULL",
    )
    assert run.data.tags["overlap"] == "3"  # the test clips of fold 1 that were trained on
    metrics = run.data.metrics
    assert [metrics[f"audit.{kind}"] for kind in audit.KINDS] == [1, 2, 1, 1]
    logged = read_audit(Path(MlflowClient().download_artifacts(run.info.run_id, "audit.tsv")))
    assert {(r["kind"], r["train_id"], r["test_id"]) for r in logged if r["kind"].startswith("audio")} == {
        ("audio-exact", p.copy, p.copied),
        ("audio-near", p.copy_44k, p.at_44k),
        ("audio-near", p.copy_8k, p.at_8k),
    }

    board = render(build_boards("ser", ["demo"], [run.info.run_id]), "md")
    (line,) = [line for line in board.splitlines() if line.startswith("| 1 | ssl-hubert | measured |")]
    assert line.count("†") == 2  # both demo columns, UA and WER
    assert (
        f"† row 1 on demo (run {run.info.run_id}): trained with 3 test clip(s) in its training mixture"
        in board
    )
    assert "\\dagger" in render(build_boards("ser", ["demo"], [run.info.run_id]), "latex")


# ---------------------------------------------------------------------------------------------
# The release-layout trees of tests/corpus_trees.py
# ---------------------------------------------------------------------------------------------

IEMOCAP_CLIPS = [suffix for suffix, _, _ in IEMOCAP_LINES]


def across_sessions() -> set[tuple[str, str]]:
    """Every IEMOCAP clip against the same line of every other session (training, tested)."""
    return {
        (f"Ses0{m}F_impro01_{suffix}", f"Ses0{n}F_impro01_{suffix}")
        for suffix in IEMOCAP_CLIPS
        for m in range(1, 6)
        for n in range(1, 6)
        if m != n
    }


def audit_trees(trees: Path, distinct: bool) -> AuditReport:
    prepare_all(trees, distinct)
    cards = [load_dataset_card(name) for name in ("iemocap", "meld", "speechcraft", "emosec")]
    report = audit_corpora(cards, progress=False)
    assert report.utterances == 20 + 8 + 8 + 2
    # What they share either way: the five sessions act the same four lines (as IEMOCAP's scripted
    # sessions share sentences), and MELD's cast speaks in every split (Ross in dev, Phoebe in test).
    assert pairs(report, "transcript") == across_sessions()
    speakers = {
        (f.shared, f.train_part, f.test_corpus, f.test_part) for f in report.findings if f.kind == "speaker"
    }
    assert speakers == {("Ross", "train", "meld", "dev"), ("Phoebe", "train", "meld", "test")}
    return report


def test_the_release_trees_share_lines_and_a_cast_but_no_audio(tmp_path: Path) -> None:
    report = audit_trees(tmp_path / "trees", distinct=True)
    assert not [f for f in report.findings if f.is_audio]
    assert len(report.findings) == 80 + 2


def test_with_shared_tones_the_release_trees_repeat_clips_across_folds_and_corpora(tmp_path: Path) -> None:
    report = audit_trees(tmp_path / "trees", distinct=False)
    exact = {
        (f.train_corpus, f.train_id, f.test_corpus, f.test_id)
        for f in report.findings
        if f.kind == "audio-exact"
    }
    iemocap = {("iemocap", train, "iemocap", test) for train, test in across_sessions()}
    meld = {  # the same 0.4 s and 0.45 s clips open every split's dialogue 0
        ("meld", f"meld_train_dia0_utt{i}", "meld", f"meld_{split}_dia0_utt{i}")
        for i in (0, 1)
        for split in ("dev", "test")
    }
    emosec = {  # both EMOSEC clips are SpeechCraft's 0.5 s clip: zero-shot after training on it
        ("speechcraft", "speechcraft_POD0000000002_S0000012", "emosec", f"emosec_tx_emotion_{uid}")
        for uid in ("00201000015", "00201000107")
    }
    assert exact == iemocap | meld | emosec
    assert not pairs(report, "audio-near")  # steady tones are compared exactly only
    assert len(report.findings) == len(exact) + 80 + 2
