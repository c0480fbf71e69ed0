from __future__ import annotations

import os
from pathlib import Path


def relative_uri(path: str | None, root: str | Path | None = None) -> str:
    """A forward-slash path relative to `root` (default: the working directory) when the file lies under
    it (what code-scanning UIs need to show an alert on a repository file), else an absolute file URI."""
    if not path:
        return "report.json"
    p = Path(path).absolute()
    base = Path(root or os.getcwd()).absolute()
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return p.as_uri()
