"""MELD reader: `MELD.Raw/` CSVs and mp4 clips -> train/dev/test splits of cached 16 kHz wavs.

Only clips listed in a split's CSV are read, so stray files are ignored; a listed clip that is
absent, corrupt or without audio is an issue at its CSV line. Each clip's audio is decoded once
with PyAV and cached as a 16 kHz mono wav under `audio_dir/<split>/` (reused while newer than its
mp4); `data prepare` passes the sibling folder `<manifest folder>-audio/`, which is never swapped.

Text repair: both kinds of mojibake in the CSVs (cp1252 read as Latin-1, UTF-8 read as cp1252)
are undone, curly quotes become ASCII and `…` becomes `...`, dashes stay, and runs of whitespace
become one space (docs/design.md says why).
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from benchmark.config import DatasetCard
from benchmark.data.audio import SAMPLE_RATE, AudioError, load_audio, probe_audio, write_wav
from benchmark.data.manifest import RowIssue, Utterance
from benchmark.data.readers import ReadResult

# split -> (CSV file, clip folder), as the release's tarballs extract them.
SPLITS = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
# Above this many clips to decode, a process pool pays for its start-up time.
POOL_THRESHOLD = 64


def _cp1252(byte: int) -> str:
    """The cp1252 character of a byte; the five bytes cp1252 leaves undefined keep their C1 code point."""
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)


_C1_TO_CP1252 = {byte: _cp1252(byte) for byte in range(0x80, 0xA0)}
_CP1252_BYTE = {_cp1252(byte): byte for byte in range(0x100)}
_CONT = "[" + re.escape("".join(_cp1252(byte) for byte in range(0x80, 0xC0))) + "]"
# A UTF-8 multi-byte sequence whose bytes were read as cp1252: a lead byte and its continuations.
_UTF8_AS_CP1252 = re.compile(f"[\xc2-\xdf]{_CONT}|[\xe0-\xef]{_CONT}{{2}}|[\xf0-\xf4]{_CONT}{{3}}")
_TO_ASCII = str.maketrans({"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "…": "..."})


def _undo_utf8_as_cp1252(match: re.Match[str]) -> str:
    try:
        return bytes(_CP1252_BYTE[char] for char in match.group()).decode("utf-8")
    except UnicodeDecodeError:
        return match.group()


def repair_text(text: str) -> str:
    """Undo the CSVs' mojibake and normalise quotes and whitespace (see the module docstring)."""
    text = text.translate(_C1_TO_CP1252)
    text = _UTF8_AS_CP1252.sub(_undo_utf8_as_cp1252, text)
    # A lone `Â` is what is left of a UTF-8 no-break space whose second byte became a plain space.
    text = text.replace("Â", " ").translate(_TO_ASCII)
    return " ".join(text.split())


