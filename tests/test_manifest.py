from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.data.manifest import Utterance, read_manifest, write_manifest
from benchmark.errors import BenchmarkError


def utt(i: int, **overrides) -> Utterance:
    fields = dict(
        id=f"u{i}", audio=f"/a/u{i}.wav", duration=1.5, transcript="hello there", emotion="happy",
        descriptor=None, speaker="s1", gender="female", group="1", dataset="demo",
    )  # fmt: skip
    fields.update(overrides)
    return Utterance(**fields)


def test_roundtrip(tmp_path: Path):
    path = tmp_path / "all.jsonl"
    rows = [utt(i) for i in range(3)]
    assert write_manifest(path, rows) == 3
    assert read_manifest(path) == rows
    fields = [
        "id",
        "audio",
        "duration",
        "transcript",
        "emotion",
        "descriptor",
        "speaker",
        "gender",
        "group",
        "dataset",
        "language",
    ]
    assert set(json.loads(path.read_text().splitlines()[0])) == set(fields)


def test_manifest_written_before_languages_still_reads(tmp_path: Path):
    path = tmp_path / "all.jsonl"
    old = {k: v for k, v in utt(0).model_dump().items() if k != "language"}
    path.write_text(json.dumps(old) + "\n" + utt(1, language="zh").model_dump_json() + "\n")
    first, second = read_manifest(path)
    assert first.language is None and first.language_of("en") == "en"  # null: the card's language
    assert second.language == "zh" and second.language_of("en") == "zh"


def test_failed_write_keeps_the_previous_manifest(tmp_path: Path):
    path = tmp_path / "all.jsonl"
    write_manifest(path, [utt(0)])
    before = path.read_text()

    def rows_then_crash():
        yield utt(1)
        raise RuntimeError("reader crashed half-way")

    with pytest.raises(RuntimeError):
        write_manifest(path, rows_then_crash())
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["all.jsonl"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"all\.jsonl:2: not valid JSON"),
        (json.dumps({**utt(5).model_dump(), "duration": -1}), r"all\.jsonl:2: field 'duration'"),
        (json.dumps({**utt(5).model_dump(), "duration": float("inf")}), r"all\.jsonl:2: field 'duration'"),
        (json.dumps({**utt(5).model_dump(), "gender": "f"}), r"all\.jsonl:2: field 'gender'"),
        (json.dumps({**utt(5).model_dump(), "language": "fr"}), r"all\.jsonl:2: field 'language'"),
        (
            json.dumps({k: v for k, v in utt(5).model_dump().items() if k != "speaker"}),
            r":2: field 'speaker'",
        ),
        (json.dumps(utt(0).model_dump()), r"all\.jsonl:2: duplicate utterance id 'u0'"),
    ],
)
def test_bad_line_is_named_by_file_and_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "all.jsonl"
    path.write_text(utt(0).model_dump_json() + "\n" + line + "\n")
    with pytest.raises(BenchmarkError, match=message):
        read_manifest(path)


def test_missing_manifest_says_how_to_make_it(tmp_path: Path):
    with pytest.raises(BenchmarkError) as err:
        read_manifest(tmp_path / "none.jsonl")
    assert "data prepare" in err.value.hint


def test_check_audio_names_the_missing_file(tmp_path: Path):
    path = tmp_path / "all.jsonl"
    write_manifest(path, [utt(0)])
    with pytest.raises(BenchmarkError, match=r"all\.jsonl:1: audio file not found: /a/u0\.wav"):
        read_manifest(path, check_audio=True)


def test_bytes_that_are_not_utf8_are_named_by_file_and_line(tmp_path: Path):
    path = tmp_path / "all.jsonl"
    good = utt(0).model_dump_json().encode()
    path.write_bytes(good + b"\n\n" + good.replace(b"hello", b"h\xe9llo").replace(b"u0", b"u1") + b"\n")
    with pytest.raises(BenchmarkError) as err:
        read_manifest(path, rebuild_hint="make it again")
    assert err.value.message.startswith(f"{path}:3: not UTF-8 text (byte ")
    assert err.value.hint == "make it again"
