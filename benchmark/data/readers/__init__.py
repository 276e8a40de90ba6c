"""Corpus readers: raw release on disk -> validated utterances per split.

A reader is a function `read(root, card, audio_dir) -> ReadResult`. It knows one corpus's on-disk
layout and quirks and nothing else: it never writes manifests (`benchmark.data.prepare` does that,
atomically) and never decides whether bad rows are fatal (`--strict` does). Every row it cannot
use becomes a `RowIssue` naming the file and line; raw labels that the dataset card maps to null
are dropped on purpose and only counted.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.config import DatasetCard
from benchmark.data.manifest import RowIssue, Utterance


@dataclass
class ReadResult:
    splits: dict[str, list[Utterance]] = field(default_factory=dict)
    issues: list[RowIssue] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


Reader = Callable[[Path, DatasetCard, Path], ReadResult]

_MODULES = {
    "iemocap": "benchmark.data.readers.iemocap",
    "meld": "benchmark.data.readers.meld",
    "speechcraft": "benchmark.data.readers.speechcraft",
    "emosec": "benchmark.data.readers.emosec",
}


def get_reader(name: str) -> Reader:
    """The reader function of a card's `reader` field (modules are imported on first use)."""
    return importlib.import_module(_MODULES[name]).read
