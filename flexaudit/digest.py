"""Content digests that bind reports, manifests and pools to exact bytes.

The root digest of a directory follows sigstore model-transparency: SHA-256 over the sorted list of
(relative POSIX path, SHA-256 of the file). Hidden files (a leading dot) are never part of an artifact.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def artifact_files(root: str | os.PathLike, *, exclude: Iterable[str] = ()) -> list[str]:
    """Relative POSIX paths of every regular file under root, sorted, skipping hidden entries."""
    root = Path(root)
    skip = set(exclude)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in skip:
                out.append(rel)
    return sorted(out)


def file_digests(root: str | os.PathLike, *, exclude: Iterable[str] = ()) -> dict[str, str]:
    root = Path(root)
    return {rel: file_sha256(root / rel) for rel in artifact_files(root, exclude=exclude)}


def root_digest_of(digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(rel.encode("utf-8"))
        h.update(b"\0")
        h.update(digests[rel].encode("ascii"))
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def root_digest(root: str | os.PathLike, *, exclude: Iterable[str] = ()) -> str:
    return root_digest_of(file_digests(root, exclude=exclude))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
