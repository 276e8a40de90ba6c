"""EMOSEC reader on fixtures in the layout of SECap's released test set (`SECap/dataset/`).

`fid2captions.json` maps utterance ids to captions; `text.txt` holds `<id> <transcript>` lines with
a space or a tab and trailing spaces; `wav.scp` lists paths relative to the repository root
(`dataset/wav/<id>.wav`); the SECap README's layout has only `wav/<id>.wav`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmark.data.manifest import Utterance, read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.data.readers.emosec import read
from benchmark.errors import BenchmarkError
from benchmark.registry import load_dataset_card


def write_json_lines(path: Path, entries: list[tuple[str, object]]) -> None:
    """One entry per line, so entry k (0-based) starts on line k + 2."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in entries]
    body = ",\n".join(lines)
    path.write_text("{\n" + body + "\n}\n", encoding="utf-8")


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), 0.1 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "SECap" / "dataset"
    write_wav(root / "wav" / "tx_emotion_00201000015.wav")
    write_wav(root / "wav" / "tx_emulate_00_060_0001_000030.wav", rate=24000)
    write_wav(root / "wav" / "tx_xiao_0200103000100.wav")
    write_wav(root / "wav" / "tx_xiao_0200103000101.wav")
    (root / "wav" / "tx_emotion_00201000220.wav").write_bytes(b"RIFF\x00\x00not a wav")
    (root / "wav" / "._tx_emotion_00201000015.wav").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "wav" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_json_lines(
        root / "fid2captions.json",
        [
            ("tx_emotion_00201000015", "悲伤  逆流成河"),
            ("tx_emulate_00_060_0001_000030", "心情畅快，语气坚定"),
            ("tx_xiao_0200103000095", ""),
            ("tx_emotion_00201000107", "伤心难过"),
            ("tx_emotion_00201000015", "重复的条目"),
            ("tx_emotion_00201000148", "伤心难过，又无能为力"),
            ("tx_emotion_00201000209", ["a", "list"]),
            ("tx_emotion_00201000220", "悲痛到无法自拔"),
            # The paper's EMOSEC has English captions too; a Mandarin one may hold a Latin word.
            ("tx_xiao_0200103000100", "A woman speaks slowly in a low, sad voice."),
            ("tx_xiao_0200103000101", "语气轻松，有点 OK 的感觉"),
        ],
    )
    (root / "wav.scp").write_text(
        "tx_emotion_00201000015 dataset/wav/tx_emotion_00201000015.wav\n"
        "tx_emulate_00_060_0001_000030 wav/tx_emulate_00_060_0001_000030.wav\n"
        "tx_emotion_00201000107 dataset/wav/tx_emotion_00201000107.wav\n"
        "tx_xiao_0200103000095 dataset/wav/tx_xiao_0200103000095.wav\n"
        "\n"
        "tx_emotion_00201000999 dataset/wav/tx_emotion_00201000999.wav\n"
        "tx_broken_line\n"
        "tx_emotion_00201000220 dataset/wav/tx_emotion_00201000220.wav\n"
        "tx_emotion_00201000015 dataset/wav/other.wav\n"
        "tx_xiao_0200103000100 dataset/wav/tx_xiao_0200103000100.wav\n"
        "tx_xiao_0200103000101 dataset/wav/tx_xiao_0200103000101.wav\n",
        encoding="utf-8",
    )
    (root / "text.txt").write_text(
        "tx_emotion_00201000015 一年又一年,一日复一日。 \n"
        "tx_emulate_00_060_0001_000030\t太正确了，训练有素。\n",
        encoding="utf-8",
    )
    (root / "utt2spk").write_text("tx_emotion_00201000015 spk01\n", encoding="utf-8")
    (root / "spk2gender").write_text("spk01 f\n", encoding="utf-8")
    return root


def expected_rows(root: Path) -> list[Utterance]:
    wav = (root / "wav").resolve()
    return [
        Utterance(
            id="emosec_tx_emotion_00201000015",
            audio=str(wav / "tx_emotion_00201000015.wav"),
            duration=0.5,
            transcript="一年又一年,一日复一日。",
            emotion=None,
            descriptor="悲伤 逆流成河",
            speaker="spk01",
            gender="female",
            group="tx_emotion",
            dataset="emosec",
            language="zh",
        ),
        Utterance(
            id="emosec_tx_emulate_00_060_0001_000030",
            audio=str(wav / "tx_emulate_00_060_0001_000030.wav"),
            duration=0.5,
            transcript="太正确了，训练有素。",
            emotion=None,
            descriptor="心情畅快，语气坚定",
            speaker="unknown",
            gender=None,
            group="tx_emulate",
            dataset="emosec",
            language="zh",
        ),
        Utterance(
            id="emosec_tx_xiao_0200103000100",
            audio=str(wav / "tx_xiao_0200103000100.wav"),
            duration=0.5,
            transcript=None,
            emotion=None,
            descriptor="A woman speaks slowly in a low, sad voice.",
            speaker="unknown",
            gender=None,
            group="tx_xiao",
            dataset="emosec",
            language="en",  # detected from the caption, not the card's zh
        ),
        Utterance(
            id="emosec_tx_xiao_0200103000101",
            audio=str(wav / "tx_xiao_0200103000101.wav"),
            duration=0.5,
            transcript=None,
            emotion=None,
            descriptor="语气轻松，有点 OK 的感觉",
            speaker="unknown",
            gender=None,
            group="tx_xiao",
            dataset="emosec",
            language="zh",  # 9 ideographs against 2 Latin letters
        ),
    ]


