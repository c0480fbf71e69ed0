"""Batches by a token budget, halved on out-of-memory: a smaller device is slower, never wrong."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from attacks import InputError, generate, score_texts
from attacks.batching import run_batches


def _oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_run_batches_covers_every_item_once_and_halves_after_out_of_memory():
    seen, calls = [], []

    def run(start, stop):
        calls.append((start, stop))
        if stop - start > 3:
            raise _oom()
        seen.extend(range(start, stop))

    retries = run_batches([10] * 11, run, max_rows=8, max_tokens=1000)
    assert seen == list(range(11)) and retries == 2  # 8 rows failed, then 4; 2 per batch from then on
    assert calls[:3] == [(0, 8), (0, 4), (0, 2)] and all(stop - start <= 2 for start, stop in calls[2:])


def test_run_batches_packs_by_padded_tokens():
    sizes = []
    run_batches([50, 40, 40, 10, 10, 10, 10], lambda a, b: sizes.append(b - a), max_rows=16, max_tokens=100)
    assert sizes == [2, 2, 3]  # the widest row of a batch sets its padded width


def test_one_item_that_does_not_fit_is_one_clear_error():
    def run(start, stop):
        raise _oom()

    with pytest.raises(InputError, match="out of memory on a single prompt of 64 tokens"):
        run_batches([64, 64], run, max_rows=4, what="prompt")


def test_other_errors_are_not_retried():
    def run(start, stop):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches([5, 5], run, max_rows=2)


@contextlib.contextmanager
def _flaky(lm, max_rows: int):
    """Every forward pass of `lm`'s model with more than `max_rows` rows runs out of memory; yields the rows of
    every pass. A hook, not a wrapper module: decoding picks its KV-cache keyword from the model's forward
    signature (`cache` or `past_key_values`, by transformers version), which a wrapper would hide."""
    rows_seen = []

    def hook(module, args, kwargs):
        rows = (kwargs["input_ids"] if "input_ids" in kwargs else args[0]).shape[0]
        rows_seen.append(rows)
        if rows > max_rows:
            raise _oom()

    handle = lm.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield rows_seen
    finally:
        handle.remove()


def test_scoring_that_runs_out_of_memory_gives_the_same_scores(world):
    texts = world.members + world.nonmembers
    full = score_texts(world.target, texts, batch_size=16)
    with _flaky(world.target, max_rows=3) as rows_seen:
        small = score_texts(world.target, texts, batch_size=16)
    assert max(rows_seen) == 16 and rows_seen[-1] <= 3
    np.testing.assert_allclose(small.logprobs_flat, full.logprobs_flat, atol=1e-5)
    np.testing.assert_allclose(small.mu_flat, full.mu_flat, atol=1e-5)


def test_a_token_budget_caps_the_rows_per_pass(world):
    widest = max(len(t) for t in world.target.encode(world.members))
    with _flaky(world.target, max_rows=10_000) as rows_seen:
        score_texts(world.target, world.members, batch_size=16, batch_tokens=2 * widest)
    assert max(rows_seen) == 2


def test_decoding_that_runs_out_of_memory_gives_the_same_tokens(world):
    prompts = [ids[:6] for ids in world.target.encode(world.members)]
    greedy = generate(world.target, prompts, max_new_tokens=5)
    with _flaky(world.target, max_rows=2) as rows_seen:
        again = generate(world.target, prompts, max_new_tokens=5, batch_size=8)
    assert rows_seen[:3] == [8, 4, 2] and max(rows_seen[3:]) <= 2
    assert len(again) == len(prompts) and all(np.array_equal(a, b) for a, b in zip(greedy, again))
