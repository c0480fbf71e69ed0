"""One entry point for every source of documents: a built-in domain (`builtin:NAME`) or files."""

from __future__ import annotations

import os

from flexaudit.data.builtin import build_domain
from flexaudit.data.documents import Document, read_documents

BUILTIN_PREFIX = "builtin:"


def load_documents(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    id_field: str = "id",
    subject_field: str | None = None,
) -> list[Document]:
    """Every document of `path`: `builtin:NAME` (a built-in domain, whose records carry their subject), a
    folder of .txt files, or a .txt, .jsonl, .csv or .parquet file (flexaudit.data.documents).

    Raises:
        InputError: one actionable line on bad input (missing file, bad encoding, unknown domain...).
    """
    if str(path).startswith(BUILTIN_PREFIX):
        return [r.document() for r in build_domain(str(path).removeprefix(BUILTIN_PREFIX))]
    return read_documents(path, text_field=text_field, id_field=id_field, subject_field=subject_field)