def decode_csv(data: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else Latin-1, which maps every byte to a character.

    Latin-1 rather than cp1252 because it cannot fail; the bytes 0x80-0x9F it turns into C1
    control characters are mapped to their cp1252 characters by `repair_text`.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def csv_records(text: str) -> list[tuple[int, list[str]]]:
    """(physical line where the record starts, fields) for every non-blank record, header included.

    Quoted fields may span lines, so the line of a record is counted from the csv reader's
    position, not from the record's index.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    consumed = 0
    for fields in reader:
        if fields:
            records.append((consumed + 1, fields))
        consumed = reader.line_num
    return records


@dataclass(frozen=True)
class _Clip:
    """A usable CSV row whose audio still has to be decoded (or found in the cache)."""

    split: str
    source: Path
    line: int
    dialogue: int
    utterance: int
    text: str
    speaker: str
    emotion: str
    mp4: Path
    wav: Path


class _BadRow(Exception):
    """A CSV row that cannot become an utterance; the message is the issue's reason."""


def _clip(
    split: str, value: dict[str, str], line: int, source: Path, audio_dir: Path, card: DatasetCard
) -> _Clip | None:
    """The clip of one CSV row, None for a label the card drops on purpose; raises `_BadRow`."""
    try:
        dialogue, utterance = int(value["Dialogue_ID"]), int(value["Utterance_ID"])
    except ValueError as err:
        ids = f"{value['Dialogue_ID']!r}/{value['Utterance_ID']!r}"
        raise _BadRow(f"Dialogue_ID/Utterance_ID are not integers: {ids}") from err
    name = f"dia{dialogue}_utt{utterance}"
    known, emotion = card.map_label(value["Emotion"])
    if not known:
        raise _BadRow(f"{name}: unknown emotion label '{value['Emotion']}' (not in the card's label_map)")
    if emotion is None:
        return None
    text, speaker = repair_text(value["Utterance"]), repair_text(value["Speaker"])
    if not text:
        raise _BadRow(f"{name}: empty utterance text")
    if not speaker:
        raise _BadRow(f"{name}: empty speaker")
    mp4 = source.parent / SPLITS[split][1] / f"{name}.mp4"
    if not mp4.is_file():
        raise _BadRow(f"{name}: clip not found: {mp4}")
    wav = audio_dir / split / f"{name}.wav"
    return _Clip(split, source, line, dialogue, utterance, text, speaker, emotion, mp4, wav)


def _read_split(
    split: str, root: Path, audio_dir: Path, card: DatasetCard, result: ReadResult
) -> list[_Clip]:
    """The listed clips of one split that exist; every other row is an issue or a drop."""
    source, folder = (root / name for name in SPLITS[split])
    if not source.is_file():
        result.issues.append(RowIssue(str(source), None, "CSV file not found"))
        return []
    if not folder.is_dir():
        reason = f"clip folder not found: {folder} (extract the split's tarball in place)"
        result.issues.append(RowIssue(str(source), None, reason))
        return []
    try:
        records = csv_records(decode_csv(source.read_bytes()))
    except csv.Error as err:
        result.issues.append(RowIssue(str(source), None, f"not a readable CSV file ({err})"))
        return []
    header = [name.strip() for name in records[0][1]] if records else []
    if missing := [column for column in COLUMNS if column not in header]:
        result.issues.append(RowIssue(str(source), 1, f"missing column(s) {', '.join(missing)}"))
        return []
    clips: dict[tuple[int, int], _Clip] = {}
    for line, fields in records[1:]:
        try:
            if len(fields) != len(header):
                raise _BadRow(f"expected {len(header)} fields, found {len(fields)}")
            value = dict(zip(header, fields, strict=True))
            clip = _clip(split, value, line, source, audio_dir, card)
            if clip is None:
                result.dropped[value["Emotion"].strip()] += 1
            elif (clip.dialogue, clip.utterance) in clips:
                raise _BadRow(f"{clip.wav.stem}: listed twice")
            else:
                clips[clip.dialogue, clip.utterance] = clip
        except _BadRow as err:
            result.issues.append(RowIssue(str(source), line, str(err)))
    return [clips[key] for key in sorted(clips)]


def decode_clip(mp4: Path, wav: Path) -> str | None:
    """Decode one clip's audio into a 16 kHz mono wav; returns why it failed, or None.

    Module-level so that the process pool can pickle it; failures come back as text because the
    parent turns them into issues at the clip's CSV line.
    """
    try:
        write_wav(wav, load_audio(mp4, SAMPLE_RATE), SAMPLE_RATE)
    except AudioError as err:
        return err.message
    return None


def _is_cached(clip: _Clip) -> bool:
    return clip.wav.is_file() and clip.wav.stat().st_mtime >= clip.mp4.stat().st_mtime


def _decode_all(clips: list[_Clip]) -> dict[Path, str]:
    """Decode the clips that are not cached yet; returns wav path -> reason for each failure.

    Many clips go through a pool of (at most 4) worker processes started with `spawn`, not `fork`:
    the parent may already hold torch/OpenMP threads, and forking a threaded process can deadlock.
    """
    todo = [clip for clip in clips if not _is_cached(clip)]
    if not todo:
        return {}
    mp4s, wavs = [clip.mp4 for clip in todo], [clip.wav for clip in todo]
    bar = {"total": len(todo), "desc": "MELD: decoding clip audio", "unit": "clip"}
    if len(todo) > POOL_THRESHOLD:
        workers = min(4, os.cpu_count() or 1)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            reasons = list(tqdm(pool.map(decode_clip, mp4s, wavs, chunksize=8), **bar))
    else:
        reasons = list(tqdm(map(decode_clip, mp4s, wavs), **bar))
    return {wav: reason for wav, reason in zip(wavs, reasons, strict=True) if reason is not None}


def read(root: Path, card: DatasetCard, audio_dir: Path) -> ReadResult:
    """Read the official splits into utterances ordered by (dialogue, utterance) within each split.

    Issues are sorted by CSV file and line, so that `issues.tsv` reads in file order.
    """
    result = ReadResult(splits={split: [] for split in SPLITS})
    clips = [clip for split in SPLITS for clip in _read_split(split, root, audio_dir, card, result)]
    failures = _decode_all(clips)
    for clip in clips:
        name = clip.wav.stem
        reason = failures.get(clip.wav)
        if reason is None:
            try:
                duration = probe_audio(clip.wav)
            except AudioError as err:
                reason = err.message
        if reason is not None:
            result.issues.append(RowIssue(str(clip.source), clip.line, f"{name}: {reason}"))
            continue
        result.splits[clip.split].append(
            Utterance(
                id=f"meld_{clip.split}_{name}",
                audio=str(clip.wav.resolve()),
                duration=duration,
                transcript=clip.text,
                emotion=clip.emotion,
                descriptor=None,
                speaker=clip.speaker,
                gender=None,
                group=clip.split,
                dataset=card.name,
                language=card.language,
            )
        )
    result.issues.sort(key=lambda issue: (issue.source, issue.line or 0))
    return result
