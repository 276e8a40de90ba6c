"""Helpers shared by the readers of corpora distributed as JSON and Kaldi-style tables."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.data.manifest import RowIssue

_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class JsonMember:
    """One entry of a top-level JSON object and the line its key starts on."""

    key: str
    value: Any
    line: int


def json_members(path: Path) -> tuple[list[JsonMember], RowIssue | None]:
    """The entries of a file holding one JSON object, in file order, with their line numbers.

    A malformed document yields the entries before the fault and an issue at the fault's line, so
    a truncated download still gives its good part (and fails `--strict`).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        return [], RowIssue(str(path), None, f"not UTF-8 text ({err.reason})")
    decoder = json.JSONDecoder()
    members: list[JsonMember] = []
    # Lines are counted incrementally: counting from the start for every entry is quadratic.
    counted_to, line = 0, 1

    def line_at(pos: int) -> int:
        nonlocal counted_to, line
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        return line

    def skip(pos: int) -> int:
        return _WHITESPACE.match(text, pos).end()

    def fault(pos: int, reason: str) -> tuple[list[JsonMember], RowIssue]:
        return members, RowIssue(str(path), line_at(pos), f"malformed JSON: {reason}")

    def finish(pos: int) -> tuple[list[JsonMember], RowIssue | None]:
        pos = skip(pos)
        return (members, None) if pos == len(text) else fault(pos, "extra data after the object")

    pos = skip(0)
    if not text.startswith("{", pos):
        return fault(pos, "expected an object '{...}' at the top level")
    pos = skip(pos + 1)
    if text.startswith("}", pos):
        return finish(pos + 1)
    while True:
        if not text.startswith('"', pos):
            return fault(pos, "expected a quoted key")
        start = pos
        try:
            key, pos = decoder.raw_decode(text, pos)
            pos = skip(pos)
            if not text.startswith(":", pos):
                return fault(pos, f"expected ':' after key {key!r}")
            value, pos = decoder.raw_decode(text, skip(pos + 1))
        except json.JSONDecodeError as err:
            return fault(err.pos, err.msg)
        members.append(JsonMember(key, value, line_at(start)))
        pos = skip(pos)
        if text.startswith(",", pos):
            pos = skip(pos + 1)
        elif text.startswith("}", pos):
            return finish(pos + 1)
        else:
            return fault(pos, "expected ',' or '}' after an entry")


def normalise_gender(raw: str | None) -> str | None:
    """'female'/'male' from the spellings corpora use (Female, F, m, ...); anything else is unknown."""
    value = (raw or "").strip().lower()
    if value in ("female", "f"):
        return "female"
    if value in ("male", "m"):
        return "male"
    return None
