"""Crash-safe file output: nothing already stored is ever left half-written.

Files are written to a temporary sibling and renamed into place (rename is atomic on POSIX).
Directories are built under a temporary sibling name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> None:
    """Write via a temporary sibling and rename. `mode` defaults to the usual 0666 minus the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_can_create(path: str | os.PathLike) -> None:
    """Raise the OSError that making the folder `path` (and its missing parents) would meet where the path holds a
    file or a folder this process may not write, without making anything: for a command to fail at once on an
    output it could only write after hours of work. A full disk shows only when written to."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(probe))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(probe))


def rust_os_error(exc: BaseException) -> int | None:
    """The OS error number in the message of a library written in Rust (tokenizers, safetensors), which raise their
    own types with Rust's "(os error N)" in the text (safetensors adds ' at path "..."' after it), else None."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    return int(found.group(1)) if found else None


def save_tensors(tensors: dict, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file (into a staging directory: it writes in place), with its I/O failures (a full disk, a
    read-only mount) raised as the OSError they are, so that they reach the user as one line about the file system
    rather than as the library's own error type."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as exc:
        code = rust_os_error(exc)  # nothing else in the error carries the number
        if code is None:
            raise
        raise OSError(code, os.strerror(code) if code in errno.errorcode else str(exc), os.fspath(path)) from exc


def canonical_json(obj: Any) -> str:
    """Stable JSON: sorted keys, two-space indent, trailing newline, UTF-8 kept readable."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, canonical_json(obj))


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes `final` only if the block completes.

    With replace=False an existing `final` is an error the caller should have reported; with
    replace=True the old directory is swapped out only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise FileExistsError(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; the artifact gets normal permissions
    try:
        yield staging
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, trash / "old")
            os.replace(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
