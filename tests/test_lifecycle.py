"""Runs that always end: signals, a busy store, owners that are gone, and `--resume` after them.

The signal tests run `python -m benchmark run` (tiny backbone, one epoch, a 40-utterance demo
corpus) as a real process and stop it the way a user, `timeout` or the kernel would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run, RunData, RunInfo, RunTag
from mlflow.exceptions import MlflowException

from benchmark.cli import main
from benchmark.signals import Stopped, signals_held, stop_on_signals
from benchmark.tracking import lifecycle
from benchmark.tracking.lifecycle import owner_gone, process_start, tracking_write
from benchmark.tracking.runs import run_context
from benchmark.tracking.store import EXPERIMENT_KIND, MlflowConfig, RunsConfig, tracking_setup
from benchmark.workflows.run import RunRequest, run_experiment

RUN = ["run", "--system", "full", "--backbone", "tiny", "--epochs", "1", "--fold", "1"]


def start_run_process(log: Path) -> subprocess.Popen:
    """`benchmark run` in its own process group, as a shell starts a foreground job."""
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", *RUN],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def store_runs(pid: int | None = None) -> list[Run]:
    """The runs of the default experiment in ./mlruns (those owned by process `pid`, if given)."""
    mlflow.set_tracking_uri(f"sqlite:///{Path('mlruns/mlflow.db').resolve()}")
    experiment = mlflow.get_experiment_by_name("explainable-ser")
    if experiment is None:
        return []
    runs = MlflowClient().search_runs([experiment.experiment_id])
    return [r for r in runs if pid is None or r.data.tags.get("owner.pid") == str(pid)]


def wait_for_fold_run(process: subprocess.Popen, timeout: float = 300) -> None:
    """Until the process has opened its fold run (so both of its runs are RUNNING)."""
    deadline = time.monotonic() + timeout
    while not any("fold" in r.data.tags for r in store_runs(process.pid)):
        assert process.poll() is None, "the run ended before its fold run opened"
        assert time.monotonic() < deadline, "no fold run opened in time"
        time.sleep(0.5)


def finish_or_show_stacks(process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait for the process; if it hangs, fail with the stacks of its threads (SIGUSR1) and its log."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        tail = log.read_text(errors="replace")[-6000:]
        pytest.fail(f"{log.name}: no exit within {timeout} s; its log ends:\n{tail}")


def last_line(log: Path) -> str:
    return log.read_text(errors="replace").strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_ends_the_runs_killed_with_exit_143_and_one_line(workdir: Path):
    log = workdir / "run.log"
    process = start_run_process(log)
    wait_for_fold_run(process)
    process.send_signal(signal.SIGTERM)
    finish_or_show_stacks(process, log, timeout=120)
    assert process.returncode == 143, log.read_text(errors="replace")[-6000:]
    runs = store_runs(process.pid)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}
    text = log.read_text(errors="replace")
    assert "Traceback" not in text
    assert last_line(log).startswith("stopped by SIGTERM; MLflow run(s) marked KILLED: ")
    assert all(r.info.run_id in last_line(log) for r in runs)


@pytest.mark.slow
def test_sigkill_leaves_a_stale_run_that_the_next_command_marks_and_resume_continues(
    workdir: Path, capsys: pytest.CaptureFixture[str]
):
    process = start_run_process(workdir / "run.log")
    wait_for_fold_run(process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    killed = store_runs(process.pid)
    assert {r.info.status for r in killed} == {"RUNNING"}  # nothing of the process ran any more

    assert main(["leaderboard", "--table", "ser", "--dataset", "demo"]) == 0  # any command that reads runs
    err = capsys.readouterr().err
    for run in store_runs(process.pid):
        assert run.info.status == "FAILED"
        assert run.data.tags["ended_by"] == "stale"
        assert f"process {process.pid} on {socket.gethostname()} has exited" in run.data.tags["stale_reason"]
        assert f"marked run {run.info.run_id}" in err

    parent = next(r for r in killed if "mlflow.parentRunId" not in r.data.tags)
    summary = run_experiment(
        RunRequest(system="full", backbone="tiny", fold="1", epochs=1, resume=True, progress=False)
    )
    resumed = MlflowClient().get_run(summary.run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_from"] == parent.info.run_id
    assert resumed.data.tags["config_digest"] == parent.data.tags["config_digest"]
    assert resumed.data.tags["checkpoints"] == parent.data.tags["checkpoints"]  # continued in its folder
    assert not Path(resumed.data.tags["checkpoints"]).exists()  # a finished run removes its checkpoints


@pytest.mark.slow
def test_sigint_at_six_moments_ends_every_run_killed_with_exit_130(workdir: Path):
    """Ctrl-C (SIGINT to the process group) at six moments of a run, as timed on an uninterrupted one:
    one before its runs open (imports, corpus, encoder), the others spread until it ends."""
    launched = time.time()
    reference = start_run_process(workdir / "reference.log")
    assert reference.wait(timeout=600) == 0, (workdir / "reference.log").read_text()
    duration = time.time() - launched
    opened = min(r.info.start_time for r in store_runs(reference.pid)) / 1000 - launched
    moments = [opened * 0.6 + (duration * 0.85 - opened * 0.6) * i / 5 for i in range(6)]

    def interrupt(moment: float) -> tuple[subprocess.Popen, Path]:
        log = workdir / f"sigint-{moment:.1f}s.log"
        process = start_run_process(log)
        time.sleep(moment)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        finish_or_show_stacks(process, log, timeout=300)
        return process, log

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time also keeps the store busy
        results = list(pool.map(interrupt, moments))
    killed_runs = 0
    for process, log in results:
        text = log.read_text(errors="replace")
        runs = store_runs(process.pid)
        if runs and {r.info.status for r in runs} == {"FINISHED"}:
            # On a machine whose load changed since the reference, a moment can fall after the work,
            # as the interpreter exits: nothing is left to end, and the signal ends the process.
            assert process.returncode in (0, 130, -signal.SIGINT), text
            continue
        assert process.returncode == 130, text
        assert "Traceback" not in text, text
        assert last_line(log).startswith("stopped by SIGINT"), text
        statuses = [r.info.status for r in runs]
        assert set(statuses) <= {"KILLED", "FINISHED"}, (statuses, text)  # an ended fold run stays FINISHED
        killed_runs += statuses.count("KILLED")
    assert killed_runs >= 5  # most moments fell while runs were open
    assert not [r for r in store_runs() if r.info.status == "RUNNING"]


def test_a_signal_during_a_tracking_write_is_raised_after_it():
    steps = []

    def write() -> str:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler has run by now
        steps.append("written")
        return "ok"

    with stop_on_signals(), pytest.raises(Stopped) as stop:
        tracking_write(write)
        steps.append("after the write")  # never reached: the held signal is raised at the write's end
    assert steps == ["written"] and stop.value.exit_code == 130

    with stop_on_signals(), pytest.raises(Stopped) as stop, signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal while held: the first one wins
        time.sleep(0.05)
        steps.append("held")
    assert steps[-1] == "held" and stop.value.name == "SIGTERM" and stop.value.exit_code == 143


def test_once_stopping_later_signals_do_not_cut_the_clean_up_short():
    done = []
    # What the process had before: Python's default_int_handler, or SIG_IGN when a shell started the
    # tests in the background (as `nohup ... &` does).
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals(), pytest.raises(Stopped):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        finally:  # the clean-up of a stopped command
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("cleaned up")
    assert done == ["cleaned up"]
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_busy_store_writes_are_retried_and_other_errors_are_not(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lifecycle.time, "sleep", lambda seconds: None)
    calls = []

    def busy_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException(
                "(sqlite3.OperationalError) database is locked", error_code="TEMPORARILY_UNAVAILABLE"
            )
        return "stored"

    assert tracking_write(busy_twice) == "stored" and len(calls) == 3

    def dataset_race_lost() -> str:  # another process registered the same dataset a moment earlier
        calls.append(1)
        if len(calls) == 4:
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, "
                "datasets.digest"
            )
        return "found"

    assert tracking_write(dataset_race_lost) == "found" and len(calls) == 5
    calls.clear()

    def broken() -> None:
        calls.append(1)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run abc not found")

    with pytest.raises(MlflowException, match="not found"):
        tracking_write(broken)
    assert len(calls) == 1  # not retried

    def other_integrity_error() -> None:
        calls.append(1)
        raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: runs.run_uuid")

    with pytest.raises(MlflowException, match=r"runs\.run_uuid"):
        tracking_write(other_integrity_error)
    assert len(calls) == 2

    def always_busy() -> None:
        raise MlflowException("database is locked")

    monkeypatch.setattr(lifecycle, "RETRY_SECONDS", 0.0)
    with pytest.raises(MlflowException, match="locked"):
        tracking_write(always_busy)


def fake_run(tags: dict[str, str], started_s_ago: float = 5.0) -> Run:
    info = RunInfo(
        run_id="r" * 32,
        experiment_id="1",
        user_id="me",
        status="RUNNING",
        start_time=int((time.time() - started_s_ago) * 1000),
        end_time=None,
        lifecycle_stage="active",
    )
    return Run(info, RunData(tags=[RunTag(k, v) for k, v in tags.items()]))


def owner(pid: int, host: str | None = None, start: float | None = None, beat_s_ago: float = 1.0) -> dict:
    started = process_start(pid) if start is None else start
    return {
        "owner.host": host or socket.gethostname(),
        "owner.pid": str(pid),
        "owner.process_start": f"{started or 0:.3f}",
        "owner.heartbeat": f"{time.time() - beat_s_ago:.3f}",
    }


def test_owner_gone_on_this_host_and_on_others():
    assert owner_gone(fake_run(owner(os.getpid())), stale_after_s=600) is None  # alive: this very process

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    reason, _ = owner_gone(fake_run(owner(exited.pid, start=time.time())), stale_after_s=600)
    assert reason == f"its process {exited.pid} on {socket.gethostname()} has exited"

    reused = owner(os.getpid(), start=process_start(os.getpid()) - 3600)  # same pid, another process
    assert "now belongs to another process" in owner_gone(fake_run(reused), stale_after_s=600)[0]

    elsewhere = owner(os.getpid(), host="gpu-node-7", start=1.0)  # pids of other hosts are not looked up
    assert owner_gone(fake_run(elsewhere), stale_after_s=600) is None
    silent = owner(os.getpid(), host="gpu-node-7", start=1.0, beat_s_ago=900)
    reason, last_seen = owner_gone(fake_run(silent), stale_after_s=600)
    assert reason.startswith(f"no heartbeat from gpu-node-7:{os.getpid()} for 900 s (limit 600 s)")
    assert last_seen == pytest.approx(time.time() - 900, abs=5)

    assert owner_gone(fake_run({}, started_s_ago=60), stale_after_s=600) is None  # written before owner tags
    assert "not recorded" in owner_gone(fake_run({}, started_s_ago=7200), stale_after_s=600)[0]


def test_runs_record_their_owner_and_a_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    config = MlflowConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "artifacts"),
        runs=RunsConfig(heartbeat_s=0.2, stale_after_s=1.0),
    )
    experiment_id = tracking_setup(config)
    key, value = EXPERIMENT_KIND
    assert MlflowClient().get_experiment(experiment_id).tags[key] == value  # the UI opens on the runs table
    with run_context("beating") as run:
        tags = MlflowClient().get_run(run.info.run_id).data.tags
        assert (tags["owner.host"], tags["owner.pid"]) == (socket.gethostname(), str(os.getpid()))
        assert float(tags["owner.process_start"]) == pytest.approx(process_start(os.getpid()), abs=1e-3)
        first = float(tags["owner.heartbeat"])
        deadline = time.monotonic() + 30
        while float(MlflowClient().get_run(run.info.run_id).data.tags["owner.heartbeat"]) == first:
            assert time.monotonic() < deadline, "the heartbeat never moved"
            time.sleep(0.1)
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def test_runs_config_needs_several_heartbeats_before_a_run_is_stale():
    with pytest.raises(ValueError, match="three heartbeats"):
        RunsConfig(heartbeat_s=30, stale_after_s=60)


def test_the_signal_module_imports_nothing_heavy():
    """The CLI installs the handlers before any command: that must not cost mlflow's or torch's import."""
    code = "import sys, benchmark.signals; print(sorted({'mlflow', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
