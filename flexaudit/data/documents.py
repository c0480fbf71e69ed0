"""Loading documents from a folder of .txt files, .jsonl, .csv or .parquet.

A document is one privacy unit's text (or one record of a data subject). Loaders never log or echo
document text: errors name the file, the line or row, and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from flexaudit.digest import text_sha256
from flexaudit.errors import InputError

SUPPORTED = ".txt folder, .txt, .jsonl, .csv or .parquet"


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    subject: str | None = None  # the data subject this record is about, when the data has one

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)


def read_documents(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    id_field: str = "id",
    subject_field: str | None = None,
) -> list[Document]:
    """Read every document under `path` (files only; flexaudit.data.load_documents also takes a built-in
    domain). Raises InputError with one actionable line on bad input."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data not found: {path} (give a {SUPPORTED})")
    if path.is_dir():
        docs = _load_txt_folder(path)
    else:
        suffix = path.suffix.lower()
        if suffix == ".txt":
            docs = [_txt_document(path, path.stem)]
        elif suffix == ".jsonl":
            docs = _load_jsonl(path, text_field, id_field, subject_field)
        elif suffix in (".csv", ".parquet"):
            docs = _load_table(path, text_field, id_field, subject_field)
        else:
            raise InputError(f"unsupported data file {path.name}: give a {SUPPORTED}")
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise InputError(f"no non-empty documents in {path}: add text before training or evaluating")
    seen: set[str] = set()
    for d in docs:
        if d.id in seen:
            raise InputError(f"duplicate document id {d.id!r} in {path}: ids must be unique")
        seen.add(d.id)
    return docs


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where} is not valid UTF-8 (byte {exc.start}): re-encode the file as UTF-8"
        ) from None


def _txt_document(path: Path, doc_id: str) -> Document:
    return Document(id=doc_id, text=_decode(path.read_bytes(), str(path)))


def _load_txt_folder(root: Path) -> list[Document]:
    files = sorted(p for p in root.rglob("*.txt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"no .txt files in folder {root}: a data folder holds one document per .txt file")
    return [_txt_document(p, p.relative_to(root).as_posix()) for p in files]


def _field(value, name: str, where: str, required: bool) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # missing or NaN cell
        if required:
            raise InputError(f"{where}: missing field {name!r}: every record needs it")
        return None
    if name != "text" and isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _record(row: dict, where: str, text_field: str, id_field: str, subject_field: str | None, default_id: str) -> Document:
    text = _field(row.get(text_field), text_field, where, required=True)
    doc_id = _field(row.get(id_field), id_field, where, required=False) or default_id
    subject = _field(row.get(subject_field), subject_field, where, required=True) if subject_field else None
    return Document(id=doc_id, text=text, subject=subject)


def _load_jsonl(path: Path, text_field: str, id_field: str, subject_field: str | None) -> list[Document]:
    text = _decode(path.read_bytes(), str(path))
    docs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg}): each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: each line must be a JSON object with a {text_field!r} field")
        docs.append(_record(row, where, text_field, id_field, subject_field, f"{path.stem}:{lineno}"))
    return docs


def _load_table(path: Path, text_field: str, id_field: str, subject_field: str | None) -> list[Document]:
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            _decode(path.read_bytes(), str(path))  # pandas' own error for bad bytes is not actionable
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        else:
            frame = pd.read_parquet(path)
    except InputError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for malformed files
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
    for needed in [text_field] + ([subject_field] if subject_field else []):
        if needed not in frame.columns:
            raise InputError(f"{path}: missing column {needed!r} (columns: {', '.join(map(str, frame.columns))})")
    docs = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        where = f"{path} row {i + 1}"
        docs.append(_record(row, where, text_field, id_field, subject_field, f"{path.stem}:{i + 1}"))
    return docs
