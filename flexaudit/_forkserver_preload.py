"""Imported by the fork server of flexaudit.jobs, and by nothing else (it changes the process's Ctrl-C
handling): imports the modules named in the environment variable flexaudit.jobs.PRELOAD_ENV, so that every
worker forked from the server starts with them imported. A module that fails to import is skipped (the job
that needs it meets the error and reports it); the fork server itself would stop on any error but ImportError."""

import importlib
import os
import signal

# Ctrl-C reaches the server too: it ignores it once its imports are done, and must not die of it during them
# (the caller stops the workers, flexaudit.jobs)
signal.signal(signal.SIGINT, signal.SIG_IGN)

from flexaudit.jobs import PRELOAD_ENV  # noqa: E402  (after the signal: this import takes time too)

for _name in filter(None, os.environ.pop(PRELOAD_ENV, "").split(",")):
    try:
        importlib.import_module(_name)
    except Exception:
        pass
