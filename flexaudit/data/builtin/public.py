"""The public domain: prose from the standard library's documentation (pydoc topics and the prose
docstrings of the public half of the standard library). It is the anchor's pretraining data."""

from __future__ import annotations

import ast
import functools
import re
from typing import Iterator

from flexaudit.data.builtin.registry import BuiltinRecord, DomainSpec, register, seeded_order
from flexaudit.data.builtin.stdlib import (
    PUBLIC_MAX,
    PUBLIC_MIN,
    child_stmts,
    dedupe,
    long_lines,
    module_name,
    packed_texts,
    paragraphs,
    parsed_modules,
    require,
    shares_line,
    stdlib_split,
)


@functools.lru_cache(maxsize=1)
def _public_corpus() -> tuple[BuiltinRecord, ...]:
    # The code modules' lines, read from the raw sources: the code chunks tile those files, so this
    # is the same set without parsing them.
    code_lines = {line for _, source in stdlib_split()[1] for line in long_lines(source)}
    return tuple(dedupe(_topic_records(code_lines) + [
        r for rel, _, tree in parsed_modules(stdlib_split()[0])
        for r in _docstring_records(module_name(rel), tree, code_lines)
    ]))


def _topic_records(code_lines: set[str]) -> list[BuiltinRecord]:
    try:
        from pydoc_data.topics import topics  # plain data shipped with CPython, safe to import
    except ImportError:  # some distributions package the docs separately
        return []
    records = []
    for topic in sorted(topics):
        pieces = [p for p in paragraphs(topics[topic], PUBLIC_MAX) if not shares_line(p, code_lines)]
        for k, text in enumerate(packed_texts(pieces, PUBLIC_MIN, PUBLIC_MAX)):
            records.append(BuiltinRecord(id=f"public/topic/{topic}/{k}", text=text))
    return records


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

_BLOCKS = (ast.If, ast.Try, ast.With)  # module- or class-level blocks that may hold definitions


def _docstrings(node: ast.AST, qualname: str) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) in source order for a module, its classes and functions
    and their methods. Function bodies are not searched: helpers nested there are rarely documented
    and walking every statement would double the parse cost."""
    doc = ast.get_docstring(node, clean=True) if isinstance(node, _DOC_NODES) else None
    if doc:
        yield qualname, doc
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return
    for child in child_stmts(node) if isinstance(node, _BLOCKS) else node.body:
        if isinstance(child, _DOC_NODES):
            yield from _docstrings(child, f"{qualname}.{child.name}")
        elif isinstance(child, _BLOCKS):  # `if sys.platform == ...:` and `try: import` guards
            yield from _docstrings(child, qualname)


def _is_prose(doc: str) -> bool:
    """A docstring worth reading as documentation: several words, mostly letters, few doctest lines."""
    if len(doc) < 60 or len(re.findall(r"[A-Za-z]{2,}", doc)) < 8:
        return False
    lines = [line.lstrip() for line in doc.splitlines() if line.strip()]
    examples = sum(line.startswith((">>>", "...", "$ ")) for line in lines)
    letters = len(re.findall(r"[^\W\d_]", doc))
    visible = len(re.findall(r"\S", doc))
    return examples <= 0.3 * len(lines) and letters >= 0.6 * visible


def _docstring_records(module: str, tree: ast.Module, code_lines: set[str]) -> list[BuiltinRecord]:
    pieces: list[str] = []
    seen: set[str] = set()  # overriding methods often repeat their base class's docstring
    for qualname, doc in _docstrings(tree, module):
        if doc in seen or not _is_prose(doc) or shares_line(doc, code_lines):
            continue
        seen.add(doc)
        if len(qualname) + 1 + len(doc) <= PUBLIC_MAX:  # keep a docstring whole whenever it fits
            pieces.append(f"{qualname}\n{doc}")
            continue
        paras = paragraphs(doc, PUBLIC_MAX - len(qualname) - 1)
        pieces.append(f"{qualname}\n{paras[0]}")
        pieces.extend(paras[1:])
    return [BuiltinRecord(id=f"public/docstring/{module}/{k}", text=text)
            for k, text in enumerate(packed_texts(pieces, PUBLIC_MIN, PUBLIC_MAX))]


def _build_public(n_documents: int | None, seed: int) -> list[BuiltinRecord]:
    return seeded_order(require(_public_corpus(), "public"), n_documents, seed)


register(DomainSpec("public", "Python documentation prose: pydoc topics and standard-library docstrings",
                    False, _build_public))
