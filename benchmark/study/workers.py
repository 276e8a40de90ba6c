"""Local study workers: `--workers N` processes on this machine, each a `study NAME --worker`.

Each worker takes trials from the shared storage until the study has its count (`search.work`);
the coordinator replaces a worker that dies (its trial failed and queued again first) and stops
them all on a user error. Each gets its share of the cores, so N workers never oversubscribe them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from benchmark.errors import BenchmarkError
from benchmark.registry import registry_roots
from benchmark.study.search import POLL_S, OpenStudy, StudyRequest, is_complete, sweep_stale


def worker_command(request: StudyRequest) -> list[str]:
    """The command line of one worker process: this study, joined (`--worker`) in its storage."""
    command = [sys.executable, "-m", "benchmark"]
    for root in registry_roots():
        command += ["--registry", str(root)]
    command += ["study", request.name, "--worker", "--storage", request.storage or ""]
    for flag in ("dataset", "backbone", "epochs", "trials"):
        if (value := getattr(request, flag)) is not None:
            command += [f"--{flag}", str(value)]
    for key, value in _flat(request.overrides):
        command += ["--set", f"{key}={json.dumps(value)}"]
    if request.resume:
        command.append("--resume")
    if not request.progress:
        command.append("--no-progress")
    return command


def _flat(overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        if isinstance(value, dict) and value:
            pairs += _flat(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_environment(workers: int) -> dict[str, str]:
    """The environment of `workers` processes on this machine: each gets its share of the cores.

    Left alone, every worker's torch takes all the cores, and N workers on C cores run N x C
    threads, slower than one worker (docs/studies.md). A thread count the user set is kept.
    """
    env = dict(os.environ)
    if not any(name in env for name in THREAD_VARIABLES):
        share = str(max(1, len(os.sched_getaffinity(0)) // workers))
        env |= dict.fromkeys(THREAD_VARIABLES, share)
    return env


def run_workers(opened: OpenStudy, request: StudyRequest) -> None:
    """`--workers N` processes until the study is complete. A worker that dies is replaced (its
    trial failed and queued again first), at most `max_retries` times per worker slot; one that
    stops on a user error (exit status 2) stops them all, as every trial would fail alike."""
    fields = {**request.__dict__, "storage": opened.storage.url, "progress": False}  # bars would interleave
    command = worker_command(StudyRequest(**fields))
    env = worker_environment(request.workers)
    processes = [subprocess.Popen(command, env=env) for _ in range(request.workers)]
    replacements = opened.spec.max_retries * request.workers
    try:
        while processes:
            time.sleep(POLL_S)
            for process in [p for p in processes if p.poll() is not None]:
                processes.remove(process)
                if process.returncode == 2:  # the worker printed the error
                    raise BenchmarkError(f"a worker of study {opened.spec.name} stopped on an error")
                if process.returncode != 0:
                    print(f"a worker of study {opened.spec.name} ended with status {process.returncode}",
                          file=sys.stderr)  # fmt: skip
                    sweep_stale(opened)
                    if replacements > 0 and not is_complete(opened):
                        replacements -= 1
                        processes.append(subprocess.Popen(command, env=env))
    except BaseException:  # Ctrl-C, or the error above: each worker ends its trial and runs first
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait()
        sweep_stale(opened)
        raise
