"""JSON-lines files of validated rows (manifests, prediction records), written atomically.

Both kinds of file are read back as the input of every later number, so a bad line must stop the
reader with its file and line, a duplicate id must be refused (an utterance counted twice biases
every mean) and a write interrupted half-way must never leave a truncated file in place of a good
one: rows go to a temporary file beside the target, which is renamed over it at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from benchmark.errors import BenchmarkError

Row = TypeVar("Row", bound=BaseModel)


def write_jsonl(path: Path, rows: Iterable[BaseModel]) -> int:
    """Write `rows` to `path` atomically; returns the number of rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(row.model_dump_json() + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_jsonl(path: Path, model: type[Row]) -> list[tuple[int, Row]]:
    """(line number, row) for every non-blank line; the first bad line or repeated `id` raises."""
    rows: list[tuple[int, Row]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = model.model_validate(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchmarkError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            except ValidationError as err:
                first = err.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "(row)"
                raise BenchmarkError(f"{path}:{number}: field '{field}': {first['msg']}") from err
            if row.id in seen:
                raise BenchmarkError(f"{path}:{number}: duplicate utterance id '{row.id}'")
            seen.add(row.id)
            rows.append((number, row))
    return rows
