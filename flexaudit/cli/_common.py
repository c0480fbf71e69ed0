"""Shared command-line plumbing: the consoles, the rich progress reporter and error mapping."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import time
import traceback
from enum import Enum
from typing import Annotated, Any, Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from flexaudit.errors import FlexauditError
from flexaudit.fsutil import rust_os_error

# Under torchrun every process runs the command; rank 0 alone talks to the user (results, progress bars), the
# others only report an error of their own (guarded).
def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


RANK = _rank()
# emoji off: digests such as "hmac-sha256:abc:" must never turn into pictures
out = Console(highlight=False, soft_wrap=True, emoji=False, quiet=RANK != 0)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
# The commands that run as one job over the processes torchrun starts (DESIGN.md: training and audits).
DISTRIBUTED_COMMANDS = (("anchor", "train"), ("expert", "train"), ("audit",))

T = TypeVar("T")


class DtypeChoice(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


# Every command that runs a model takes these two (DESIGN.md, command-line contract).
DeviceOption = Annotated[str, typer.Option(
    "--device", help="Where the model runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N.")]
DtypeOption = Annotated[DtypeChoice, typer.Option(
    "--dtype", help="Precision the model runs in (weights are read straight into it; training keeps float32 "
                    "master weights). float16 needs a GPU.")]


FsdpOption = Annotated[bool, typer.Option(
    "--fsdp", help="Under torchrun: shard the frozen anchor and the expert over the processes with FSDP2 instead of "
                   "replicating them (DDP); for models that do not fit one device. Not with --dp.")]


def placement_of(device: str, dtype: DtypeChoice):
    """The library's Placement for --device and --dtype (InputError, one line, when unusable). Under torchrun each
    process takes the GPU of its LOCAL_RANK (flexaudit.moe.distributed.local_device)."""
    from flexaudit.moe.device import Placement
    from flexaudit.moe.distributed import local_device

    return Placement.of(local_device(device), dtype.value)


@contextlib.contextmanager
def processes(placement) -> Iterator[Any]:
    """The torchrun job's process group around a command's library call (nothing without torchrun)."""
    from flexaudit.moe.distributed import session

    with session(placement.device) as world:
        yield world


def refuse_other_commands_under_torchrun(argv: list[str]) -> None:
    """Under torchrun with several processes only training and audits run (as one job); any other command would
    run once per process, each writing the same files: refused with one line (exit 2) before anything runs."""
    from flexaudit.moe.distributed import launched_processes

    if launched_processes() <= 1:
        return
    words = [a for a in argv if not a.startswith("-")][:2]
    if any(tuple(words[: len(c)]) == c for c in DISTRIBUTED_COMMANDS) or not words:
        return
    groups = {c[0] for c in DISTRIBUTED_COMMANDS if len(c) > 1}
    command = " ".join(words if words[0] in groups else words[:1])
    if RANK == 0:
        err.print(f"error: `flexaudit {command}` does not run under torchrun: only "
                  f"{', '.join('`' + ' '.join(c) + '`' for c in DISTRIBUTED_COMMANDS)} do; run it without torchrun",
                  markup=False)
    raise SystemExit(2)


class _Task:
    """One task of a command: a live bar while it runs (on a terminal), and one plain line when it ends."""

    def __init__(self, reporter: "RichProgress", description: str, total: int | None, bar: int | None):
        self._reporter, self._bar, self.description, self.total = reporter, bar, description, total
        self.completed, self.status, self.began = 0, "", time.perf_counter()

    def advance(self, n: int = 1, **fields: object) -> None:
        self.completed += n
        if fields:
            self.status = _status(fields)
        if self._bar is not None:
            self._reporter._progress.update(self._bar, advance=n, status=self.status)

    def close(self) -> None:
        self._reporter._ended(self)

    def line(self, *, stopped: bool = False) -> str:
        done = f"{self.completed:,}" + (f"/{self.total:,}" if self.total is not None else "")
        how = "stopped at " if stopped else ""
        status = f"  {self.status}" if self.status else ""
        return f"{self.description}: {how}{done} in {time.perf_counter() - self.began:.1f} s{status}"


def _status(fields: dict) -> str:
    return "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


class RichProgress:
    """Progress on stderr, so stdout stays clean for tables and --json. Each task says one plain line when it ends
    (its count, seconds and last figures), on a terminal and in a log alike; on a terminal a live bar shows it
    while it runs and goes when it ends, so that a long command does not leave a wall of finished bars (the demo
    runs about 70 tasks), and a log (CI, stderr to a file), which cannot redraw a bar, gets the lines alone.
    `live` overrides the terminal check."""

    def __init__(self, *, live: bool | None = None, console: Console = err) -> None:
        self._live = console.is_terminal if live is None else live
        self._open: list[_Task] = []
        self._lock = threading.Lock()  # worker jobs report from the relay thread (flexaudit.jobs)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=True,
            disable=RANK != 0 or not self._live,  # rank 0 shows the whole job's progress
        )

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._progress.stop()
        with self._lock:
            left, self._open = self._open, []
        for task in left:  # after an error or Ctrl-C: how far each task got
            self.note(task.line(stopped=exc_type is not None))

    def task(self, description: str, total: int | None = None) -> _Task:
        bar = self._progress.add_task(description, total=total, status="") if self._live else None
        task = _Task(self, description, total, bar)
        with self._lock:
            self._open.append(task)
        return task

    def _ended(self, task: _Task) -> None:
        with self._lock:
            if task not in self._open:  # closed twice
                return
            self._open.remove(task)
        if task._bar is not None:
            self._progress.remove_task(task._bar)
        self.note(task.line())

    def note(self, message: str) -> None:
        if RANK == 0:
            self._progress.console.print(message, markup=False)


def _user_error(exc: BaseException) -> bool:
    """flexaudit's own errors, and the attack library's (which imports nothing of flexaudit, so has its own
    classes with the same one-line message and exit code); attacks is looked up only if it was imported."""
    attack_errors = sys.modules.get("attacks.errors")
    return isinstance(exc, FlexauditError) or (attack_errors is not None and isinstance(exc, attack_errors.AttackError))


# What the file system says about a path the user chose (an --out under a file, a full disk, a read-only
# mount): bad input the user can act on, not a bug. Missing files are not here: each input is checked, with a
# message of its own, before it is read, so a missing one met later is a bug.
_FILE_SYSTEM_HINTS = {
    errno.ENOTDIR: "part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder where a file is expected: give a file",
    errno.EEXIST: "a file is in the way of a folder to be made: choose another path",
    errno.EACCES: "choose a path you may write to, or change its permissions",
    errno.EPERM: "choose a path you may write to, or change its permissions",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOSPC: "free some space or choose another path, then rerun",
    errno.EDQUOT: "free some space or choose another path, then rerun",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def file_system_error(exc: BaseException, *, path: str | os.PathLike | None = None) -> str | None:
    """The one line for a file-system failure of the user's (see _FILE_SYSTEM_HINTS), else None: an OSError, or
    the error of a library written in Rust (tokenizers, safetensors) whose message holds Rust's "(os error N)"
    (fsutil.rust_os_error). It names `path` if given, else the error's: of a rename (an atomic write's last step),
    the destination."""
    if isinstance(exc, OSError):
        code, reason = exc.errno, exc.strerror
        filename = exc.filename2 if exc.filename2 is not None else exc.filename
    else:
        code, reason, filename = rust_os_error(exc), None, None
    if code not in _FILE_SYSTEM_HINTS:
        return None
    filename = path if path is not None else filename
    where = f"{os.fsdecode(filename)}: " if filename is not None else ""
    return f"{where}{reason or os.strerror(code)} ({_FILE_SYSTEM_HINTS[code]})"


def guarded(fn: Callable[[], T]) -> T:
    """Run a library call; turn a FlexauditError (or an attack's error) into its one line on stderr and its
    exit code."""
    try:
        return fn()
    except KeyboardInterrupt:
        err.print("interrupted: nothing already stored was changed; resume where the command supports --resume")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        where = f" (rank {RANK})" if RANK else ""
        if _user_error(exc):
            # under torchrun: rank 0 says it; another rank only what happened to it alone
            if RANK == 0:
                err.print(f"error: {exc.message}", markup=False)
            elif getattr(exc, "raised_in_job", False) and not getattr(exc, "raised_on_rank0", False):
                err.print(f"error (rank {RANK}): {exc.message}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        if os.environ.get("FLEXAUDIT_DEBUG"):
            traceback.print_exc()
        found = file_system_error(exc)
        if found is not None:
            err.print(f"error{where}: {found}", markup=False)
            raise typer.Exit(2) from None
        # a bug, not bad input: still one line (from every rank that met it), fail closed
        first = str(exc).splitlines()[0] if str(exc) else ""
        err.print(
            f"internal error{where}: {type(exc).__name__}: {first} (a bug; rerun with FLEXAUDIT_DEBUG=1 for the traceback)",
            markup=False,
        )
        raise typer.Exit(2) from None


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
