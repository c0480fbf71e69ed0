"""Deterministic batches and exact resume after a kill at any point, including mid-checkpoint."""

from __future__ import annotations

import re

import pytest
from safetensors.torch import load_file

from flexaudit.moe.training import PackedStream, TrainSettings

from ..conftest import run_script

RUN = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from flexaudit.moe.expert import ExpertOptions
from flexaudit.privacy.expert_training import train_expert
train_expert(anchor_dir=Path(sys.argv[1]), data=Path(sys.argv[2]), name="clinical", out=Path(sys.argv[3]),
             options=ExpertOptions(steps=9, batch_size=4, checkpoint_every=3), resume="--resume" in sys.argv)
"""


def test_batches_are_a_pure_function_of_the_step():
    docs = [[i] * (5 + i % 7) for i in range(40)]
    a = PackedStream(docs, seq_len=8, batch_size=3, seed=1)
    b = PackedStream(docs, seq_len=8, batch_size=3, seed=1)
    c = PackedStream(docs, seq_len=8, batch_size=3, seed=2)
    later = [a.rows(s) for s in (7, 2, 30)]  # out of order and across epochs
    assert all((x == b.rows(s)).all() for x, s in zip(later, (7, 2, 30)))
    assert not (a.rows(0) == c.rows(0)).all()
    assert a.rows(0).shape == (3, 9)


def test_learning_rate_schedule():
    s = TrainSettings(steps=100, batch_size=1, seq_len=8, lr=1.0, warmup_steps=10)
    assert s.lr_at(0) == pytest.approx(0.1) and s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(99) == pytest.approx(0.1, abs=1e-3)
    assert all(s.lr_at(i) >= s.lr_at(i + 1) for i in range(10, 99))


def _run(tmp, anchor, data, out, *, fault=None, resume=False):
    return run_script(RUN, tmp / "home", anchor, data, out, fault=fault, resume=resume)


@pytest.mark.slow
def test_killed_runs_resume_to_identical_weights(tmp_path, tiny_anchor, corpus_dir):
    data = corpus_dir / "clinical.jsonl"
    reference = tmp_path / "reference"
    done = _run(tmp_path, tiny_anchor, data, reference)
    assert done.returncode == 0, done.stderr
    expected = load_file(reference / "expert.safetensors")
    # one run killed three times, each resume dying at the next fault: between writing and publishing a
    # checkpoint, after a step, and while writing a checkpoint; then resumed to the end
    out = tmp_path / "killed"
    for i, fault in enumerate(("checkpoint-publish:3", "step:4", "checkpoint-write:6")):
        killed = _run(tmp_path, tiny_anchor, data, out, fault=fault, resume=i > 0)
        assert killed.returncode == 137, (fault, killed.stderr)
        assert not out.exists()  # nothing half-written where the package goes
    resumed = _run(tmp_path, tiny_anchor, data, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    got = load_file(out / "expert.safetensors")
    assert got.keys() == expected.keys()
    assert all((got[k] == expected[k]).all() for k in got)


def test_resume_refuses_other_settings(tmp_path, tiny_anchor, corpus_dir):
    from flexaudit.errors import InputError
    from flexaudit.moe.expert import ExpertOptions
    from flexaudit.privacy.expert_training import train_expert

    out = tmp_path / "e"
    killed = _run(tmp_path, tiny_anchor, corpus_dir / "clinical.jsonl", out, fault="step:4")
    assert killed.returncode == 137
    with pytest.raises(InputError, match="other settings or data"):
        train_expert(anchor_dir=tiny_anchor, data=corpus_dir / "clinical.jsonl", name="clinical", out=out,
                     options=ExpertOptions(steps=9, batch_size=4, checkpoint_every=3, lr=1e-3), resume=True,
                     home=tmp_path / "home")


@pytest.mark.parametrize("changes,fragment", [
    ({"public_rows": 0}, "ExpertOptions.public_rows must be at least 1"),
    ({"anchor_weight": -1.0}, "--anchor-weight must be a number of at least 0"),
    ({"anchor_weight": float("nan")}, "--anchor-weight must be a number of at least 0"),
    ({"canaries": 4, "canary_repeats": 0}, "--canary-repeats must be at least 1"),
    ({"seq_len": 0}, "--seq-len must be at least 1"),
    ({"warmup_steps": -3}, "ExpertOptions.warmup_steps must be at least 0"),
    ({"lr": float("inf")}, "--lr must be a positive number"),
])
def test_expert_options_no_run_could_use_are_refused_before_anything_is_loaded(changes, fragment):
    from flexaudit.errors import InputError
    from flexaudit.moe.expert import ExpertOptions

    with pytest.raises(InputError, match=re.escape(fragment)):
        ExpertOptions(steps=2, **changes)
