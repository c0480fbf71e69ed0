"""Shared fixtures: a tiny anchor and expert trained once per test session (per xdist worker)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

# Tests never reach a model hub, and stay on few threads so two xdist workers share 2 cores well.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)
# Never touch the real ~/.local/share/flexaudit; and leave no test keys behind.
os.environ["FLEXAUDIT_HOME"] = tempfile.mkdtemp(prefix="flexaudit-home-")
atexit.register(shutil.rmtree, os.environ["FLEXAUDIT_HOME"], ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own, which marks the grouped tests' node ids
def pytest_collection_modifyitems(config, items):
    """The slow tests first (a stable sort): xdist hands them out before the quick ones, so the two workers run
    them side by side and the quick tests fill in around them, instead of one slow test left for the end.

    And a check that `--dist loadgroup` groups: pytest-xdist 3.8 marks a test's group by a suffix on its node
    id, which pytest 9.2's structured node ids ignore (pytest-xdist issue 1386), so each xdist_group test would
    go to any worker and set up its group's shared job again, beside the other worker's."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if getattr(config.option, "loadgroup", False):
        lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if lost:  # slower, not wrong: a warning in the summary
            warnings.warn(pytest.PytestWarning(
                f"pytest-xdist's --dist loadgroup does not group with pytest {pytest.__version__} ({lost[0]} has no "
                "group): install the test extras' pytest (pip install -e '.[test]')"))


def run_script(script: str, home: Path, *args, fault: str | None = None, resume: bool = False):
    """Run a Python snippet in a fresh process with its own owner home, optionally told to die at a fault point
    (FLEXAUDIT_FAULT) and given --resume: how the kill-and-resume tests run a training."""
    import subprocess
    import sys

    env = {**os.environ, "FLEXAUDIT_HOME": str(home)}
    env.pop("FLEXAUDIT_FAULT", None)
    if fault:
        env["FLEXAUDIT_FAULT"] = fault
    command = [sys.executable, "-c", script, *map(str, args)] + (["--resume"] if resume else [])
    return subprocess.run(command, env=env, capture_output=True, text=True)


def invoke(*args):
    """Run the command line in-process, every argument as a string."""
    from typer.testing import CliRunner

    from flexaudit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The contract for bad input: exactly one line on stderr, starting with "error: ", and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    from flexaudit.data.builtin import write_domain

    root = tmp_path_factory.mktemp("corpus")
    write_domain("public", root / "public.jsonl", n_documents=150)
    write_domain("clinical", root / "clinical.jsonl", n_documents=120)
    write_domain("finance", root / "finance.jsonl", n_documents=120)
    return root


@pytest.fixture(scope="session")
def tiny_anchor(tmp_path_factory, corpus_dir) -> Path:
    from flexaudit.moe.anchor import train_anchor

    out = tmp_path_factory.mktemp("anchor") / "anchor"
    train_anchor([corpus_dir / "public.jsonl"], out, preset="tiny", steps=30)
    return out


def _train(tmp_path_factory, anchor: Path, data: Path, name: str) -> Path:
    from flexaudit.moe.expert import ExpertOptions
    from flexaudit.privacy.expert_training import train_expert

    out = tmp_path_factory.mktemp(f"expert-{name}") / name
    train_expert(anchor_dir=anchor, data=data, name=name, out=out,
                 options=ExpertOptions(steps=12, batch_size=8, checkpoint_every=5))
    return out


@pytest.fixture(scope="session")
def clinical_expert(tmp_path_factory, tiny_anchor, corpus_dir) -> Path:
    return _train(tmp_path_factory, tiny_anchor, corpus_dir / "clinical.jsonl", "clinical")


@pytest.fixture(scope="session")
def finance_expert(tmp_path_factory, tiny_anchor, corpus_dir) -> Path:
    return _train(tmp_path_factory, tiny_anchor, corpus_dir / "finance.jsonl", "finance")
