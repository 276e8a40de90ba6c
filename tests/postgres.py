"""A real PostgreSQL server for tests, started from the binaries of the `pgserver` wheel.

Studies and tracking share a PostgreSQL database in production, so the tests that cover them run
against a real server rather than SQLite or a mock, and never skip: `pip install -e ".[dev]"` brings
the server binaries (`pgserver`) and the driver (`psycopg2-binary`), nothing else is needed. The
server listens on 127.0.0.1 only, on a free port, with its data in a fresh temporary folder that
`stop` removes. PostgreSQL refuses to run as root, so as root the server runs as the unprivileged
system user `pgserver` (the user the `pgserver` package itself uses), created if missing.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

# pgserver ships the binaries in pgserver/pginstall/bin (its POSTGRES_BIN_PATH); found without importing
# the package, whose import asks platformdirs for a runtime folder and warns where XDG_RUNTIME_DIR is unset.
POSTGRES_BIN_PATH = (
    Path(importlib.util.find_spec("pgserver").submodule_search_locations[0]) / "pginstall" / "bin"
)
SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
# The C locale always exists, whatever LANG says and whichever locales are installed; --no-sync: a
# throwaway cluster need not wait for the disk.
INITDB_OPTIONS = ["--encoding=utf8", "--no-locale", "--no-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def system_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root (created if missing); else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    # useradd exits 9 when another process created the user in the meantime.
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 9):
        raise RuntimeError(f"useradd {SYSTEM_USER} failed ({done.returncode}): {done.stderr.strip()}")
    return pwd.getpwnam(SYSTEM_USER)


def check_traversable(path: Path) -> None:
    """The server user must reach the data folder: every folder above it needs the x bit for others."""
    for parent in path.parents:
        if not parent.stat().st_mode & 0o001:
            raise RuntimeError(
                f"{parent} is not traversable by user {SYSTEM_USER}; set TMPDIR to a folder that is"
            )


def server_log(root: Path) -> Path:
    return root / "server.log"


class PostgresServer:
    """A running server: `create_database` hands out SQLAlchemy URLs, `stop` ends it and removes its data."""

    def __init__(self, root: Path, port: int, process: subprocess.Popen) -> None:
        self.root = root
        self.port = port
        self.process = process
        self.host = "127.0.0.1"

    @classmethod
    def start(cls, timeout: float = 60) -> PostgresServer:
        user = system_user()
        if user is not None:
            check_traversable(Path(tempfile.gettempdir()) / "postgres")
        root = Path(tempfile.mkdtemp(prefix="postgres-"))
        as_user: dict = {"cwd": root}
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
            as_user |= {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        data, sockets = root / "data", root / "sockets"
        try:
            subprocess.run(
                [POSTGRES_BIN_PATH / "initdb", "-D", data, "--auth=trust", "-U", SUPERUSER, *INITDB_OPTIONS],
                check=True,
                capture_output=True,
                text=True,
                **as_user,
            )
        except subprocess.CalledProcessError as error:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(
                f"initdb failed ({error.returncode}):\n{error.stdout}{error.stderr}"
            ) from error
        sockets.mkdir()
        if user is not None:
            os.chown(sockets, user.pw_uid, user.pw_gid)
        port = free_port()
        # Durability is of no use to a test server that is thrown away; without it, commits are faster.
        no_durability = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        command = [POSTGRES_BIN_PATH / "postgres", "-D", data, "-k", sockets, *no_durability]
        command += ["-h", "127.0.0.1", "-p", str(port)]
        with server_log(root).open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **as_user)
        server = cls(root, port, process)
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(server_log(self.root).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode} before accepting connections; "
                    f"server log:\n{self.log_tail()}"
                )
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres on 127.0.0.1:{self.port} did not accept connections within {timeout} s "
                        f"({str(error).strip()}); server log:\n{self.log_tail()}"
                    ) from error
            time.sleep(0.05)

    def connect(self, database: str = "postgres"):
        """A psycopg2 connection to `database` over TCP on the loopback address."""
        return psycopg2.connect(
            host=self.host, port=self.port, user=SUPERUSER, dbname=database, connect_timeout=5
        )

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database`, as MLflow and Optuna take it."""
        return f"postgresql+psycopg2://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create the empty database `name` and return its SQLAlchemy URL."""
        connection = self.connect()
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            connection.close()
        return self.url(name)

    def stop(self, timeout: float = 10) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), then remove the data folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
