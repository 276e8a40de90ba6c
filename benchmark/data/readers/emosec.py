"""EMOSEC reader: speech emotion captions for zero-shot SED evaluation -> one `test` split.

The paper's EMOSEC captions come from SECap (Xu et al., AAAI 2024), whose only public release is
the Kaldi-style test set in github.com/thuhcsi/SECap, `dataset/`: `fid2captions.json` (id ->
caption), `text.txt` (id and transcript, space- or tab-separated) and `wav/<id>.wav` or `wav.scp`
(paths relative to the parent of the folder that holds it).

Each row's `language` is its caption's (`benchmark.data.languages.detect_language`; the card's zh
when neither script appears). An id's letter prefix names the sub-corpus and becomes the group;
speaker and gender come from `utt2spk` / `spk2gender` where present, else `unknown`. There are no
emotion labels. A caption without readable audio, or a `wav.scp` entry without a caption, is an
issue. docs/design.md lists the release's quirks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from benchmark.config import DatasetCard
from benchmark.data.audio import AudioError, probe_audio
from benchmark.data.languages import detect_language
from benchmark.data.manifest import RowIssue, Utterance
from benchmark.data.readers import ReadResult
from benchmark.data.readers.common import json_members, normalise_gender

CAPTIONS = "fid2captions.json"
TRANSCRIPTS = "text.txt"
WAV_SCP = "wav.scp"
SPLIT = "test"
UNKNOWN_SPEAKER = "unknown"

_GROUP = re.compile(r"([A-Za-z]+(?:_[A-Za-z]+)*)_\d")


@dataclass(frozen=True)
class TableRow:
    """One `<key> <value>` line of a Kaldi-style table."""

    line: int
    value: str


def read_table(path: Path, result: ReadResult) -> dict[str, TableRow]:
    """A Kaldi-style table (`<key><space or tab><value>` per line); bad lines become issues.

    Blank lines are skipped; a line with a key but no value, or a key seen before, is an issue and
    the first occurrence wins.
    """
    rows: dict[str, TableRow] = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        result.issues.append(RowIssue(str(path), None, f"not UTF-8 text ({err.reason})"))
        return rows
    for number, line in enumerate(lines, start=1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if len(parts) == 1:
            result.issues.append(RowIssue(str(path), number, f"{parts[0]}: expected '<id> <value>'"))
        elif parts[0] in rows:
            first = rows[parts[0]].line
            result.issues.append(
                RowIssue(str(path), number, f"{parts[0]}: listed twice (first on line {first})")
            )
        else:
            rows[parts[0]] = TableRow(number, parts[1].strip())
    return rows


def _optional_table(path: Path, result: ReadResult) -> dict[str, TableRow]:
    return read_table(path, result) if path.is_file() else {}


def _resolve(root: Path, listed: str) -> Path | None:
    """A `wav.scp` path: absolute, or relative to `root` or (as SECap writes them) to its parent."""
    path = Path(listed)
    candidates = [path] if path.is_absolute() else [root / path, root.parent / path]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


@dataclass(frozen=True)
class _Entry:
    """A captioned utterance with its audio file; `source:line` is where an audio fault is reported."""

    uid: str
    caption: str
    wav: Path
    source: Path
    line: int


def _captioned(root: Path, result: ReadResult) -> list[_Entry]:
    """Captions that have an audio file; every other caption or `wav.scp` line is an issue."""
    captions_path, scp_path = root / CAPTIONS, root / WAV_SCP
    if not captions_path.is_file():
        result.issues.append(RowIssue(str(captions_path), None, "caption file not found"))
        return []
    members, fault = json_members(captions_path)
    if fault:
        result.issues.append(fault)
    scp = _optional_table(scp_path, result)
    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    for member in members:

        def issue(reason: str, source: Path = captions_path, line: int = member.line, key: str = member.key):
            result.issues.append(RowIssue(str(source), line, f"{key}: {reason}"))

        if member.key in seen:
            issue(f"captioned twice (first on line {seen[member.key]})")
            continue
        seen[member.key] = member.line
        if not isinstance(member.value, str) or not member.value.strip():
            issue("empty or missing caption")
            continue
        caption = " ".join(member.value.split())
        if not scp_path.is_file():
            # The release without wav.scp: the audio is wav/<utt id>.wav.
            wav = root / "wav" / f"{member.key}.wav"
            if wav.is_file():
                entries.append(_Entry(member.key, caption, wav, captions_path, member.line))
            else:
                issue(f"audio not found: {wav}")
        elif member.key not in scp:
            issue(f"not listed in {WAV_SCP}")
        elif (wav := _resolve(root, scp[member.key].value)) is None:
            issue(f"audio not found: {scp[member.key].value}", scp_path, scp[member.key].line)
        else:
            entries.append(_Entry(member.key, caption, wav, scp_path, scp[member.key].line))
    for uid, row in scp.items():
        if uid not in seen:
            result.issues.append(RowIssue(str(scp_path), row.line, f"{uid}: no caption in {CAPTIONS}"))
    return entries


def read(root: Path, card: DatasetCard, audio_dir: Path) -> ReadResult:
    """Read the captioned test set; rows are ordered by utterance id.

    `audio_dir` is unused: the release's wavs are read in place.
    """
    result = ReadResult(splits={SPLIT: []})
    entries = _captioned(root, result)
    transcripts = _optional_table(root / TRANSCRIPTS, result)
    speakers = _optional_table(root / "utt2spk", result)
    genders = _optional_table(root / "spk2gender", result)
    for entry in tqdm(sorted(entries, key=lambda e: e.uid), desc="EMOSEC: checking audio"):
        try:
            duration = probe_audio(entry.wav)
        except AudioError as err:
            result.issues.append(RowIssue(str(entry.source), entry.line, f"{entry.uid}: {err.message}"))
            continue
        speaker = speakers[entry.uid].value if entry.uid in speakers else UNKNOWN_SPEAKER
        group = _GROUP.match(entry.uid)
        result.splits[SPLIT].append(
            Utterance(
                id=f"emosec_{entry.uid}",
                audio=str(entry.wav.resolve()),
                duration=duration,
                transcript=transcripts[entry.uid].value if entry.uid in transcripts else None,
                emotion=None,
                descriptor=entry.caption,
                speaker=speaker,
                gender=normalise_gender(genders[speaker].value) if speaker in genders else None,
                group=group.group(1) if group else SPLIT,
                dataset=card.name,
                language=detect_language(entry.caption) or card.language,
            )
        )
    return result
