"""The code domain: one codebase (the standard library's asyncio package) in method- or block-sized chunks,
copied verbatim."""

from __future__ import annotations

import ast
import functools
import itertools

from flexaudit.data.builtin.registry import BuiltinRecord, DomainSpec, register, seeded_order
from flexaudit.data.builtin.stdlib import (
    CODE_MAX,
    CODE_MIN,
    MIN_KEEP,
    child_stmts,
    dedupe,
    pack_ranges,
    parsed_modules,
    require,
    stdlib_split,
    stmt_start,
)


# An owner's code is one codebase: its own names, idioms and comments, which an expert learns in a few
# hundred steps. A sample of about a hundred unrelated modules is not; on it the demo's code expert stayed
# at 1.3-1.6x better than the anchor where one package gave 2-3.4x (measured: README, Limits). asyncio is
# the largest package on the code side of the split (about 1,150 chunks on 3.11).
CODEBASE = "asyncio"


# Parsing is most of the cost (about a second for public, a fraction of that for code, on one idle core),
# so each stdlib domain is built at most once per process and only when asked for.
@functools.lru_cache(maxsize=1)
def _code_corpus() -> tuple[BuiltinRecord, ...]:
    modules = [(rel, source) for rel, source in stdlib_split()[1] if rel.split("/")[0] == CODEBASE]
    return tuple(dedupe(r for rel, source, tree in parsed_modules(modules) for r in _code_records(rel, source, tree)))


def _source_lines(source: str) -> list[str]:
    # str.splitlines would also break at form feeds and other separators ast does not count as lines.
    lines = [line + "\n" for line in source.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _cut_before(node: ast.stmt, floor: int, lines: list[str]) -> int:
    """Where a chunk holding `node` starts: comment lines just above it go with it, blank lines stay
    with the previous chunk."""
    start = stmt_start(node)
    while start - 1 >= floor and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return start


def _span_size(lines: list[str], a: int, b: int) -> int:
    return sum(len(line) for line in lines[a:b])


def _cover(stmts: list[ast.stmt], first: int, last: int, lines: list[str]) -> list[tuple[int, int]]:
    """Line spans that tile [first, last), cut before each statement; an oversized statement is cut
    again inside its body (a class into its methods), or at line ends when it has no body to cut."""
    cuts = [first]
    for prev, node in zip(stmts, stmts[1:]):
        cut = _cut_before(node, prev.end_lineno, lines)
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(last)
    spans: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(cuts):
        if _span_size(lines, a, b) <= CODE_MAX:
            spans.append((a, b))
            continue
        inside = [n for n in stmts if a <= stmt_start(n) < b]
        children = child_stmts(inside[0]) if len(inside) == 1 else []
        if len(children) >= 2:
            spans.extend(_cover(children, a, b, lines))
        else:
            spans.extend(_line_spans(lines, a, b))
    return spans


def _line_spans(lines: list[str], a: int, b: int) -> list[tuple[int, int]]:
    spans, start, size = [], a, 0
    for i in range(a, b):
        if i > start and size + len(lines[i]) > CODE_MAX:
            spans.append((start, i))
            start, size = i, 0
        size += len(lines[i])
    spans.append((start, b))
    return spans


def _code_records(rel: str, source: str, tree: ast.Module) -> list[BuiltinRecord]:
    lines = _source_lines(source)
    if not lines:
        return []
    spans = _cover(tree.body, 0, len(lines), lines) if tree.body else [(0, len(lines))]
    groups = pack_ranges([_span_size(lines, a, b) for a, b in spans], CODE_MIN, CODE_MAX, sep=0)
    records = []
    for i, j in groups:
        a, b = spans[i][0], spans[j - 1][1]
        text = "".join(lines[a:b])
        if len(text.strip()) >= MIN_KEEP:
            records.append(BuiltinRecord(id=f"code/{rel}:{a + 1}-{b}", text=text))
    return records


def _build_code(n_documents: int | None, seed: int) -> list[BuiltinRecord]:
    return seeded_order(require(_code_corpus(), "code", f"sources of the {CODEBASE} package"), n_documents, seed)


register(DomainSpec("code", f"Python source code of one codebase (the standard library's {CODEBASE} package)",
                    False, _build_code))
