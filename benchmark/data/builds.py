"""Atomic, durable writes: one file, or a whole folder (cached builds, prepared corpora).

A file is written to a temporary name beside its target, flushed to disk and renamed over it, so a
crash leaves either the old content or the new one, never a truncated file. A folder (the demo
corpus, the demo backbone, a corpus's manifests) is built in a temporary folder beside its target
and swapped into place at the end, so an interrupted build never leaves half a corpus or half a
model where a later call would take it for a finished one; `build.json` records what was built, so
a call asking for something else rebuilds instead of reusing.

A build killed outright (SIGKILL, a power cut) cannot remove its temporary folder. Every temporary
name carries the builder's process id, and the next build of the same target removes the
leftovers of dead processes, never those of a build still running in another process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import psutil

from benchmark.errors import BenchmarkError

BUILD_INFO = "build.json"


def _cannot_write(path: Path, err: OSError) -> BenchmarkError:
    return BenchmarkError(
        f"{path}: cannot write ({err.strerror or err})",
        hint="choose a path whose folder can be created and written to",
    )


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so that a rename inside it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: Literal["w", "wb"] = "w", durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` to write; on success it is renamed over `path`, on any
    failure (Ctrl-C too) it is removed and `path` is left as it was. A folder that cannot be
    created or written to is a `BenchmarkError`, raised before the caller writes anything.

    `durable` also fsyncs the file before the rename and the folder after it, so the new content
    survives a power cut: right for manifests, checkpoints and records. Cache entries (features,
    cues, synthesised wavs) pass False: there are thousands of them, and one lost to a crash is
    only computed again, while a sync per file would dominate the time to write them."""
    if path.is_dir():
        raise BenchmarkError(f"{path}: is a folder, not a file", hint="name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not mkstemp: its file is private (0600); this one gets a plain file's mode (the umask's).
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise _cannot_write(path, err) from err
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _cannot_write(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def read_build_info(folder: Path) -> dict[str, object] | None:
    """The `build.json` of a finished build, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, info: dict[str, object]) -> None:
    """A small JSON record (`build.json`, `prepare.json`), written atomically."""
    with atomic_file(path) as handle:
        handle.write(json.dumps(info, indent=2) + "\n")


def check_replaceable(out_dir: Path, marker: str, what: str) -> None:
    """Refuse a target that a build must not replace: a file, or a folder with content but no
    `marker` (the file every finished build of this kind holds), which may be the user's own data."""
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchmarkError(f"{out_dir}: exists and is not a folder", hint="choose a folder with --out")
    if out_dir.is_dir() and not (out_dir / marker).is_file() and any(out_dir.iterdir()):
        raise BenchmarkError(
            f"{out_dir}: folder exists and does not hold {what}; refusing to replace it",
            hint="choose an empty or new folder with --out",
        )


def _leftover_pid(out_dir: Path, name: str) -> int | None:
    """The builder's pid in the name of a temporary (`.NAME.PID.xxxx.tmp`) or moved-aside
    (`.NAME.old-PID`) folder of `out_dir`; None for any other name."""
    pattern = rf"\.{re.escape(out_dir.name)}\.(?:(\d+)\.[a-z0-9_]+\.tmp|old-(\d+))"
    match = re.fullmatch(pattern, name)
    return None if match is None else int(match.group(1) or match.group(2))


def remove_leftovers(out_dir: Path) -> None:
    """Remove the temporary and moved-aside folders that dead builds of `out_dir` left behind.

    A build killed between its two renames leaves no `out_dir` and the previous build moved
    aside: that one is put back rather than removed.
    """
    if not out_dir.parent.is_dir():
        return
    for path in sorted(out_dir.parent.iterdir()):
        pid = _leftover_pid(out_dir, path.name)
        if pid is None or not path.is_dir() or psutil.pid_exists(pid):
            continue
        if path.name == f".{out_dir.name}.old-{pid}" and not out_dir.exists():
            path.rename(out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)


def swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished build over `out_dir`, moving an earlier build aside first."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    tmp.rename(out_dir)
    fsync_folder(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir` to build into; on success swap it into place, on
    any failure (Ctrl-C too) remove it. Leftovers of dead builds are removed first."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out_dir)
        prefix = f".{out_dir.name}.{os.getpid()}."
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=out_dir.parent))
    except OSError as err:
        raise _cannot_write(out_dir, err) from err
    try:
        yield tmp
        swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_build(out_dir: Path, info: dict[str, object]) -> Iterator[Path]:
    """`atomic_folder` for a cached build: `info` is written as its `build.json` at the end."""
    with atomic_folder(out_dir) as tmp:
        yield tmp
        write_json(tmp / BUILD_INFO, info)
