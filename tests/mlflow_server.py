"""A real `mlflow server` for tests: started on a free loopback port, queried over REST, stopped."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.tracking.store import MlflowConfig
from benchmark.workflows.ui import start_ui, stop_ui, wait_ready


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(config: MlflowConfig, log_path: Path, timeout: float = 60) -> Iterator[str]:
    """The base URL of a UI server for `config`, ready (it answers /health); stopped on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        server = start_ui(config, port=port, stdout=log, stderr=log)
        try:
            wait_ready(server, base, log_path, timeout)
            yield base
        finally:
            stop_ui(server)


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
