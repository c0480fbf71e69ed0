"""Batches by a token budget, halved on out-of-memory: a smaller device is slower, never wrong."""

from __future__ import annotations

import dataclasses

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


def _flaky(lm, max_rows: int):
    """The same model, but every forward pass with more than `max_rows` rows runs out of memory."""
    model = lm.model

    class Flaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model
            self.config = model.config
            self.rows_seen = []

        def forward(self, input_ids=None, cache=None, logits_to_keep=0, **kwargs):
            self.rows_seen.append(input_ids.shape[0])
            if input_ids.shape[0] > max_rows:
                raise _oom()
            if cache is not None:
                kwargs["cache"] = cache
            return self.inner(input_ids=input_ids, logits_to_keep=logits_to_keep, **kwargs)

    return dataclasses.replace(lm, model=Flaky())


def test_scoring_that_runs_out_of_memory_gives_the_same_scores(world):
    texts = world.members + world.nonmembers
    full = score_texts(world.target, texts, batch_size=16)
    flaky = _flaky(world.target, max_rows=3)
    small = score_texts(flaky, texts, batch_size=16)
    assert max(flaky.model.rows_seen) == 16 and flaky.model.rows_seen[-1] <= 3
    np.testing.assert_allclose(small.logprobs_flat, full.logprobs_flat, atol=1e-5)
    np.testing.assert_allclose(small.mu_flat, full.mu_flat, atol=1e-5)


def test_a_token_budget_caps_the_rows_per_pass(world):
    flaky = _flaky(world.target, max_rows=10_000)
    widest = max(len(t) for t in world.target.encode(world.members))
    score_texts(flaky, world.members, batch_size=16, batch_tokens=2 * widest)
    assert max(flaky.model.rows_seen) == 2


def test_decoding_that_runs_out_of_memory_gives_the_same_tokens(world):
    prompts = [ids[:6] for ids in world.target.encode(world.members)]
    greedy = generate(world.target, prompts, max_new_tokens=5)
    flaky = _flaky(world.target, max_rows=2)
    again = generate(flaky, prompts, max_new_tokens=5, batch_size=8)
    assert all(np.array_equal(a, b) for a, b in zip(greedy, again))
