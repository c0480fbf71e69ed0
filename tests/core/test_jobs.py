"""flexaudit.jobs: independent jobs side by side in worker processes, with the caller's progress."""

from __future__ import annotations

import os
import threading
import time

import pytest

from flexaudit.errors import FlexauditError, IntegrityError
from flexaudit.jobs import Jobs


class Recorder:
    """A Progress that records what reaches it (from the relay thread, in worker mode)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.lock = threading.Lock()

    def note(self, message: str) -> None:
        with self.lock:
            self.events.append(("note", message))

    def task(self, description: str, total: int | None = None):
        recorder = self
        with self.lock:
            self.events.append(("task", description, total))

        class Task:
            def advance(self, n: int = 1, **fields) -> None:
                with recorder.lock:
                    recorder.events.append(("advance", description, n, fields))

            def close(self) -> None:
                with recorder.lock:
                    recorder.events.append(("close", description))

        return Task()


def where(tag: str, *, progress) -> tuple[str, int, int]:
    import torch

    progress.note(f"{tag} runs")
    task = progress.task(f"{tag} steps", total=2)
    task.advance(1, status="half")
    task.advance(1)
    task.close()
    return tag, os.getpid(), torch.get_num_threads()


def write_after(path: str, text: str, delay: float, *, progress) -> str:
    time.sleep(delay)
    with open(path, "a") as fh:
        fh.write(text)
    return text


def read(path: str, *, progress) -> str:
    with open(path) as fh:
        return fh.read()


def refuse(*, progress) -> None:
    raise IntegrityError("the package digest does not match: re-download it")


def die(*, progress) -> None:
    os._exit(9)


def imported(name: str, delay: float, *, progress) -> tuple[int, bool]:
    import sys

    time.sleep(delay)  # long enough that the other job goes to the other worker
    return os.getpid(), name in sys.modules


@pytest.mark.parametrize("fork_server", [True, False], ids=["fork-server", "spawned"])
def test_each_worker_starts_with_the_preloaded_modules(fork_server, monkeypatch):
    import multiprocessing

    if not fork_server:  # a platform without one (Windows): spawned workers import the modules themselves
        monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    elif "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    # tabnanny: a standard module nothing here imports; a module that does not exist is skipped
    with Jobs(2, threads=1, preload=["tabnanny", "flexaudit.no_such_module"]) as jobs:
        jobs.submit("a", imported, "tabnanny", 0.5)
        jobs.submit("b", imported, "tabnanny", 0.5)
        ran = [jobs.result("a"), jobs.result("b")]
    assert len({pid for pid, _ in ran}) == 2 and all(loaded for _, loaded in ran)
    assert os.getpid() not in {pid for pid, _ in ran}


_SHARED_IMPORT = """
import os, sys, time
from flexaudit.jobs import Jobs

def job(*, progress):
    time.sleep(0.5)
    return os.getpid(), sys.modules["recorded"].IMPORTED_IN

if __name__ == "__main__":
    with Jobs(2, threads=1, preload=["raises", "recorded"]) as jobs:
        jobs.submit("a", job)
        jobs.submit("b", job)
        print(os.getpid(), *jobs.result("a"), *jobs.result("b"))
"""


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="no fork server on this platform: each worker imports the modules itself")
def test_the_workers_share_one_import_of_the_preloaded_modules(tmp_path):
    import subprocess
    import sys

    (tmp_path / "recorded.py").write_text("import os\nIMPORTED_IN = os.getpid()\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('a module that fails on import')\n")
    (tmp_path / "main.py").write_text(_SHARED_IMPORT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    run = subprocess.run([sys.executable, str(tmp_path / "main.py")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    caller, pid_a, imported_a, pid_b, imported_b = map(int, run.stdout.split())
    assert len({caller, pid_a, pid_b}) == 3
    # imported once, in the fork server, before either worker existed; the module that raised did not stop it
    assert imported_a == imported_b and imported_a not in {caller, pid_a, pid_b}


_SERVER_DIES = """
from flexaudit.errors import FlexauditError
from flexaudit.jobs import Jobs

def job(*, progress):
    return 1

if __name__ == "__main__":
    try:
        with Jobs(2, threads=1, preload=["dies"]) as jobs:
            jobs.submit("a", job)
            jobs.result("a")
    except FlexauditError as exc:
        print(exc)
