"""A real `mlflow server` for tests: started on a free loopback port, queried over REST, stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.track.tracking import MlflowConfig, start_ui


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(config: MlflowConfig, log_path: Path, timeout: float = 60) -> Iterator[str]:
    """The base URL of a UI server for `config`, ready (it answers /health); stopped on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = log_path.open("wb")
    # Its own session, so that terminating the group also ends the uvicorn child mlflow starts.
    server = start_ui(config, port=port, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"MLflow server did not answer /health within {timeout} s"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
        log.close()


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
