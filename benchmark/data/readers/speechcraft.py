"""SpeechCraft reader: English descriptions of GigaSpeech-M clips -> one `train` split.

SpeechCraft publishes annotations only; the audio is GigaSpeech-M from the HuggingFace release
`speechcolab/gigaspeech` (`m_chunks_NNNN/<segment id>.wav`, 16 kHz, used in place). Annotation
files are JSON objects mapping a clip key (`m_chunks_0000_POD0000000004_S0000016`) to tab-separated
`labels` and a `llama-instruction` text. The release could not be inspected, so the reader is
lenient: the segment id is searched anywhere in the key, `description` is accepted too, label
names match case-insensitively, and keys without a GigaSpeech id (LibriTTS-R) are skipped.
The top-level object is walked entry by entry (`json_members`), so every issue names its file and
line and duplicate keys are reported instead of silently overwritten.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from benchmark.config import DatasetCard
from benchmark.data.audio import AudioError, probe_audio
from benchmark.data.manifest import RowIssue, Utterance
from benchmark.data.readers import ReadResult
from benchmark.data.readers.common import JsonMember, json_members, normalise_gender

SEGMENT_ID = re.compile(r"(?:POD|YOU|AUD)\d{10}_S\d{7}")
SOURCES = {"POD": "podcast", "YOU": "youtube", "AUD": "audiobook"}
DESCRIPTION_FIELDS = ("description", "llama-instruction")
TRANSCRIPT_LABELS = ("transcription", "transcript")
SPLIT = "train"


def parse_labels(labels: str) -> dict[str, str]:
    """`name:value` pairs separated by tabs -> {lower-case name: stripped value}."""
    fields = {}
    for part in labels.split("\t"):
        name, sep, value = part.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def index_wavs(root: Path) -> dict[str, Path]:
    """Segment id -> wav file, for every `<segment id>.wav` below `root`.

    Hidden files (macOS `._*.wav` resource forks) are skipped; folders are walked in sorted order
    so that a segment present twice resolves to the same file on every run.
    """
    found: dict[str, Path] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() == ".wav" and not name.startswith(".") and SEGMENT_ID.fullmatch(stem):
                found.setdefault(stem, Path(folder) / name)
    return found


@dataclass(frozen=True)
class _Entry:
    """A usable annotation whose audio duration is still to be read."""

    segment: str
    source: Path
    line: int
    descriptor: str
    transcript: str | None
    emotion: str
    gender: str | None
    wav: Path


def _entries(
    path: Path, card: DatasetCard, wavs: dict[str, Path], seen: dict[str, str], result: ReadResult
) -> Iterator[_Entry]:
    """The usable GigaSpeech entries of one annotation file; every other entry is an issue or a drop."""
    members, fault = json_members(path)
    if fault:
        result.issues.append(fault)
    for member in members:
        found = SEGMENT_ID.search(member.key)
        if not found:
            continue

        def issue(reason: str, member: JsonMember = member) -> None:
            result.issues.append(RowIssue(str(path), member.line, f"{member.key}: {reason}"))

        segment, value = found.group(), member.value
        if segment in seen:
            issue(f"segment {segment} annotated twice (first at {seen[segment]})")
            continue
        seen[segment] = f"{path}:{member.line}"
        if not isinstance(value, dict):
            issue(f"expected an object with 'labels' and a description, found {type(value).__name__}")
            continue
        descriptor = next((value[name] for name in DESCRIPTION_FIELDS if name in value), None)
        if not isinstance(value.get("labels"), str):
            issue("no 'labels' string")
            continue
        labels = parse_labels(value["labels"])
        raw_emotion = labels.get("emotion", "")
        known, emotion = card.map_label(raw_emotion)
        transcript = next((labels[name] for name in TRANSCRIPT_LABELS if labels.get(name)), None)
        if not isinstance(descriptor, str) or not descriptor.strip():
            issue("empty or missing description")
        elif not raw_emotion:
            issue("no emotion in 'labels'")
        elif not known:
            issue(f"unknown emotion label '{raw_emotion}' (not in the card's label_map)")
        elif emotion is None:
            result.dropped[raw_emotion] += 1
        elif segment not in wavs:
            issue(f"audio not found: no {segment}.wav under the corpus folder")
        else:
            yield _Entry(
                segment,
                path,
                member.line,
                " ".join(descriptor.split()),
                transcript,
                emotion,
                normalise_gender(labels.get("gender")),
                wavs[segment],
            )


def read(root: Path, card: DatasetCard, audio_dir: Path) -> ReadResult:
    """Read every `*.json` annotation file at the top of `root`; rows are ordered by segment id.

    `audio_dir` is unused: the release's wavs are read in place.
    """
    result = ReadResult(splits={SPLIT: []})
    annotations = sorted(root.glob("*.json"))
    if not annotations:
        result.issues.append(RowIssue(str(root), None, "no SpeechCraft annotation file (*.json) found"))
        return result
    wavs = index_wavs(root)
    seen: dict[str, str] = {}
    entries = [entry for path in annotations for entry in _entries(path, card, wavs, seen, result)]
    for entry in tqdm(sorted(entries, key=lambda e: e.segment), desc="SpeechCraft: checking audio"):
        try:
            duration = probe_audio(entry.wav)
        except AudioError as err:
            result.issues.append(RowIssue(str(entry.source), entry.line, f"{entry.segment}: {err.message}"))
            continue
        result.splits[SPLIT].append(
            Utterance(
                id=f"speechcraft_{entry.segment}",
                audio=str(entry.wav.resolve()),
                duration=duration,
                transcript=entry.transcript,
                emotion=entry.emotion,
                descriptor=entry.descriptor,
                # GigaSpeech has no speaker labels: the source recording (one podcast episode,
                # video or audiobook) is the closest stand-in.
                speaker=entry.segment.split("_S")[0],
                gender=entry.gender,
                group=SOURCES[entry.segment[:3]],
                dataset=card.name,
                language=card.language,
            )
        )
    return result