def test_rows_and_issues(corpus: Path, tmp_path: Path) -> None:
    result = read(corpus, load_dataset_card("emosec"), tmp_path / "out")
    assert list(result.splits) == ["test"]
    assert result.splits["test"] == expected_rows(corpus)
    captions, scp = str(corpus / "fid2captions.json"), str(corpus / "wav.scp")
    issues = {(issue.source, issue.line): issue.reason for issue in result.issues}
    corrupt = issues.get((scp, 8), "")
    assert issues == {
        (captions, 4): "tx_xiao_0200103000095: empty or missing caption",
        (scp, 3): "tx_emotion_00201000107: audio not found: dataset/wav/tx_emotion_00201000107.wav",
        (captions, 6): "tx_emotion_00201000015: captioned twice (first on line 2)",
        (captions, 7): "tx_emotion_00201000148: not listed in wav.scp",
        (captions, 8): "tx_emotion_00201000209: empty or missing caption",
        (scp, 6): "tx_emotion_00201000999: no caption in fid2captions.json",
        (scp, 7): "tx_broken_line: expected '<id> <value>'",
        (scp, 8): corrupt,
        (scp, 9): "tx_emotion_00201000015: listed twice (first on line 1)",
    }
    assert corrupt.startswith("tx_emotion_00201000220: ") and "unreadable or corrupt audio" in corrupt
    assert not result.dropped


def test_release_without_wav_scp_reads_wav_folder(corpus: Path, tmp_path: Path) -> None:
    (corpus / "wav.scp").unlink()
    result = read(corpus, load_dataset_card("emosec"), tmp_path / "out")
    assert [row.id for row in result.splits["test"]] == [row.id for row in expected_rows(corpus)]
    captions = str(corpus / "fid2captions.json")
    missing = {(i.line, i.reason) for i in result.issues if "audio not found" in i.reason}
    assert missing == {
        (5, f"tx_emotion_00201000107: audio not found: {corpus / 'wav' / 'tx_emotion_00201000107.wav'}"),
        (7, f"tx_emotion_00201000148: audio not found: {corpus / 'wav' / 'tx_emotion_00201000148.wav'}"),
    }
    assert all(issue.source == captions for issue in result.issues)


def test_malformed_caption_file_keeps_entries_before_the_fault(corpus: Path, tmp_path: Path) -> None:
    path = corpus / "fid2captions.json"
    path.write_text('{\n  "tx_emotion_00201000015": "悲伤",\n  "tx_emulate_00_060_0001_000030": 心情\n}\n')
    result = read(corpus, load_dataset_card("emosec"), tmp_path / "out")
    assert [row.id for row in result.splits["test"]] == ["emosec_tx_emotion_00201000015"]
    assert result.issues[0].source == str(path) and result.issues[0].line == 3
    assert result.issues[0].reason.startswith("malformed JSON: Expecting value")


def test_strict_prepare_fails_and_writes_nothing(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    with pytest.raises(BenchmarkError, match=r"9 bad row\(s\) with --strict") as err:
        prepare_corpus(load_dataset_card("emosec"), corpus, out, strict=True)
    assert f"{corpus / 'wav.scp'}:3: " in str(err.value)
    assert not out.exists()


def test_prepare_writes_valid_manifest(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    report = prepare_corpus(load_dataset_card("emosec"), corpus, out)
    assert read_manifest(out / "test.jsonl", check_audio=True) == expected_rows(corpus)
    assert len((out / "issues.tsv").read_text(encoding="utf-8").splitlines()) == 1 + 9
    assert [(s.split, s.group, s.utterances) for s in report.summaries] == [
        ("test", "tx_emotion", 1),
        ("test", "tx_emulate", 1),
        ("test", "tx_xiao", 2),
    ]


def test_rows_record_the_language_of_their_caption(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare_corpus(load_dataset_card("emosec"), corpus, out)
    rows = read_manifest(out / "test.jsonl")
    assert {row.id.removeprefix("emosec_"): row.language for row in rows} == {
        "tx_emotion_00201000015": "zh",
        "tx_emulate_00_060_0001_000030": "zh",
        "tx_xiao_0200103000100": "en",
        "tx_xiao_0200103000101": "zh",
    }


def test_caption_without_either_script_takes_the_card_language(corpus: Path, tmp_path: Path) -> None:
    write_json_lines(corpus / "fid2captions.json", [("tx_emotion_00201000015", "……？！")])
    (corpus / "wav.scp").unlink()
    result = read(corpus, load_dataset_card("emosec"), tmp_path / "out")
    assert [(row.descriptor, row.language) for row in result.splits["test"]] == [("……？！", "zh")]
