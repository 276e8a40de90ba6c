"""Tasks and their response format: what each task asks the LLM to write and the one parser that
reads any output back; training targets, forced prefixes and scoring all read the tables below.

Every task trains on one line format (docs/architecture.md), with its fields in this order:

    Transcript: i told you not to touch it
    Descriptor: a male speaker with high pitch, loud energy and fast speed
    Emotion: angry

A generation is steered by forcing its task's first field name (`response_prefix`).
`parse_response` turns *any* text into fields without raising; an unparseable emotion scores as
wrong (`valid_emotion=False`). The descriptor is optional (IEMOCAP, MELD; see docs/design.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from benchmark.config import Task

FIELDS = ("transcript", "descriptor", "emotion")

# The fields each task asks the LLM to write, in FIELDS order (the order format_response writes).
TASK_FIELDS: dict[Task, tuple[str, ...]] = {
    "asr": ("transcript",),
    "ser": ("emotion",),
    "ser_sed": ("descriptor", "emotion"),
    "full": ("transcript", "descriptor", "emotion"),
}
# Left out of a response when an utterance lacks it (see the module docstring).
OPTIONAL_FIELDS = frozenset({"descriptor"})

# The record field each corpus task (a dataset card's `tasks`) is scored on.
SCORED_FIELD = {"ser": "emotion", "asr": "transcript", "sed": "descriptor"}

# A field name anywhere in the text (not inside a longer word), optionally in markdown bold,
# followed by a colon: "Emotion:", "emotion :", "**Emotion**:", "Speech descriptor:".
_FIELD = re.compile(r"(?<![^\W\d_])\**(transcript|descriptor|emotion)\**\s*:", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")

# Surface forms that name the same emotion concept. A label of the dataset is matched through the
# group that contains it, so 'anger' finds MELD's label 'anger' and IEMOCAP's 'angry' alike, and
# 'excited' finds 'happy' in IEMOCAP's 4-class set (excited is merged into happy there, paper 4.1).
# Exact label matches are tried first, so a label set that keeps 'excited' apart still gets it.
# Words that are classes of their own in common corpora (frustrated, calm, contempt) are
# deliberately not folded into another class.
EMOTION_SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"angry", "anger", "mad", "furious", "angrily", "annoyed", "irritated"}),
    frozenset(
        {"happy", "happiness", "joy", "joyful", "glad", "cheerful", "excited", "excitement", "happily"}
    ),
    frozenset({"sad", "sadness", "unhappy", "sorrow", "sorrowful", "sadly", "depressed"}),
    frozenset({"neutral", "neutrality", "neutrally"}),
    frozenset({"surprise", "surprised", "surprising", "amazed", "astonished"}),
    frozenset({"fear", "fearful", "afraid", "scared", "frightened", "fearfully"}),
    frozenset({"disgust", "disgusted", "disgusting"}),
)


@dataclass(frozen=True)
class ParsedResponse:
    """The fields of one response; None where a field is missing or empty.

    `emotion` is always a member of the label set (its original spelling) or None;
    `valid_emotion` is False when no single label could be read, so a metric can count the
    response as wrong rather than drop it.
    """

    transcript: str | None
    descriptor: str | None
    emotion: str | None
    valid_emotion: bool


def _one_line(value: str) -> str:
    return " ".join(value.split())


def format_response(transcript: str | None, descriptor: str | None, emotion: str | None) -> str:
    """The training target: one `Name: value` line per given field, in the order of FIELDS.

    Whitespace inside a value is collapsed so each field stays on its line and the target parses
    back to the same fields.
    """
    values = {"transcript": transcript, "descriptor": descriptor, "emotion": emotion}
    lines = [
        f"{name.capitalize()}: {_one_line(value)}" for name, value in values.items() if value is not None
    ]
    if not lines:
        raise ValueError("a response needs at least one of transcript, descriptor, emotion")
    return "\n".join(lines)


def response_prefix(task: Task) -> str:
    """What a generation for `task` is forced to start with: its response's first field name."""
    return f"{TASK_FIELDS[task][0].capitalize()}:"


def task_response(task: Task, values: dict[str, str | None]) -> str | None:
    """The response `task` trains on for an utterance's field `values`, or None when a required
    (not optional) field of the task is missing."""
    wanted = {name: values.get(name) for name in TASK_FIELDS[task]}
    if any(value is None for name, value in wanted.items() if name not in OPTIONAL_FIELDS):
        return None
    return format_response(wanted.get("transcript"), wanted.get("descriptor"), wanted.get("emotion"))


def _fields(text: str) -> dict[str, str]:
    """Field name -> raw value: the text up to the next field name; the first occurrence wins."""
    matches = list(_FIELD.finditer(text))
    found: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=False):
        name = match.group(1).lower()
        end = following.start() if following is not None else len(text)
        found.setdefault(name, text[match.end() : end])
    return found


def _synonyms(word: str) -> set[str]:
    """The word and every form that names the same emotion."""
    return {word}.union(*(group for group in EMOTION_SYNONYMS if word in group))


def normalize_emotion(value: str, labels: Sequence[str]) -> str | None:
    """The one label `value` names, or None.

    The value's first non-empty line is lower-cased and stripped of quotes and punctuation; an
    exact label wins, otherwise every word is mapped to the labels it names (itself or through
    EMOTION_SYNONYMS) and the answer is accepted only when exactly one label is named, so
    'angry or sad' is invalid rather than a coin toss. Negations ('not angry') are not understood.
    """
    lines = [line for line in value.splitlines() if line.strip()]
    if not lines:
        return None
    text = lines[0].lower().strip().strip(".,;:!?'\"`*()[]{}“”‘’«» \t")
    by_lower = {label.lower(): label for label in labels}
    if text in by_lower:
        return by_lower[text]
    named = {by_lower[name] for word in _WORD.findall(text) for name in _synonyms(word) if name in by_lower}
    return named.pop() if len(named) == 1 else None


def parse_response(text: str, labels: Sequence[str]) -> ParsedResponse:
    """Read the fields of any generated text; never raises.

    Field names are matched case-insensitively anywhere in the text, in any order; chatter before
    the first field is ignored; a transcript or descriptor runs (across lines) up to the next field
    name or the end of the text; only the first occurrence of a repeated field counts. The
    emotion is mapped onto `labels` by `normalize_emotion`.
    """
    text = unicodedata.normalize("NFKC", text if isinstance(text, str) else "")
    fields = _fields(text)
    transcript, descriptor = (
        _one_line(fields.get(name, "")) or None for name in ("transcript", "descriptor")
    )
    emotion = normalize_emotion(fields.get("emotion", ""), labels)
    return ParsedResponse(transcript, descriptor, emotion, valid_emotion=emotion is not None)
