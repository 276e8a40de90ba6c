"""SIGINT and SIGTERM as an exception that unwinds the command, never raised inside a tracking write.

SIGINT and SIGTERM raise `Stopped`, a `KeyboardInterrupt` carrying the signal, so every
`run_context` on the way out ends its run KILLED and the CLI exits with 128 + the signal number.
A signal during a tracking or checkpoint write (`signals_held`) is held until the write is done:
inside SQLAlchemy it would leave the SQLite database locked, inside `torch.save` it would turn the
stop into a crash and lose that epoch's checkpoint. Once a stop is under way, further signals are
noted, not raised, so a second Ctrl-C cannot cut the clean-up short.
Kept free of heavy imports and of the package's other modules: the CLI installs the handlers before
any command is imported, and every layer (the training loop included) may hold a stop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Runs that a stop ended KILLED (appended by `run_context`), for the CLI's closing line.
killed_runs: list[str] = []


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the process: unwind, end the open runs KILLED, exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# Signal state of the main thread (Python runs signal handlers there only).
_held = 0  # depth of nested tracking writes in progress
_pending: int | None = None  # a signal that arrived during a write
_stopping = False  # a Stopped has been raised; later signals are only noted


def _on_signal(signum: int, frame: object) -> None:
    global _pending
    if _stopping:
        return
    if _held:
        _pending = _pending or signum  # the first signal is the one that stops the command
        return
    _raise(signum)


def _raise(signum: int) -> None:
    global _stopping
    _stopping = True
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Stopped` while the block runs (the CLI wraps every command).

    Outside the main thread, where Python does not allow signal handlers, it does nothing.
    """
    global _pending, _stopping
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending, _stopping = None, False
    killed_runs.clear()
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then raise the one that came (if any)."""
    global _held, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending is not None and not _stopping:
            signum, _pending = _pending, None
            _raise(signum)
