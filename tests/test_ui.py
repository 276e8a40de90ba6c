"""`python -m benchmark ui`: clear errors when it cannot serve, and a clean stop of the whole server tree.

The address, early-exit and exposure checks run without a server. The other tests start real
`mlflow server` processes (seconds each), so there are four: SIGINT, SIGTERM, an exception inside
`ui`, and a UI bound to every interface.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import psutil
import pytest
from mlflow_server import free_port

from benchmark.errors import BenchmarkError
from benchmark.tracking.store import load_mlflow_config
from benchmark.workflows import ui as ui_module
from benchmark.workflows.ui import ReadyUI, remote_urls, serve_ui, wait_ready


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('ui_store') / 'mlflow.db'}"


@pytest.fixture
def env(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a `ui` started here: the shared store, this test's folder as cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    return dict(os.environ)


def ui(*args: str, env: dict[str, str], **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", "ui", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's zombie stays until a reaper that may not exist collects it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def answers_health(port: int, host: str = "127.0.0.1") -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(f"http://{host}:{port}/health", timeout=10) as response:
        return response.status == 200


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_taken_port_is_one_error_line(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = ui("--port", str(port), env=env)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    lines = err.splitlines()
    assert lines[0] == f"error: port {port} on 127.0.0.1 is already in use", err
    assert [line for line in lines[1:] if not line.startswith("  hint:")] == [], err
    assert "MLflow UI of" not in out


def test_port_out_of_range_is_one_error_line(env: dict[str, str]) -> None:
    proc = ui("--port", "70000", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    lines = err.splitlines()
    assert lines[0].startswith("error: port 70000 is out of range"), err
    assert len(lines) == 2 and lines[1].startswith("  hint:"), err


def test_server_exiting_early_is_reported_with_its_cause(tmp_path: Path) -> None:
    """mlflow server exits 0 after uvicorn's bind error: the error must quote that line."""
    log = tmp_path / "server.log"
    script = (
        "print('2026/01/02 03:04:05 ERROR:    [Errno 98] error while attempting to bind'); "
        "print('2026/01/02 03:04:05 INFO:     Application shutdown complete.')"
    )
    with log.open("wb") as output:
        server = subprocess.Popen([sys.executable, "-c", script], stdout=output)
        with pytest.raises(BenchmarkError, match=r"status 0\): ERROR: \[Errno 98\] error while") as caught:
            wait_ready(server, f"http://127.0.0.1:{free_port()}", log)
    assert str(log) in caught.value.hint


def interfaces(*addresses: str) -> dict[str, list[SimpleNamespace]]:
    """What psutil.net_if_addrs says of a machine with these IPv4 addresses, one interface each."""
    return {f"if{i}": [SimpleNamespace(family=socket.AF_INET, address=a)] for i, a in enumerate(addresses)}


def test_other_machines_are_shown_their_urls_and_warned_of_no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    for loopback in ("127.0.0.1", "localhost", "::1"):
        assert remote_urls(loopback, 5000) == ()
    assert ReadyUI("http://127.0.0.1:5000", "", Path("log")).warning is None
    assert remote_urls("10.1.2.3", 5000) == ("http://10.1.2.3:5000",)
    machine = interfaces("127.0.0.1", "10.0.0.7", "169.254.3.4", "192.168.1.20")
    monkeypatch.setattr(ui_module.psutil, "net_if_addrs", lambda: machine)
    urls = remote_urls("0.0.0.0", 5000)  # every interface, but loopback and link-local
    assert urls == ("http://10.0.0.7:5000", "http://192.168.1.20:5000")
    warning = ReadyUI("http://127.0.0.1:5000", "", Path("log"), urls).warning
    assert warning.startswith("the MLflow UI has no login: anyone who reaches http://10.0.0.7:5000, ")
    assert "`mlflow server --app-name basic-auth`" in warning and "\n" not in warning
    monkeypatch.setattr(ui_module.psutil, "net_if_addrs", lambda: interfaces("127.0.0.1"))
    assert remote_urls("0.0.0.0", 5000) == ("http://0.0.0.0:5000",)  # at least what is bound


@pytest.mark.slow
def test_a_ui_on_every_interface_names_its_urls_and_warns_once(env: dict[str, str]) -> None:
    port = free_port()
    proc = ui("--host", "0.0.0.0", "--port", str(port), env=env)
    try:
        out = []
        for line in proc.stdout:  # ends early if `ui` exits before it is ready
            out.append(line)
            if "/#/experiments/" in line:
                break
        assert out[0].startswith("MLflow UI of sqlite:///") and f": http://127.0.0.1:{port}" in out[0], out
        assert out[1].startswith("  from other machines: http://"), out
        other = urlparse(out[1].split()[3].rstrip(","))  # the first: an address of this machine
        assert other.port == port and answers_health(port, other.hostname)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            for leftover in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
                leftover.kill()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no login" in warnings[0] and "--app-name basic-auth" in warnings[0], err
    assert proc.returncode == 130 and "Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_the_whole_server_tree(env: dict[str, str], signum: int, code: int) -> None:
    port = free_port()
    proc = ui("--port", str(port), env=env)
    try:
        runs_url = None
        for line in proc.stdout:  # ends early if `ui` exits before it is ready
            if "/#/experiments/" in line:
                runs_url = line.split()[-1]
                break
        assert runs_url is not None, proc.stderr.read()
        runs_table = rf"http://127\.0\.0\.1:{port}/#/experiments/\d+/runs\?workflowType=machine_learning"
        assert re.fullmatch(runs_table, runs_url), runs_url
        assert answers_health(port)  # the URL is printed only once the server answers
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2, tree  # mlflow server and its uvicorn
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:  # a failed assertion above must not leave the server running
        if proc.poll() is None:
            for leftover in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
                leftover.kill()
    assert proc.returncode == code, err
    # (before it: mlflow's own log lines when `ui` creates the store)
    assert err.splitlines()[-1] == f"stopped by {signal.Signals(signum).name}; the MLflow UI server has ended"
    assert "Traceback" not in err
    assert [p.pid for p in tree if alive(p)] == []
    assert can_bind(port)


@pytest.mark.slow
def test_server_never_outlives_an_exception(env: dict[str, str]) -> None:
    tree: list[psutil.Process] = []
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. other tests' scorers

    def fail(ready: ReadyUI) -> None:
        tree.extend(p for p in psutil.Process().children(recursive=True) if p.pid not in before)
        raise RuntimeError("printing failed")

    port = free_port()
    handlers = [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)]
    with pytest.raises(RuntimeError, match="printing failed"):
        serve_ui(load_mlflow_config(), port=port, on_ready=fail)
    assert len(tree) >= 2, tree
    assert [p.pid for p in tree if alive(p)] == []
    assert can_bind(port)
    assert [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)] == handlers
