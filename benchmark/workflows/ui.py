"""The MLflow UI of `python -m benchmark ui`: start `mlflow server`, wait until it answers, serve, stop.

`mlflow server` is a launcher: it starts uvicorn as a child process and exits 0 even when uvicorn
cannot bind its port, so `ui` relies on it neither to report problems nor to end its child:

- the address is checked by binding it first, so a taken port or a host that is no address of this
  machine is one clear error instead of a line buried in the server's log;
- the server counts as ready once it answers `/health`; if it exits before that, the error quotes
  the last meaningful line of its output, which goes to a log file named in the hint;
- the server runs in a session of its own, so a Ctrl-C in the terminal reaches `ui` alone, and `ui`
  ends the whole process tree itself (SIGTERM, a grace period, then SIGKILL), also when `ui` fails;
- bound to an address other machines reach, `ui` lists the URLs they can use and warns that the UI
  has no login; a store that is a tracking server is not served again: it serves its own UI.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import psutil
from pydantic import ValidationError

from benchmark.config import benchmark_home
from benchmark.errors import BenchmarkError
from benchmark.tracking.store import MlflowConfig, UIConfig, is_tracking_server, tracking_setup

READY_TIMEOUT_S = 120.0  # `mlflow server` takes 10-20 s to answer on two busy cores
STOP_GRACE_S = 5.0
POLL_S = 0.25
# The health check must reach the local server directly, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_TIMESTAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\s+")
# MLflow 3.17's UI shows every experiment in its GenAI mode (a traces overview first) unless the URL
# or the browser's last choice selects "Model training"; the experiment's `mlflow.experimentKind`
# tag decides only in UIs without that switch. So the printed runs URL selects the mode itself.
MODEL_TRAINING = "workflowType=machine_learning"
NO_LOGIN = (
    "the MLflow UI has no login: anyone who reaches {urls} can read, change and delete runs; to require "
    "one, serve the store with MLflow's basic-auth app (`mlflow server --app-name basic-auth`, from "
    "`pip install 'mlflow[auth]'`)"
)


@dataclass(frozen=True)
class ReadyUI:
    """Where a running UI can be reached, and where its server writes its output.

    `url` is for a browser on this machine; `remote_urls` for browsers on other machines (none
    when the server listens on the loopback alone), which also calls for the `warning`.
    """

    url: str
    runs_url: str
    log: Path
    remote_urls: tuple[str, ...] = ()

    @property
    def warning(self) -> str | None:
        return NO_LOGIN.format(urls=", ".join(self.remote_urls)) if self.remote_urls else None


def runs_url(base: str, experiment_id: str) -> str:
    """The runs table of an experiment in the UI at `base`, in its "Model training" mode."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING}"


def ui_command(config: MlflowConfig, host: str | None = None, port: int | None = None) -> list[str]:
    """The `mlflow server` command line for this store (one worker: a UI for one user)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", config.tracking_uri]
    if config.artifact_location:
        command += ["--default-artifact-root", config.artifact_location]
    return [
        *command,
        "--host",
        host or config.ui.host,
        "--port",
        str(port or config.ui.port),
        "--workers",
        "1",
    ]


def start_ui(
    config: MlflowConfig, host: str | None = None, port: int | None = None, **popen: Any
) -> subprocess.Popen:
    """Start the MLflow UI server in a session of its own (`popen`: extra `subprocess.Popen` arguments).

    Its own session keeps the terminal's Ctrl-C away from it, so that `stop_ui` alone decides how
    its process tree ends. MLflow 3's GenAI job executor is switched off: browsing training runs
    does not need it, and it would start extra consumer processes and leave a temporary folder in
    /dev/shm per start.
    """
    tracking_setup(config)  # creates the store and folders, so the UI never starts on a missing DB
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(ui_command(config, host, port), env=env, start_new_session=True, **popen)


def ui_address(config: MlflowConfig, host: str | None = None, port: int | None = None) -> UIConfig:
    """mlflow.yaml's UI host and port with the command line's overrides, validated like the file's."""
    try:
        return UIConfig(host=host or config.ui.host, port=config.ui.port if port is None else port)
    except ValidationError as err:
        raise BenchmarkError(
            f"port {port} is out of range: a TCP port is 1..65535",
            hint="pass --port N with 1 <= N <= 65535, e.g. --port 5001",
        ) from err


def check_address(host: str, port: int) -> None:
    """Fail with one line if `host:port` cannot be bound, before the server's seconds-long start.

    The socket is made as uvicorn makes its own (IPv6 for a host with a colon, SO_REUSEADDR), so
    that a port still in TIME_WAIT after the last `ui` counts as free, as it is for uvicorn.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise BenchmarkError(
                    f"port {port} on {host} is already in use",
                    hint=f"stop the program listening there (an earlier `ui`?) or pass another --port, "
                    f"e.g. --port {port % 65535 + 1}",
                ) from err
            if err.errno == errno.EACCES:
                raise BenchmarkError(
                    f"not allowed to listen on port {port} ({err.strerror})",
                    hint="ports below 1024 need root; pass --port N with N >= 1024",
                ) from err
            raise BenchmarkError(
                f"cannot listen on {host}:{port} ({err.strerror})",
                hint="pass --host 127.0.0.1 (this machine only) or an address of this machine",
            ) from err


def _url_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _browser_host(host: str) -> str:
    """How a browser on this machine reaches a server bound to `host` (a wildcard: the loopback)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name, e.g. localhost
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return _url_host(address)


