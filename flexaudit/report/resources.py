"""Package data (templates, schemas, the default policy) located with importlib.resources, so an installed
wheel finds it as well as an editable checkout (whether `reports` is a regular or a namespace package)."""

from __future__ import annotations

import importlib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "reports"


def _root() -> Traversable:
    try:
        return files(PACKAGE)
    except (NotADirectoryError, TypeError):
        # an editable install made while `reports` had no __init__.py maps it as a namespace package whose
        # path holds a placeholder entry that importlib.resources rejects: use its real directory
        for entry in getattr(importlib.import_module(PACKAGE), "__path__", []):
            if Path(entry).is_dir():
                return Path(entry)
        raise


def resource(*parts: str) -> Traversable:
    node = _root()
    for part in parts:
        node = node / part
    return node


def templates() -> Traversable:
    return resource("templates")


def schema(*parts: str) -> Traversable:
    return resource("schema", *parts)
