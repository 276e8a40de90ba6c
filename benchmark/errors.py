"""The one exception type users see.

Every mistake a user can make (a bad YAML field, a missing corpus folder, an unreadable audio
file) raises `BenchmarkError` with a one-line message and, where there is one, a hint on how to
fix it. The CLI prints these two lines instead of a traceback; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class BenchmarkError(Exception):
    """A user-facing error: `message` says what is wrong, `hint` how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"