def _is_loopback(host: str) -> bool:
    """Whether every address `host` (an address or a name) stands for is a loopback address."""
    try:
        found = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0].partition("%")[0]).is_loopback for info in found)


def remote_urls(host: str, port: int) -> tuple[str, ...]:
    """The URLs by which other machines reach a server bound to `host`: none for the loopback.

    A wildcard (0.0.0.0, ::) listens on every interface: each address of this machine of its family
    is listed, loopback and link-local ones left out (the bound host:port itself if none is left).
    """
    if _is_loopback(host):
        return ()
    try:
        bound = ipaddress.ip_address(host)
    except ValueError:
        return (f"http://{host}:{port}",)  # a name of this machine
    if not bound.is_unspecified:
        return (f"http://{_url_host(bound)}:{port}",)
    family = socket.AF_INET6 if bound.version == 6 else socket.AF_INET
    found = [
        ipaddress.ip_address(entry.address.partition("%")[0])
        for entries in psutil.net_if_addrs().values()
        for entry in entries
        if entry.family == family
    ]
    usable = [address for address in found if not (address.is_loopback or address.is_link_local)]
    return tuple(f"http://{_url_host(address)}:{port}" for address in usable or [bound])


def last_meaningful_line(log: Path) -> str:
    """The line of a server log that says why it stopped: the last error, else the last line.

    uvicorn reports a failed start as an ERROR line followed by routine shutdown lines, so the
    plain last line would only say "Application shutdown complete".
    """
    text = log.read_text(errors="replace")
    lines = [_TIMESTAMP.sub("", " ".join(line.split())) for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1]


def _exited(process: subprocess.Popen, log: Path) -> BenchmarkError:
    return BenchmarkError(
        f"the MLflow UI server exited (status {process.returncode}): {last_meaningful_line(log)}",
        hint=f"its full output is in {log}",
    )


def _healthy(url: str) -> bool:
    try:
        with _DIRECT.open(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(
    process: subprocess.Popen,
    url: str,
    log: Path,
    timeout: float = READY_TIMEOUT_S,
) -> None:
    """Block until the server at `url` answers `/health`.

    Raises `BenchmarkError` if the server exits first (quoting its `log`) or is silent past `timeout`.
    """
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if process.poll() is not None:
            raise _exited(process, log)
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"the MLflow UI server did not answer {url}/health within {timeout:.0f} s",
                hint=f"its output is in {log}",
            )
        time.sleep(POLL_S)


def _server_processes(process: subprocess.Popen) -> list[psutil.Process]:
    """The server and every process it started, including any orphaned when the launcher died.

    A worker whose parent has exited is re-parented out of the tree, but stays in the server's
    process group (the server leads its own session). The tree is read only while the server is
    unreaped, so its pid cannot belong to another program yet.
    """
    found: dict[int, psutil.Process] = {}
    if process.poll() is None:
        with suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            found = {proc.pid: proc for proc in (root, *root.children(recursive=True))}
    for proc in psutil.process_iter():
        with suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == process.pid:
                found.setdefault(proc.pid, proc)
    return list(found.values())


def stop_ui(process: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """End the server and all its processes: SIGTERM, up to `grace` seconds, then SIGKILL for the rest.

    Every process is signalled by `ui` itself: `mlflow server` forwards SIGTERM to its uvicorn child
    only once its handler is installed, seconds into its start, and a SIGKILLed or crashed launcher
    forwards nothing, which would leave uvicorn running and holding the port.
    """
    processes = _server_processes(process)
    for proc in processes:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
    process.wait()


def serve_ui(
    config: MlflowConfig,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[ReadyUI], None] = lambda ready: None,
) -> NoReturn:
    """Serve the MLflow UI of `config`'s store until the command is stopped (SIGINT, SIGTERM).

    The stop arrives as an exception (`benchmark.signals.Stopped` under the CLI, which also
    keeps a second Ctrl-C from cutting the clean-up short). `on_ready` is called once the server
    answers, with the URLs to open. Raises `BenchmarkError` if the store is a tracking server (its
    UI is the server's own), if the address cannot be used, or if the server exits or never
    answers; the server's whole process tree has ended whenever this raises.
    """
    if is_tracking_server(config.tracking_uri):
        raise BenchmarkError(
            f"the store is the tracking server {config.tracking_uri}, which serves the MLflow UI itself",
            hint=f"open {runs_url(config.tracking_uri, tracking_setup(config))}",
        )
    address = ui_address(config, host, port)
    check_address(address.host, address.port)
    experiment_id = tracking_setup(config)
    url = f"http://{_browser_host(address.host)}:{address.port}"
    log = benchmark_home() / "logs" / f"mlflow-ui-{address.port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = start_ui(config, address.host, address.port, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_ready(process, url, log)
            others = remote_urls(address.host, address.port)
            on_ready(ReadyUI(url, runs_url(url, experiment_id), log, others))
            while process.poll() is None:
                time.sleep(POLL_S)
            raise _exited(process, log)
        finally:
            stop_ui(process)
