"""SpeechCraft reader on a small fixture in the real on-disk shapes (see the reader's docstring).

Annotations: one JSON object per file, clip key -> {"labels": tab-separated "name:value" pairs,
"llama-instruction" or "description": text}; audio: the HuggingFace GigaSpeech layout,
`data/audio/m_files_additional/m_chunks_NNNN/<segment id>.wav`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmark.data.manifest import Utterance, read_manifest
from benchmark.data.prepare import prepare_corpus
from benchmark.data.readers.speechcraft import json_members, read
from benchmark.errors import BenchmarkError
from benchmark.registry import load_dataset_card

MAIN = "description_en.json"
PART2 = "description_en_part2.json"


def labels(emotion: str, gender: str = "female", transcript: str = " Hello there, how are you?") -> str:
    return (
        f"age:Youth adult\tgender:{gender}\tpitch:high\tvolume:normal\tspeed:fast\temotion:{emotion}"
        f"\ttranscription:{transcript}"
    )


def write_json_lines(path: Path, entries: list[tuple[str, object]], close: bool = True) -> None:
    """One entry per line, so entry k (0-based) starts on line k + 2."""
    body = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in entries)
    path.write_text("{\n" + body + ("\n}\n" if close else ""), encoding="utf-8")


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), 0.1 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "SpeechCraft"
    chunk = root / "gigaspeech" / "data" / "audio" / "m_files_additional" / "m_chunks_0000"
    for segment in ("POD0000000004_S0000016", "YOU0000000315_S0000660", "YOU0000000315_S0000661"):
        write_wav(chunk / f"{segment}.wav")
    # Junk a real copy carries: a macOS resource fork, a stray text file, a wav with no samples.
    (chunk / "._POD0000000004_S0000016.wav").write_bytes(b"\x00\x05\x16\x07junk")
    (chunk / "notes.txt").write_text("downloaded from HuggingFace\n")
    sf.write(str(chunk / "POD0000000004_S0000020.wav"), np.zeros(0), 16000, subtype="PCM_16")
    write_json_lines(
        root / MAIN,
        [
            (
                "m_chunks_0000_POD0000000004_S0000016",
                {"labels": labels("happy"), "llama-instruction": "A woman speaks\n quickly  and gaily."},
            ),
            (
                "YOU0000000315_S0000660",
                {"labels": labels("Sad", "Male", ""), "description": "A man speaks slowly and sadly."},
            ),
            ("LibriTTS-R_1034_121119_000001_000001", {"labels": labels("happy"), "description": "x"}),
            ("m_chunks_0000_POD0000000004_S0000017", {"labels": labels("happy"), "llama-instruction": "  "}),
            ("m_chunks_0000_POD0000000004_S0000018", {"labels": labels("bored"), "description": "Flat."}),
            ("m_chunks_0001_AUD0000001209_S0000001", {"labels": labels("neutral"), "description": "Calm."}),
            ("m_chunks_0000_POD0000000004_S0000016", {"labels": labels("angry"), "description": "Again."}),
            ("m_chunks_0000_POD0000000004_S0000019", "just a string"),
            ("m_chunks_0000_POD0000000004_S0000020", {"labels": labels("neutral"), "description": "Silent."}),
        ],
    )
    # A second file cut off in the middle of an entry, as an interrupted download leaves it.
    calm = {"labels": labels("neutral", transcript="Okay."), "description": "Calm"}
    write_json_lines(root / PART2, [("YOU0000000315_S0000661", calm)], close=False)
    with (root / PART2).open("a", encoding="utf-8") as handle:
        handle.write(',\n  "YOU0000000315_S0000662": {"labels": "gender:male\n')
    (root / "README.md").write_text("SpeechCraft annotations\n")
    return root


def expected_rows(root: Path) -> list[Utterance]:
    chunk = (root / "gigaspeech/data/audio/m_files_additional/m_chunks_0000").resolve()
    common = {"duration": 0.5, "dataset": "speechcraft", "language": "en"}
    return [
        Utterance(
            id="speechcraft_POD0000000004_S0000016",
            audio=str(chunk / "POD0000000004_S0000016.wav"),
            transcript="Hello there, how are you?",
            emotion="happy",
            descriptor="A woman speaks quickly and gaily.",
            speaker="POD0000000004",
            gender="female",
            group="podcast",
            **common,
        ),
        Utterance(
            id="speechcraft_YOU0000000315_S0000660",
            audio=str(chunk / "YOU0000000315_S0000660.wav"),
            transcript=None,
            emotion="sad",
            descriptor="A man speaks slowly and sadly.",
            speaker="YOU0000000315",
            gender="male",
            group="youtube",
            **common,
        ),
        Utterance(
            id="speechcraft_YOU0000000315_S0000661",
            audio=str(chunk / "YOU0000000315_S0000661.wav"),
            transcript="Okay.",
            emotion="neutral",
            descriptor="Calm",
            speaker="YOU0000000315",
            gender="female",
            group="youtube",
            **common,
        ),
    ]


def test_rows_issues_and_drops(corpus: Path, tmp_path: Path) -> None:
    card = load_dataset_card("speechcraft")
    result = read(corpus, card, tmp_path / "out")
    assert list(result.splits) == ["train"]
    assert result.splits["train"] == expected_rows(corpus)
    main, part2 = str(corpus / MAIN), str(corpus / PART2)
    issues = {(issue.source, issue.line): issue.reason for issue in result.issues}
    pod = "m_chunks_0000_POD0000000004"
    assert issues == {
        (main, 5): f"{pod}_S0000017: empty or missing description",
        (main, 6): f"{pod}_S0000018: unknown emotion label 'bored' (not in the card's label_map)",
        (main, 7): "m_chunks_0001_AUD0000001209_S0000001: audio not found: no AUD0000001209_S0000001.wav "
        "under the corpus folder",
        (main, 8): f"{pod}_S0000016: segment POD0000000004_S0000016 annotated twice (first at {main}:2)",
        (main, 9): f"{pod}_S0000019: expected an object with 'labels' and a description, found str",
        (main, 10): issues[(main, 10)],
        (part2, 3): "malformed JSON: Invalid control character at",
    }
    assert issues[(main, 10)].startswith("POD0000000004_S0000020: ") and "no samples" in issues[(main, 10)]
    assert not result.dropped


def test_null_mapped_label_is_dropped_not_an_issue(corpus: Path, tmp_path: Path) -> None:
    card = load_dataset_card("speechcraft")
    card = card.model_copy(update={"label_map": {**card.label_map, "bored": None}})
    result = read(corpus, card, tmp_path / "out")
    assert result.dropped == Counter({"bored": 1})
    assert all(issue.line != 6 for issue in result.issues)


def test_strict_prepare_fails_and_writes_nothing(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    with pytest.raises(BenchmarkError, match=r"7 bad row\(s\) with --strict") as err:
        prepare_corpus(load_dataset_card("speechcraft"), corpus, out, strict=True)
    assert f"{corpus / MAIN}:5: " in str(err.value)
    assert not out.exists()


def test_prepare_writes_valid_manifest_and_issue_list(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    report = prepare_corpus(load_dataset_card("speechcraft"), corpus, out)
    rows = read_manifest(out / "train.jsonl", check_audio=True)
    assert rows == expected_rows(corpus)
    assert len(report.issues) == 7
    assert len((out / "issues.tsv").read_text(encoding="utf-8").splitlines()) == 1 + 7
    assert [(s.group, s.utterances) for s in report.summaries] == [("podcast", 1), ("youtube", 2)]


def test_missing_annotations_name_the_expected_layout(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(BenchmarkError, match="no usable utterance") as err:
        prepare_corpus(load_dataset_card("speechcraft"), root, tmp_path / "prepared")
    assert "no SpeechCraft annotation file" in str(err.value)
    assert "m_files_additional" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("text", "keys", "line", "reason"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', ["a"], 3, "expected ',' or '}' after an entry"),
        ('{"a": 1}\n[]', ["a"], 2, "extra data after the object"),
        ("[1, 2]", [], 1, "expected an object '{...}' at the top level"),
        ("{\n  a: 1}", [], 2, "expected a quoted key"),
    ],
)
def test_json_members_locates_faults(
    tmp_path: Path, text: str, keys: list[str], line: int, reason: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    members, fault = json_members(path)
    assert [m.key for m in members] == keys
    assert fault is not None and (fault.line, fault.reason) == (line, f"malformed JSON: {reason}")
