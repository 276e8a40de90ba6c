"""Cached builds (the demo corpus, the demo backbone): a folder with a `build.json`, made atomically.

A build is written into a temporary folder beside its target and swapped into place at the end,
so an interrupted build never leaves half a corpus or half a model where a later call would take
it for a finished one; `build.json` records what was built, so a call asking for something else
rebuilds instead of reusing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def read_build_info(folder: Path) -> dict[str, object] | None:
    """The `build.json` of a finished build, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((folder / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_build_info(folder: Path, info: dict[str, object]) -> None:
    (folder / "build.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished build over `out_dir`, moving an earlier build aside first."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_build(out_dir: Path, info: dict[str, object]) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir` to build into; on success write `info` as its
    `build.json` and swap it into place, on any failure (Ctrl-C too) remove it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        write_build_info(tmp, info)
        swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
