"""Every test runs offline with its own BENCHMARK_HOME, so nothing touches the user's caches."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path_factory.mktemp("benchmark_home")
    monkeypatch.setenv("BENCHMARK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("BENCHMARK_REGISTRY", raising=False)
    # A developer's own MLFLOW_TRACKING_URI must not send the tests' runs to their server.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices run fastest on one thread, and many times slower when threads fight for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder (MLflow writes mlruns/ here) with a 40-utterance demo corpus prepared."""
    from benchmark.data.demo import build_demo_corpus

    monkeypatch.chdir(tmp_path)
    build_demo_corpus(size=40, seed=0, progress=False)
    yield tmp_path
    mlflow.end_run()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for the whole session (tests/postgres.py); stopped at the end."""
    from postgres import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()
