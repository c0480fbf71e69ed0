"""The standard library as a corpus: its sources, split between the public and code domains by a fixed
hash of the top-level module name, and the helpers both domains cut and pack text with. Nothing is imported:
sources are read from disk and parsed with `ast`."""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import re
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from flexaudit.data.builtin.registry import BuiltinRecord
from flexaudit.errors import InputError

PUBLIC_MIN, PUBLIC_MAX = 300, 1500  # characters per public document
CODE_MIN, CODE_MAX = 250, 500  # characters per code chunk: a method or a block, about 120 tokens
_SLACK = 1.25  # a short leftover may be folded into a neighbour up to this factor over the maximum
MIN_KEEP = 120  # fragments shorter than this (a two-line __main__.py) carry nothing worth training on
_SHARED_LINE = 40  # lines at least this long that both domains hold count as overlap

# Machine-specific (_sysconfigdata), generated data (pydoc_data is the public domain's other source,
# encodings are code-page tables) or jokes; never part of either domain.
_SKIP_TOP = {"site-packages", "lib-dynload", "__pycache__", "pydoc_data", "encodings", "ensurepip",
             "__phello__", "this", "antigravity"}
_SKIP_DIR = {"test", "tests", "idle_test", "__pycache__"}


def _stdlib_root() -> Path:
    return Path(sysconfig.get_path("stdlib"))


def _is_code_module(top: str) -> bool:
    """Which domain a top-level module or package feeds: a third to code, the rest to public prose.

    A hash of the name, not a list, so the rule holds for any Python version's standard library.
    """
    return int(hashlib.sha256(top.encode("utf-8")).hexdigest(), 16) % 3 == 0


def _skip_dir(parts: tuple[str, ...]) -> bool:
    """`parts`: a folder's path relative to the stdlib root."""
    return parts[0] in _SKIP_TOP or parts[0].startswith("config-") or bool(_SKIP_DIR.intersection(parts))


def _skip_file(parts: tuple[str, ...]) -> bool:
    name = parts[-1]
    top_level = len(parts) == 1 and (name.removesuffix(".py") in _SKIP_TOP or name.startswith("_sysconfigdata"))
    return top_level or name.startswith("test_") or not name.endswith(".py")


def _stdlib_sources() -> list[tuple[str, str]]:
    """(path relative to the stdlib root, source) for every usable module, in sorted path order."""
    root = _stdlib_root()
    found = []
    for folder, subdirs, files in os.walk(root):
        # Pruned while walking: the test suite alone is most of the files in the standard library.
        here = Path(folder).relative_to(root).parts
        subdirs[:] = [d for d in subdirs if not _skip_dir(here + (d,))]
        found.extend(here + (f,) for f in files if not _skip_file(here + (f,)))
    sources = []
    for parts in sorted(found):
        try:
            sources.append(("/".join(parts), root.joinpath(*parts).read_bytes().decode("utf-8").replace("\r\n", "\n")))
        except (OSError, UnicodeDecodeError):
            continue
    return sources


def module_name(rel: str) -> str:
    name = rel.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


@functools.lru_cache(maxsize=1)
def stdlib_split() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """((rel, source) of the public modules, (rel, source) of the code modules)."""
    public, code = [], []
    for rel, source in _stdlib_sources():
        (code if _is_code_module(rel.split("/")[0].removesuffix(".py")) else public).append((rel, source))
    return tuple(public), tuple(code)


def parsed_modules(modules: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str, ast.Module]]:
    for rel, source in modules:
        try:
            yield rel, source, ast.parse(source)
        except (SyntaxError, ValueError):  # a file written for another Python version
            continue


def dedupe(records: Iterable[BuiltinRecord]) -> list[BuiltinRecord]:
    # Identical texts (two empty-ish __init__ files, a docstring copied verbatim) would put one text
    # on both sides of a member/holdout split under two ids.
    seen: set[str] = set()
    kept = []
    for r in records:
        if r.text not in seen:
            seen.add(r.text)
            kept.append(r)
    return kept


def long_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        line = line.strip()
        if len(line) >= _SHARED_LINE:
            yield line


def shares_line(text: str, code_lines: set[str]) -> bool:
    return any(line in code_lines for line in long_lines(text))


def pack_ranges(sizes: Sequence[int], low: int, high: int, sep: int) -> list[tuple[int, int]]:
    """Group consecutive pieces into [i, j) ranges of at most `high` characters (joined with `sep`
    characters between pieces), then fold groups shorter than `low` into a neighbour when the pair
    stays within the slack. A single piece above `high` is a group of its own."""
    groups: list[list[int]] = []  # [start, end, size]
    for i, size in enumerate(sizes):
        if groups and groups[-1][2] + sep + size <= high:
            groups[-1][1] = i + 1
            groups[-1][2] += sep + size
        else:
            groups.append([i, i + 1, size])
    merged: list[list[int]] = []
    for g in groups:
        if merged and min(merged[-1][2], g[2]) < low and merged[-1][2] + sep + g[2] <= high * _SLACK:
            merged[-1][1] = g[1]
            merged[-1][2] += sep + g[2]
        else:
            merged.append(g)
    return [(start, end) for start, end, _ in merged]


def _split_lines(text: str, high: int) -> list[str]:
    """Cut an oversized paragraph at line ends into pieces of at most `high` characters."""
    pieces, current = [], ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > high:
            pieces.append(current.rstrip("\n"))
            current = ""
        current += line
    if current.strip():
        pieces.append(current.rstrip("\n"))
    return pieces


def paragraphs(text: str, high: int) -> list[str]:
    pieces = []
    for para in re.split(r"\n[ \t]*\n", text):
        para = para.strip("\n").rstrip()
        if para.strip():
            pieces.extend(_split_lines(para, high) if len(para) > high else [para])
    return pieces


def packed_texts(pieces: Sequence[str], low: int, high: int) -> list[str]:
    groups = pack_ranges([len(p) for p in pieces], low, high, sep=2)
    texts = ["\n\n".join(pieces[a:b]) for a, b in groups]
    return [t for t in texts if len(t) >= MIN_KEEP]


def require(records: Sequence[BuiltinRecord], what: str,
            source: str = "standard-library sources") -> Sequence[BuiltinRecord]:
    if not records:
        raise InputError(
            f"the {what} domain is empty: this Python has no {source} at {_stdlib_root()};"
            " install the full standard library or train on your own data"
        )
    return records


def stmt_start(node: ast.stmt) -> int:
    """0-based first line of a statement, decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1


def child_stmts(node: ast.stmt) -> list[ast.stmt]:
    kids = [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)]
    for holder in getattr(node, "handlers", []) + getattr(node, "cases", []):
        kids.extend(holder.body)
    return sorted(kids, key=stmt_start)
