"""Independent jobs side by side in worker processes: how a small model fills a multi-core CPU.

One model of the demo's size (hidden 96) cannot keep two cores busy: its matrices are too small for a
second thread to help much, and the Python around them (tokenising, reports, figures) runs on one core.
Two such jobs in two processes, one thread each, can. Measured on a 2-core machine (quick demo's anchor):
two experts trained one after the other with two threads took 7.6 s + 10.3 s; side by side with one thread
each, 10.1 s for both.

    with Jobs(workers=2, threads=1, progress=progress) as jobs:
        jobs.submit("expert code", train, "code")
        jobs.submit("dense code", dense_baseline, "code", after=["expert code"])
        jobs.result("dense code")

A job is a module-level function, called as `fn(*args, progress=..., **kwargs)`; in a worker its progress
(notes and bars) is forwarded to the caller's `Progress`. A job starts once the jobs named in `after` have
finished and a worker is free (the caller schedules them while it waits in `submit` or `result`): of the jobs
ready, the first submitted, so submit the longest chains first. (A job is handed to the process pool only when
a worker is free: the pool's own queue would run jobs in the order they became ready, and the demo's longest
chain, the careless owner's expert and then its dense baseline, waited behind three short jobs that became
ready before it while the other worker sat idle at the end.) Workers
are never forked from the caller (a fork copies its OpenMP thread pool in a broken state): they are forked
from a fresh fork server that has imported the modules named in `preload` and run nothing else, so the
workers share one import of torch, transformers and the rest (about 6 s of one core per worker for the
demo's jobs); where the platform has no fork server they are spawned and each imports them. Each runs
`threads` torch threads. The workers start in the background: the caller goes on (the demo trains its
anchor) while the fork server imports; the server stays until the calling process exits (Python keeps one
per process). With `workers <= 1` no process is started: each job runs in the calling process when it is
submitted, so results match a plain sequential program (up to the thread count).

Leaving the `with` block on an error stops the workers at once instead of letting them finish their jobs
(Ctrl-C included: it reaches every process of the terminal's group, the workers and the fork server ignore it
and the caller stops them; measured on the quick demo, exit 130 one second after Ctrl-C, or about 4 s in its
first seconds, when the first worker waits for the fork server's imports; no process left). `result`
re-raises a job's exception (a FlexauditError keeps its one-line message and exit code); a job whose
prerequisite failed raises that failure; a worker that died (killed, out of memory) fails every job not yet
finished, each with a FlexauditError that names it; workers that cannot start raise a FlexauditError too.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Sequence

from flexaudit.errors import FlexauditError
from flexaudit.progress import NULL_PROGRESS, Progress

_WORKER_PROGRESS: Progress = NULL_PROGRESS  # in a worker: forwards to the parent
PRELOAD_ENV = "FLEXAUDIT_JOBS_PRELOAD"  # the fork server's modules to import (flexaudit._forkserver_preload)


class Jobs:
    def __init__(self, workers: int, *, threads: int = 1, progress: Progress = NULL_PROGRESS,
                 preload: Sequence[str] = ()):
        """`preload`: modules the jobs will need, imported before a worker's first job (a module that fails to
        import is left to the job that needs it). A process has one fork server, so the first `Jobs` of a
        process with workers decides what it imports; later ones' workers import the rest themselves."""
        self.workers, self.threads, self.progress = max(1, workers), max(1, threads), progress
        self._held: dict[str, tuple[Callable, tuple, dict, tuple[str, ...]]] = {}
        self._futures: dict[str, Future] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._starting: threading.Thread | None = None
        if self.workers > 1:
            preload = tuple(preload)
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                _start_fork_server(context, preload)
            else:
                context = multiprocessing.get_context("spawn")
            self._events = context.SimpleQueue()
            self._relay = threading.Thread(target=_relay, args=(self._events, progress), daemon=True)
            self._relay.start()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker,
                                             initargs=(self.threads, self._events, preload))
            # The first worker waits for the fork server's imports, and submit() holds the pool's lock while a
            # worker starts: a no-op job submitted from a thread lets the caller work meanwhile.
            self._starting = threading.Thread(target=_start_first_worker, args=(self._pool,), daemon=True)
            self._starting.start()

    def __enter__(self) -> "Jobs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(cancel=exc[0] is not None)

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the jobs started; with `cancel` (an error or Ctrl-C in the caller) start no more and stop the
        workers at once, as a crash would: a job must write only atomically (flexaudit's training, audits and
        reports do), so that nothing stored is left half-written."""
        if self._pool is None:
            return
        self._starting.join()  # so that every worker started is known, and stopped on cancel
        pool, self._pool = self._pool, None
        if not cancel:
            pool.shutdown(wait=True)
            self._events.put(None)
            self._relay.join()
            return
        # no public way to stop the workers before Python 3.14; shutdown() forgets them, so take them first
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        # a worker stopped while sending an event may hold the queue's write lock: leave the relay thread (a
        # daemon) waiting rather than write the sentinel

    def submit(self, name: str, fn: Callable, /, *args: Any, after: Iterable[str] = (), **kwargs: Any) -> None:
        """Run fn(*args, progress=..., **kwargs) as job `name` once every job in `after` has finished."""
        if name in self._held or name in self._futures:
            raise ValueError(f"a job named {name!r} was already submitted")
        after = tuple(after)
        unknown = [a for a in after if a not in self._held and a not in self._futures]
        if unknown:
            raise ValueError(f"job {name!r} waits on jobs never submitted: {', '.join(unknown)}")
        self._held[name] = (fn, args, kwargs, after)
        self._start_ready()

    def result(self, name: str) -> Any:
        """Wait for job `name` (starting jobs whose prerequisites finish meanwhile) and return its result."""
        if name not in self._held and name not in self._futures:
            raise ValueError(f"no job named {name!r}")
        while name in self._held or not self._futures[name].done():
            wait([f for f in self._futures.values() if not f.done()], return_when=FIRST_COMPLETED)
            self._start_ready()
        try:
            return self._futures[name].result()
        except BrokenProcessPool:
            raise FlexauditError(f"a worker process stopped abruptly (killed, or out of memory) or could not start "
                                 f"before {name!r} finished: rerun with --jobs 1 to run every step in one process") from None

    def _start_ready(self) -> None:
        for name, (fn, args, kwargs, after) in list(self._held.items()):
            if not all(a in self._futures and self._futures[a].done() for a in after):
                continue
            failed = next((self._futures[a] for a in after if self._futures[a].exception() is not None), None)
            busy = sum(not f.done() for f in self._futures.values())
            if failed is None and self._pool is not None and busy >= self.workers:
                continue  # held until a worker is free, so that a job ready later but submitted earlier goes first
            del self._held[name]
            future: Future = Future()
            if failed is not None:
                future.set_exception(failed.exception())
            elif self._pool is None:
                try:
                    future.set_result(fn(*args, progress=self.progress, **kwargs))
                except Exception as exc:  # re-raised by result(), as a worker's would be
                    future.set_exception(exc)
            else:
                try:
                    future = self._pool.submit(_call, fn, args, kwargs)
                except (BrokenProcessPool, EOFError, OSError) as exc:
                    raise FlexauditError(f"the worker processes could not start ({type(exc).__name__}: {exc}): "
                                         "rerun with --jobs 1 to run every step in one process") from None
            self._futures[name] = future


def _start_first_worker(pool: ProcessPoolExecutor) -> None:
    try:
        pool.submit(os.getpid)
    except Exception:  # the caller's next submit meets the same failure and reports it
        pass


def _start_fork_server(context, preload: tuple[str, ...]) -> None:
    """Start this process's fork server unless it runs already, importing flexaudit.jobs and `preload` (through
    flexaudit._forkserver_preload, which reads the list from the environment the server starts with). Returns
    once the server process exists, not when its imports are done."""
    from multiprocessing import forkserver

    context.set_forkserver_preload(["flexaudit._forkserver_preload"])
    os.environ[PRELOAD_ENV] = ",".join(preload)
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(PRELOAD_ENV, None)


# --- worker side -------------------------------------------------------------------------------------------

def _start_worker(threads: int, events, preload: tuple[str, ...]) -> None:
    import signal

    import torch

    # Ctrl-C reaches every process of the terminal's group: the caller stops the workers (Jobs.close), so that a
    # worker does not abandon its job only to start the next one queued
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    torch.set_num_threads(threads)
    global _WORKER_PROGRESS
    _WORKER_PROGRESS = _Forwarded(events)
    for name in preload:  # already imported where the fork server did
        try:
            importlib.import_module(name)
        except Exception:  # only a head start: the job that needs the module meets the error and reports it
            pass


def _call(fn: Callable, args: tuple, kwargs: dict) -> Any:
    return fn(*args, progress=_WORKER_PROGRESS, **kwargs)


class _Forwarded:
    """A worker's Progress: every call becomes an event for the parent's relay thread."""

    def __init__(self, events) -> None:
        self._events, self._tasks = events, 0

    def note(self, message: str) -> None:
        self._events.put(("note", None, (message,), {}))

    def task(self, description: str, total: int | None = None) -> "_ForwardedTask":
        self._tasks += 1
        key = (os.getpid(), self._tasks)
        self._events.put(("task", key, (description, total), {}))
        return _ForwardedTask(self._events, key)


class _ForwardedTask:
    def __init__(self, events, key: tuple[int, int]) -> None:
        self._events, self._key = events, key

    def advance(self, n: int = 1, **fields: object) -> None:
        self._events.put(("advance", self._key, (n,), fields))

    def close(self) -> None:
        self._events.put(("close", self._key, (), {}))


def _relay(events, progress: Progress) -> None:
    """The parent's side: replay the workers' progress events, until None."""
    tasks: dict = {}
    while (event := events.get()) is not None:
        kind, key, args, fields = event
        if kind == "note":
            progress.note(*args)
        elif kind == "task":
            tasks[key] = progress.task(*args)
        elif kind == "advance" and key in tasks:
            tasks[key].advance(*args, **fields)
        elif kind == "close" and key in tasks:
            tasks.pop(key).close()
