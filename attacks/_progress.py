"""The progress-callback shape the library accepts (same protocol as `flexaudit.progress`).

Any object with `task(description, total) -> handle` where the handle has `advance(n, **fields)` and
`close()` works; the command line passes a rich-backed one, everything else gets the no-op below.
The library itself never prints.
"""

from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    def advance(self, n: int = 1, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> Task: ...


class _NullTask:
    def advance(self, n: int = 1, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _NullProgress:
    def task(self, description: str, total: int | None = None) -> Task:
        return _NullTask()


NULL_PROGRESS: Progress = _NullProgress()


def progress_or_null(progress: Progress | None) -> Progress:
    return NULL_PROGRESS if progress is None else progress
