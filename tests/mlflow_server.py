"""A real `mlflow server` for tests: started on a free loopback port, queried over REST, stopped.

`serving` is the UI of `benchmark ui`; `tracking_server` is the server many nodes share
(docs/tracking.md): a database backend, artifacts stored and served by the server itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from benchmark.tracking.store import MlflowConfig
from benchmark.workflows.ui import start_ui, stop_ui, wait_ready

Start = Callable[[int, BinaryIO], subprocess.Popen]  # (port, log) -> the server's process
Served = contextlib.AbstractContextManager[str]  # the server's base URL while it runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _ready(start: Start, log_path: Path, timeout: float) -> Iterator[str]:
    """The base URL of the server `start(port, log)` starts, once it answers /health; stopped on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        server = start(port, log)
        try:
            wait_ready(server, base, log_path, timeout)
            yield base
        finally:
            stop_ui(server)


def serving(config: MlflowConfig, log_path: Path, timeout: float = 60) -> Served:
    """The base URL of a UI server for `config`, ready (it answers /health); stopped on exit."""
    return _ready(lambda port, log: start_ui(config, port=port, stdout=log, stderr=log), log_path, timeout)


def tracking_server(backend_uri: str, artifacts: Path, log_path: Path, timeout: float = 180) -> Served:
    """The base URL of a tracking server on `backend_uri` that stores and serves the runs' files
    under `artifacts`, as docs/tracking.md starts it (on the loopback, one worker); stopped on exit."""

    def start(port: int, log: BinaryIO) -> subprocess.Popen:
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
        command += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as `ui` starts it
        return subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)

    return _ready(start, log_path, timeout)


def search_runs(base: str, experiment_id: str, filter_string: str = "") -> list[dict]:
    """Runs of an experiment through the REST API, as the UI sees them."""
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id], "filter": filter_string}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response).get("runs", [])
