"""How long-running library calls report progress without printing.

The library takes a `Progress` and calls it; the command line passes one that draws rich progress
bars, tests and library users get `NULL_PROGRESS`. Library code never writes to stdout itself.
"""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1, **fields: object) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> Task: ...

    def note(self, message: str) -> None:
        """A one-line status message (what is being done, where an artifact went)."""


class _NullTask:
    def advance(self, n: int = 1, **fields: object) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def task(self, description: str, total: int | None = None) -> Task:
        return _NullTask()

    def note(self, message: str) -> None:
        pass


NULL_PROGRESS: Progress = NullProgress()
