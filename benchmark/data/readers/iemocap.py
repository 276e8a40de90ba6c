"""IEMOCAP reader: `IEMOCAP_full_release/SessionN/...` -> one `all` split grouped by session.

Utterances and labels come from the label lines of `dialog/EmoEvaluation/<dialog>.txt`
(`[start - end]<TAB>utt id<TAB>label<TAB>[v, a, d]`; evaluator lines and headers are skipped), the
text from `dialog/transcriptions/<dialog>.txt`, the audio from `sentences/wav/<dialog>/<utt id>.wav`.
Only top-level `*.txt` files not starting with a dot are read, which skips the release's other
formats, macOS resource forks and stray files. Every row that cannot become an utterance (wav
absent or corrupt, transcript empty or absent, unknown label) is an issue at its label line.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmark.config import DatasetCard
from benchmark.data.audio import AudioError, probe_audio
from benchmark.data.manifest import RowIssue, Utterance
from benchmark.data.readers import ReadResult

SPLIT = "all"

# `[start - end] <utt id> <label> [V, A, D]`; tabs in the release, any whitespace accepted.
_LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
# `<utt id> [start-end]: text`; the time stamp is optional so that a line without one still parses.
_TRANSCRIPT_LINE = re.compile(r"^(\S+?)\s*(?:\[[^\]]*\])?\s*:\s*(.*)$")
# `Ses01F_impro01_M000`: session `Ses01`; the speaker's gender is the letter of the last part.
_UTT_ID = re.compile(r"^(Ses\d+)[FM]_.*_([FM])\d+$")
_GENDERS = {"F": "female", "M": "male"}


def _visible_txt_files(folder: Path) -> list[Path]:
    """The `*.txt` files directly in `folder`, skipping macOS `._*` forks and other hidden files."""
    return sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))


def _read_transcripts(path: Path) -> dict[str, str]:
    """Utterance id -> text of one dialog's transcription file (the first line of an id wins)."""
    texts: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if match := _TRANSCRIPT_LINE.match(line.strip()):
            texts.setdefault(match.group(1), match.group(2).strip())
    return texts


class _BadRow(Exception):
    """A labelled utterance that cannot be used; the message is the issue's reason."""


def _utterance(
    utt_id: str,
    emotion: str,
    session_dir: Path,
    transcript_file: Path,
    texts: dict[str, str] | None,
    card: DatasetCard,
) -> Utterance:
    """Build one utterance, raising `_BadRow` for the first thing that is missing or broken."""
    id_match = _UTT_ID.match(utt_id)
    if not id_match:
        raise _BadRow("utterance id does not name a session and speaker (e.g. Ses01F_impro01_M000)")
    if texts is None:
        raise _BadRow(f"transcription file not found: {transcript_file}")
    if utt_id not in texts:
        raise _BadRow(f"utterance missing from {transcript_file}")
    if not texts[utt_id]:
        raise _BadRow(f"empty transcript in {transcript_file}")
    wav = session_dir / "sentences" / "wav" / transcript_file.stem / f"{utt_id}.wav"
    if not wav.is_file():
        raise _BadRow(f"audio file not found: {wav}")
    try:
        duration = probe_audio(wav)
    except AudioError as err:
        raise _BadRow(err.message) from err
    prefix, letter = id_match.groups()
    return Utterance(
        id=utt_id,
        audio=str(wav.resolve()),
        duration=duration,
        transcript=texts[utt_id],
        emotion=emotion,
        descriptor=None,
        speaker=f"{prefix}{letter}",
        gender=_GENDERS[letter],
        group=session_dir.name,
        dataset=card.name,
        language=card.language,
    )


def _read_dialog(
    label_file: Path, session_dir: Path, card: DatasetCard, rows: dict[str, Utterance], result: ReadResult
) -> None:
    """Add one dialog's usable utterances to `rows`; every other label line is an issue or a drop."""
    transcript_file = session_dir / "dialog" / "transcriptions" / label_file.name
    texts = _read_transcripts(transcript_file) if transcript_file.is_file() else None
    # split("\n"), not splitlines(): the latter also breaks at \x0c, \x1c, ... and would shift line numbers.
    lines = label_file.read_text(encoding="utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.startswith("["):
            continue  # the header, blank lines and per-evaluator lines
        match = _LABEL_LINE.match(line)
        if not match:
            reason = "malformed label line (expected '[start - end]<TAB>id<TAB>label<TAB>[V, A, D]')"
            result.issues.append(RowIssue(str(label_file), number, reason))
            continue
        utt_id, raw_label = match.groups()
        known, emotion = card.map_label(raw_label)
        try:
            if not known:
                raise _BadRow(f"unknown emotion label '{raw_label}' (not in the card's label_map)")
            if utt_id in rows:
                raise _BadRow("utterance listed twice")
            if emotion is None:
                result.dropped[raw_label] += 1
                continue
            rows[utt_id] = _utterance(utt_id, emotion, session_dir, transcript_file, texts, card)
        except _BadRow as err:
            result.issues.append(RowIssue(str(label_file), number, f"{utt_id}: {err}"))


def read(root: Path, card: DatasetCard, audio_dir: Path) -> ReadResult:
    """Read the sessions named by the card's folds (`Session1`..`Session5`) into split `all`.

    `audio_dir` is unused: the release's wavs are already 16 kHz mono and are referenced in place.
    A missing session is an issue, not a crash, so a partial copy can still be prepared without
    `--strict`; the fold of the missing session is then empty.
    """
    result = ReadResult()
    rows: dict[str, Utterance] = {}
    for session in card.protocol.folds:
        session_dir = root / session
        label_dir = session_dir / "dialog" / "EmoEvaluation"
        if not session_dir.is_dir():
            result.issues.append(RowIssue(str(session_dir), None, "session folder not found"))
            continue
        if not label_dir.is_dir():
            result.issues.append(RowIssue(str(label_dir), None, "label folder not found"))
            continue
        for label_file in _visible_txt_files(label_dir):
            _read_dialog(label_file, session_dir, card, rows, result)
    result.splits[SPLIT] = [rows[key] for key in sorted(rows)]
    return result