"""


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="no fork server on this platform")
def test_workers_that_cannot_start_fail_with_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "dies.py").write_text("import os\nos._exit(3)\n")  # takes the fork server with it
    (tmp_path / "main.py").write_text(_SERVER_DIES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    run = subprocess.run([sys.executable, str(tmp_path / "main.py")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "could not start" in run.stdout and "--jobs 1" in run.stdout and len(run.stdout.splitlines()) == 1
    assert "Traceback" not in run.stderr  # the thread that starts the first worker fails quietly


def test_inline_jobs_run_in_this_process_in_order_with_the_callers_progress(tmp_path):
    progress = Recorder()
    with Jobs(1, progress=progress) as jobs:
        jobs.submit("a", where, "a")
        assert progress.events[0] == ("note", "a runs")  # ran at submit time
        jobs.submit("b", write_after, str(tmp_path / "f"), "x", 0.0, after=["a"])
        assert jobs.result("a")[1] == os.getpid()
        assert jobs.result("b") == "x"
    assert ("advance", "a steps", 1, {"status": "half"}) in progress.events


def test_worker_jobs_run_elsewhere_after_their_prerequisites_and_forward_progress(tmp_path):
    progress = Recorder()
    path = str(tmp_path / "log")
    with Jobs(2, threads=1, progress=progress) as jobs:
        jobs.submit("slow write", write_after, path, "first;", 1.0)
        jobs.submit("read", read, path, after=["slow write"])  # would fail or read nothing if it ran early
        jobs.submit("a", where, "a")
        jobs.submit("b", where, "b")
        assert jobs.result("read") == "first;"
        a, b = jobs.result("a"), jobs.result("b")
    assert a[1] != os.getpid() and b[1] != os.getpid()
    assert a[2] == b[2] == 1  # the workers' torch threads
    events = progress.events
    for tag in ("a", "b"):
        assert ("note", f"{tag} runs") in events
        advanced = events.index(("advance", f"{tag} steps", 1, {"status": "half"}))
        assert events.index(("task", f"{tag} steps", 2)) < advanced
        assert ("close", f"{tag} steps") in events


def log_start(path: str, tag: str, delay: float, *, progress) -> None:
    with open(path, "a") as fh:
        fh.write(f"{tag};")
    time.sleep(delay)


def log_start_until(path: str, tag: str, seen: str, *, progress) -> None:
    """Log the start, then run until `seen` has started (so that the test does not hang on the workers' speed)."""
    log_start(path, tag, 0.0, progress=progress)
    deadline = time.monotonic() + 60
    while f"{seen};" not in open(path).read() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_free_worker_takes_the_first_submitted_of_the_ready_jobs(tmp_path):
    # "after long" becomes ready after the short jobs, but was submitted before them: when "long" ends it
    # goes next, not behind every short job queued meanwhile (the demo's careless owner's dense baseline
    # waited so, while the other worker sat idle at the end)
    path = str(tmp_path / "starts")
    with Jobs(2, threads=1) as jobs:
        jobs.submit("long", log_start_until, path, "long", "short 1")  # ends once the other worker is on short 1
        jobs.submit("first", log_start, path, "first", 0.0)
        jobs.submit("after long", log_start, path, "after long", 0.0, after=["long"])
        for i in range(6):
            jobs.submit(f"short {i}", log_start, path, f"short {i}", 0.5, after=["first"])
        jobs.result("after long")
        for i in range(6):
            jobs.result(f"short {i}")
    starts = open(path).read().split(";")[:-1]
    assert sorted(starts) == sorted(["long", "first", "after long", *(f"short {i}" for i in range(6))])
    # when "long" ended, short 1 had started and shorts 2-5 waited (the pool's queue would have run them first)
    assert starts.index("after long") < starts.index("short 3"), starts


@pytest.mark.parametrize("workers", [1, 2])
def test_a_jobs_error_reaches_the_caller_and_its_dependents(workers, tmp_path):
    with Jobs(workers) as jobs:
        jobs.submit("refuse", refuse)
        jobs.submit("after it", read, str(tmp_path / "never"), after=["refuse"])
        for name in ("refuse", "after it"):
            with pytest.raises(IntegrityError) as raised:
                jobs.result(name)
            assert raised.value.exit_code == 3 and "digest does not match" in raised.value.message


def test_a_worker_that_dies_is_named_in_one_line():
    with Jobs(2) as jobs:
        jobs.submit("dies", die)
        with pytest.raises(FlexauditError) as raised:
            jobs.result("dies")
    assert "stopped abruptly" in raised.value.message and "'dies'" in raised.value.message
    assert "--jobs 1" in raised.value.message


def test_names_are_checked():
    with Jobs(1) as jobs:
        jobs.submit("a", refuse)
        with pytest.raises(ValueError, match="already submitted"):
            jobs.submit("a", refuse)
        with pytest.raises(ValueError, match="never submitted: z"):
            jobs.submit("b", refuse, after=["z"])
        with pytest.raises(ValueError, match="no job named"):
            jobs.result("c")


def sleep_in(path: str, delay: float, *, progress) -> None:
    # renamed into place: a caller that sees the file exist reads the whole pid, never an empty file
    with open(f"{path}.tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(f"{path}.tmp", path)
    time.sleep(delay)


def test_an_error_in_the_caller_stops_the_workers_at_once(tmp_path):
    began = time.perf_counter()
    with pytest.raises(RuntimeError, match="the caller failed"):
        with Jobs(2) as jobs:
            jobs.submit("a", sleep_in, str(tmp_path / "a"), 60.0)
            jobs.submit("b", sleep_in, str(tmp_path / "b"), 60.0)
            jobs.submit("after a", sleep_in, str(tmp_path / "c"), 0.0, after=["a"])
            while not all((tmp_path / name).exists() for name in "ab"):  # both workers busy
                time.sleep(0.1)
            raise RuntimeError("the caller failed")
    assert time.perf_counter() - began < 40  # not after the 60 s the jobs would take
    for name in "ab":  # the workers are gone, not left to finish their jobs
        with pytest.raises(ProcessLookupError):
            os.kill(int((tmp_path / name).read_text()), 0)
    assert not (tmp_path / "c").exists()
