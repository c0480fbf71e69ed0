"""Shared fixtures for the attack-library tests: one tiny tokenizer, an "anchor" (random init) and a
"target" (the same init overfit on 8 member texts and the included canaries), saved and loaded by path.

Built once per session (about a second): keep fixtures few and module tests cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from attacks import CausalLM, load_causal_lm, make_canaries
from attacks import testing as tiny


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Two cores shared by several test workers: torch's default intra-op threading oversubscribes them
    # and makes these tiny models ~50x slower; one thread per worker is fastest.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class World:
    members: list[str]
    nonmembers: list[str]
    canaries: list
    tokenizer: object
    anchor_dir: object
    target_dir: object
    anchor: CausalLM
    target: CausalLM


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    members = tiny.synthetic_texts(8, seed=1, words=12)
    nonmembers = tiny.synthetic_texts(8, seed=2, words=12)
    canaries = make_canaries(8, seed=11, include_prob=0.5)
    assert 0 < sum(c.included for c in canaries) < 8
    tokenizer = tiny.train_tokenizer(tiny.synthetic_texts(200, seed=3, words=12) + members + nonmembers
                                     + [c.text for c in canaries], vocab_size=512)
    base = tmp_path_factory.mktemp("models")
    anchor_dir = tiny.save(tiny.tiny_flexolmo(tokenizer, seed=0), tokenizer, base / "anchor")
    model = tiny.tiny_flexolmo(tokenizer, seed=0)  # the expert starts from the anchor's weights
    tiny.overfit(model, tokenizer, members + [c.text for c in canaries if c.included], steps=250, lr=1e-2)
    target_dir = tiny.save(model, tokenizer, base / "target")
    torch.set_num_threads(threads)
    return World(members, nonmembers, canaries, tokenizer, anchor_dir, target_dir,
                 load_causal_lm(anchor_dir), load_causal_lm(target_dir))
