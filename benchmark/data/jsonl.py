"""JSON-lines files of validated rows (manifests, prediction records), written atomically.

Both kinds of file are read back as the input of every later number, so a bad line must stop the
reader with its file and line, a duplicate id must be refused (an utterance counted twice biases
every mean) and a write interrupted half-way must never leave a truncated file in place of a good
one: rows go to a temporary file beside the target, which is fsynced and renamed over it at the end
(`benchmark.data.builds.atomic_file`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from benchmark.data.builds import atomic_file
from benchmark.errors import BenchmarkError

Row = TypeVar("Row", bound=BaseModel)


def write_jsonl(path: Path, rows: Iterable[BaseModel]) -> int:
    """Write `rows` to `path` atomically and durably; returns the number of rows written."""
    count = 0
    with atomic_file(path) as handle:
        for row in rows:
            handle.write(row.model_dump_json() + "\n")
            count += 1
    return count


def _parse_line(line: bytes, model: type[Row]) -> tuple[Row | None, str | None]:
    """(row, None) for a good line, else (None, what is wrong with it)."""
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte {err.start + 1} of the line: {err.reason})"
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg} at column {err.colno})"
    except (ValueError, RecursionError) as err:  # e.g. an integer of 5000 digits, nesting too deep
        return None, f"not valid JSON ({err})"
    try:
        return model.model_validate(data), None
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(row)"
        return None, f"field {field!r}: {first['msg']}"


def read_jsonl(path: Path, model: type[Row], hint: str | None = None) -> list[tuple[int, Row]]:
    """(line number, row) for every non-blank line; the first bad line or repeated `id` raises.

    Lines are read as bytes and decoded one by one, so that bytes that are not UTF-8 are blamed on
    their line too. `hint` (how to make the file again) goes with every such error.
    """
    rows: list[tuple[int, Row]] = []
    seen: set[str] = set()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row, error = _parse_line(line, model)
            if row is None:
                raise BenchmarkError(f"{path}:{number}: {error}", hint=hint)
            key = getattr(row, "key", row.id)  # a record of a seeded run: the id and its seed
            if key in seen:
                raise BenchmarkError(f"{path}:{number}: duplicate utterance id '{key}'", hint=hint)
            seen.add(key)
            rows.append((number, row))
    return rows
