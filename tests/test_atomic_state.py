"""State on disk is replaced whole or not at all: built folders, prepared corpora, checkpoints.

A crash at any point (an exception, Ctrl-C, SIGKILL) must leave the previous state readable and no
half-written file or folder that a later call takes for a finished one, or that piles up.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_reader_meld import make_release
from test_train import alternating, examples, make

from benchmark.data import builds, prepare
from benchmark.data.builds import atomic_build, atomic_file, read_build_info
from benchmark.data.prepare import prepare_corpus
from benchmark.errors import BenchmarkError
from benchmark.registry import load_dataset_card
from benchmark.signals import Stopped, stop_on_signals
from benchmark.train import checkpoint
from benchmark.train.loop import train

BUILDER = """
import sys, time
from pathlib import Path
from benchmark.data.builds import atomic_build
with atomic_build(Path(sys.argv[1]), {"by": "child"}) as tmp:
    (tmp / "half-built").write_text("x")
    print(tmp, flush=True)
    time.sleep(600)
"""


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_a_killed_build_is_cleaned_up_by_the_next_one_but_a_live_one_is_not(tmp_path: Path):
    out = tmp_path / "demo"
    child = subprocess.Popen([sys.executable, "-c", BUILDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        child_tmp = Path(child.stdout.readline().strip())
        assert child_tmp.parent == tmp_path and child_tmp.name.startswith(f".demo.{child.pid}.")

        with atomic_build(out, {"by": "me"}) as tmp:  # another process is building the same target
            (tmp / "done").write_text("")
        assert read_build_info(out) == {"by": "me"}
        assert (child_tmp / "half-built").is_file()  # still in use: left alone
    finally:
        child.kill()  # SIGKILL: no clean-up runs in the child
        child.wait()
    assert child_tmp.is_dir()

    with atomic_build(out, {"by": "me again"}):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_leftovers_of_dead_builds_are_removed_and_a_moved_aside_build_is_put_back(tmp_path: Path):
    out, pid = tmp_path / "demo", dead_pid()
    stale_tmp = tmp_path / f".demo.{pid}.abc_123.tmp"
    stale_old = tmp_path / f".demo.old-{pid}"
    live = tmp_path / f".demo.{os.getpid()}.xyz.tmp"  # a build of this very process, still running
    others = [tmp_path / f".demo-backbone.{pid}.abc.tmp", tmp_path / ".demo.notapid.tmp"]
    for folder in (stale_tmp, stale_old, live, *others):
        folder.mkdir()
    (stale_old / "build.json").write_text('{"by": "killed between the two renames"}')

    builds.remove_leftovers(out)  # no `demo`: the build moved aside is the last good one
    assert read_build_info(out) == {"by": "killed between the two renames"}
    assert not stale_tmp.exists() and not stale_old.exists()
    assert live.is_dir() and all(folder.is_dir() for folder in others)

    stale_old.mkdir()
    builds.remove_leftovers(out)  # `demo` exists: a moved-aside one is only garbage
    assert not stale_old.exists() and read_build_info(out) is not None


@pytest.fixture
def meld_release(tmp_path: Path) -> Path:
    make_release(tmp_path / "MELD.Raw")
    return tmp_path / "MELD.Raw"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_crash_between_manifests_keeps_every_previous_split(
    tmp_path: Path, meld_release: Path, monkeypatch: pytest.MonkeyPatch
):
    card, out = load_dataset_card("meld"), tmp_path / "prepared"
    prepare_corpus(card, meld_release, out)
    before = snapshot(out)
    assert set(before) == {"train.jsonl", "dev.jsonl", "test.jsonl", "issues.tsv", "prepare.json"}
    audio = sorted((tmp_path / "prepared-audio").rglob("*.wav"))
    assert len(audio) == 8

    written, real_write = [], prepare.write_manifest

    def crash_after_the_first(path: Path, rows) -> int:
        if written:
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, rows)

    monkeypatch.setattr(prepare, "write_manifest", crash_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(card, meld_release, out)
    assert written and snapshot(out) == before  # not one split replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MELD.Raw", "prepared", "prepared-audio"]
    assert sorted((tmp_path / "prepared-audio").rglob("*.wav")) == audio


def test_strict_failure_and_foreign_folders_write_nothing(tmp_path: Path, meld_release: Path):
    card = load_dataset_card("meld")
    with pytest.raises(BenchmarkError, match="with --strict, nothing written"):
        prepare_corpus(card, meld_release, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists() and not list(tmp_path.glob(".strict.*"))

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a corpus")
    with pytest.raises(BenchmarkError, match="does not hold a prepared corpus; refusing to replace it"):
        prepare_corpus(card, meld_release, mine)
    assert snapshot(mine) == {"notes.txt": b"not a corpus"}


def test_atomic_file_is_fsynced_and_leaves_nothing_on_failure(tmp_path: Path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    with atomic_file(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert Path(synced[0]).name.startswith(".x.json.") and synced[1:] == [str(tmp_path)]  # file, then folder
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # a plain file's mode, not mkstemp's 0600

    with pytest.raises(KeyboardInterrupt), atomic_file(target) as handle:
        handle.write("half")
        raise KeyboardInterrupt
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_save = torch.save
    saved: list[bytes] = []

    def disk_full_on_the_second(state, handle):
        if saved:
            handle.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        buffer = io.BytesIO()
        real_save(state, buffer)
        handle.write(buffer.getvalue())
        saved.append(buffer.getvalue())

    monkeypatch.setattr(checkpoint.torch, "save", disk_full_on_the_second)
    with pytest.raises(OSError, match="No space left"):
        train(make(alternating()), examples(4), checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT]
    assert (tmp_path / checkpoint.CHECKPOINT).read_bytes() == saved[0]


def test_a_stop_during_a_checkpoint_write_waits_until_the_checkpoint_is_whole(tmp_path: Path, monkeypatch):
    """SIGTERM inside torch.save: raised inside its zip writer it would surface as a RuntimeError
    (a crash, not a stop) and lose that epoch's checkpoint; held, it stops the run right after."""
    real_save = torch.save
    saved: list[int] = []

    def signalled_mid_write(state, handle):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler has run by now
        real_save(state, handle)
        saved.append(state["global_step"])

    monkeypatch.setattr(checkpoint.torch, "save", signalled_mid_write)
    with stop_on_signals(), pytest.raises(Stopped) as stop:
        train(make(alternating()), examples(4), checkpoint_dir=tmp_path, progress=False)
    assert stop.value.name == "SIGTERM" and len(saved) == 1  # stopped after the first checkpoint
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT]
    state = torch.load(tmp_path / checkpoint.CHECKPOINT, weights_only=False)
    assert (state["stage"], state["epoch"], state["global_step"]) == (0, 0, saved[0])
