"""Extraction attacks and the batched KV-cache decoder, on the tiny overfit model and its anchor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attacks import (
    GREEDY,
    PAPER_SAMPLING,
    InputError,
    NothingUsable,
    SamplingConfig,
    canary_exposure,
    discoverable_extraction,
    generate,
    make_canaries,
    pii_inference,
    pii_leakage,
    probabilistic_extraction,
    sampled_extraction,
)
from attacks.extraction import decoding_logprobs, extraction_probability
from attacks.extraction.canaries import exposure_from_loglik, random_secrets
from attacks.scoring import score_texts, shared_prefix_logliks


def _no_raw_text(result, secrets):
    dumped = json.dumps(result.as_dict(), allow_nan=False)
    return not any(s in dumped for s in secrets)


# ----------------------------------------------------------------------------- decoding
def test_decoding_distribution_golden():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top_p = decoding_logprobs(logits, SamplingConfig(do_sample=True, top_p=0.75)).exp()[0]
    # mass of the more likely tokens: 0, 0.5, 0.8, 0.95; a token is kept while that is below top_p
    assert top_p.tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    top_k = decoding_logprobs(logits, SamplingConfig(do_sample=True, top_k=2)).exp()[0]
    assert top_k.tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    hot = decoding_logprobs(logits, SamplingConfig(do_sample=True, temperature=0.5)).exp()[0]
    assert hot.tolist() == pytest.approx((torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2 / 0.3650).tolist(), abs=1e-6)
    greedy = decoding_logprobs(logits, GREEDY)[0]
    assert greedy[0] == 0 and torch.isinf(greedy[1:]).all()
    both = decoding_logprobs(torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])),
                             SamplingConfig(do_sample=True, top_k=3, top_p=0.7)).exp()[0]
    # top-k 3 renormalises to [4/9, 3/9, 2/9]; more-likely mass [0, 4/9, 7/9]: the third is dropped
    assert both.tolist() == pytest.approx([4 / 7, 3 / 7, 0.0, 0.0])
    with pytest.raises(InputError):
        SamplingConfig(do_sample=True, top_p=1.5)


def test_sampler_draws_from_decoding_distribution():
    from attacks.extraction.decoding import _pick

    logits = torch.log(torch.tensor([0.35, 0.25, 0.2, 0.1, 0.06, 0.04])).repeat(4000, 1)
    cfg = SamplingConfig(do_sample=True, top_k=4, top_p=0.9, temperature=0.8)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    freq = torch.bincount(_pick(logits, cfg, gens), minlength=6).double() / 4000
    assert freq.tolist() == pytest.approx(decoding_logprobs(logits[:1], cfg).exp()[0].tolist(), abs=0.03)


def test_batched_greedy_equals_one_prompt_at_a_time_and_hf_generate(world):
    lm = world.target
    prompts = [ids[:k] for ids, k in zip(lm.encode(world.members[:4] + world.nonmembers[:2]), (3, 5, 8, 4, 6, 2))]
    batched = generate(lm, prompts, max_new_tokens=10, batch_size=6)
    for p, out in zip(prompts, batched):
        assert np.array_equal(out, generate(lm, [p], max_new_tokens=10, batch_size=1)[0])
    hf = lm.model.generate(torch.tensor([prompts[2]]), do_sample=False, max_new_tokens=10, min_new_tokens=10,
                           pad_token_id=world.tokenizer.pad_token_id)
    assert hf[0, len(prompts[2]):].tolist() == batched[2].tolist()


def test_sampling_is_deterministic_and_batch_invariant(world):
    lm = world.anchor
    prompts = [ids[:4] for ids in lm.encode(world.nonmembers[:5])]
    a = generate(lm, prompts, max_new_tokens=8, sampling=PAPER_SAMPLING, seeds=[1, 2, 3, 4, 5], batch_size=5)
    b = generate(lm, prompts, max_new_tokens=8, sampling=PAPER_SAMPLING, seeds=[1, 2, 3, 4, 5], batch_size=2)
    c = generate(lm, prompts, max_new_tokens=8, sampling=PAPER_SAMPLING, seeds=[6, 7, 8, 9, 10], batch_size=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    state = torch.random.get_rng_state()
    generate(lm, prompts[:1], max_new_tokens=4, sampling=PAPER_SAMPLING, seeds=[0])
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    with pytest.raises(InputError, match="seed"):
        generate(lm, prompts, max_new_tokens=4, sampling=PAPER_SAMPLING)


# ----------------------------------------------------------------------------- attacks
def test_discoverable_extraction_overfit_vs_anchor(world):
    secrets = world.members
    hit = discoverable_extraction(world.target, world.members, prefix_len=6, suffix_len=6)
    miss = discoverable_extraction(world.anchor, world.members, prefix_len=6, suffix_len=6)
    held = discoverable_extraction(world.target, world.nonmembers, prefix_len=6, suffix_len=6)
    assert hit.n_documents == 8 and hit.exact.k >= 7 and hit.mean_token_match > 0.9
    assert miss.exact.k == 0 and held.exact.k <= 1
    assert _no_raw_text(hit, secrets) and hit.examples is None
    revealed = discoverable_extraction(world.target, world.members[:2], prefix_len=6, suffix_len=6, reveal=True)
    assert not _no_raw_text(revealed, [revealed.examples[0]["true_suffix"]])
    with pytest.raises(NothingUsable) as info:  # no 100-token window anywhere: nothing to measure
        discoverable_extraction(world.target, world.members[:2] + ["too short"], prefix_len=50, suffix_len=50)
    assert info.value.skipped == {"shorter than the 100-token window": 3}


def test_probabilistic_greedy_agrees_with_discoverable(world):
    disc = discoverable_extraction(world.target, world.members + world.nonmembers, prefix_len=6, suffix_len=6)
    prob = probabilistic_extraction(world.target, world.members + world.nonmembers, prefix_len=6, suffix_len=6,
                                    sampling=GREEDY, n_queries=(1,))
    for d, p in zip(disc.per_document, prob.per_document):  # greedy: p is 1 iff the greedy suffix matches
        assert (p["log_p"] == 0.0) == d["exact"]
    sampled = probabilistic_extraction(world.target, world.members, prefix_len=6, suffix_len=6)
    assert sampled.by_queries[100]["extractable"].k >= 7
    assert sampled.by_queries[1]["expected_rate"] <= sampled.by_queries[10]["expected_rate"]
    anchor = probabilistic_extraction(world.anchor, world.members, prefix_len=6, suffix_len=6)
    assert anchor.by_queries[1000]["extractable"].k == 0
    json.dumps(anchor.as_dict(), allow_nan=False)


def test_extraction_probability_golden():
    got = extraction_probability(np.log([0.5, 1.0, 1e-12]), 2)
    assert got[:2].tolist() == [0.75, 1.0] and got[2] == pytest.approx(2e-12, rel=1e-6)
    assert extraction_probability(np.array([-np.inf]), 1000).tolist() == [0.0]


def test_sampled_extraction_overfit_vs_anchor(world):
    kw = dict(prefix_len=4, window_len=12, n_samples=3, seed=5, offset="start")  # tiny models memorise by position
    hit = sampled_extraction(world.target, world.members, **kw)
    miss = sampled_extraction(world.anchor, world.members, **kw)
    assert hit.extracted.k >= 6 and miss.extracted.k == 0
    assert hit.as_dict() == sampled_extraction(world.target, world.members, **kw).as_dict()  # seeded
    assert _no_raw_text(hit, world.members)
    rnd = sampled_extraction(world.target, world.members, prefix_len=4, window_len=12, n_samples=1, seed=5)
    lengths = [len(ids) for ids in world.target.encode(world.members)]
    offsets = [d["offset"] for d in rnd.per_document]  # the paper's random offsets, seeded per document
    assert all(0 <= o <= n - 12 for o, n in zip(offsets, lengths)) and any(offsets)
    with pytest.raises(InputError):
        sampled_extraction(world.target, world.members, prefix_len=12, window_len=12)


def test_canaries_are_seeded_and_distinct():
    a, b = make_canaries(50, seed=3, include_prob=0.5), make_canaries(50, seed=3, include_prob=0.5)
    assert a == b and len({c.secret for c in a}) == 50 and len({c.owner for c in a}) == 50
    assert all(len(c.secret) == 9 and c.secret.isdigit() for c in a)
    assert 10 < sum(c.included for c in a) < 40
    custom = make_canaries(2, seed=0, template="{owner}'s PIN: {secret}", secret_digits=4, owners=["Al", "Bo"])
    assert custom[0].text == f"Al's PIN: {custom[0].secret}" and custom[0].included is None
    assert "secret" not in custom[0].as_dict() and custom[0].as_dict(reveal=True)["secret"] == custom[0].secret
    with pytest.raises(InputError):
        make_canaries(1, seed=0, template="{secret} first")


def test_exposure_estimator_golden():
    refs = np.array([-10.0, -5.0, -3.0])  # log-likelihoods of 3 reference secrets
    assert exposure_from_loglik(-1.0, refs) == (1, 2.0)                 # best of 4: log2 4 - log2 1
    assert exposure_from_loglik(-4.0, refs) == (2, 1.0)
    assert exposure_from_loglik(-3.0, refs) == (2, 1.0)                 # a tie counts against the canary
    assert exposure_from_loglik(-20.0, refs) == (4, 0.0)


def test_canary_exposure_planted_vs_not(world):
    res = canary_exposure(world.target, world.canaries, n_reference=63, seed=1)
    planted = [p["exposure"] for p in res.per_canary if p["included"]]
    held = [p["exposure"] for p in res.per_canary if not p["included"]]
    assert res.max_estimable_bits == 6.0 and min(planted) == 6.0 and np.mean(held) < 5.0
    assert res.secret_space_bits == pytest.approx(9 * math.log2(10))
    assert all(p["exposure_extrapolated"] >= 6.0 for p in res.per_canary if p["included"])
    assert res.epsilon_one_run is not None and res.epsilon_one_run.details["m"] == 8
    assert _no_raw_text(res, [c.secret for c in world.canaries])
    anchor = canary_exposure(world.anchor, world.canaries, n_reference=63, seed=1)
    assert anchor.top_ranked.k <= 1


def test_pii_leakage_counts_distinct_items_per_category(world):
    numbers = [t.split()[-1].rstrip(".") for t in world.members]          # 4-digit numbers in the training texts
    items = ([{"category": "number", "value": v} for v in numbers]
             + [{"category": "number", "value": "0000"}, {"category": "code", "value": "ZZ-999-QQ"},
                {"category": "code", "value": "7"}])
    prompts = [" ".join(t.split()[:8]) for t in world.members] + [f"order {numbers[0]} was"]
    res = pii_leakage(world.target, items, prompts, max_new_tokens=12, n_samples=2, seed=0)
    assert res.by_category["number"].n == 9 and res.by_category["number"].k >= 7
    assert res.by_category["code"].k == 0 and res.n_skipped_short == 1 and res.warnings
    assert res.n_generations == 2 * len(prompts) and len(res.leaked_sha256) == res.leaked.k
    assert _no_raw_text(res, numbers + world.members)
    anchor = pii_leakage(world.anchor, items, prompts, max_new_tokens=12, n_samples=2, seed=0)
    assert anchor.leaked.k == 0
    # a value already in the prompt is not leakage
    echo = pii_leakage(world.target, [{"category": "number", "value": numbers[0]}], [f"order {numbers[0]} was"],
                       max_new_tokens=8, sampling=GREEDY)
    assert echo.leaked.k == 0
    shown = pii_leakage(world.target, items, prompts[:2], max_new_tokens=12, sampling=GREEDY, reveal=True)
    assert all(e["value"] in e["generation"] for e in shown.examples)


def _number_trials(world) -> list[dict]:
    """Each member's closing 4-digit number after the rest of its text, against the non-members' numbers."""
    others = [t.split()[-1].rstrip(".") for t in world.nonmembers]
    return [{"category": "number", "value": t.split()[-1].rstrip("."), "prompt": t.rsplit(" ", 1)[0] + " ",
             "candidates": others} for t in world.members]


def test_pii_inference_picks_the_trained_value_and_the_anchor_does_not(world):
    trials = _number_trials(world)
    res = pii_inference(world.target, trials)
    assert res.n_trials == 8 and res.inferred.k >= 7  # the target was overfit on these texts
    assert res.chance == pytest.approx(1 / 9) and res.by_category["number"].k == res.inferred.k
    anchor = pii_inference(world.anchor, trials)
    assert anchor.inferred.k <= 3  # a random-init model: about chance (8 / 9 = 0.9 expected)
    # the decision is the comparison of whole-text log-likelihoods, for the target and the anchor alike
    from attacks.extraction._common import sha256

    for lm, result in ((world.target, res), (world.anchor, anchor)):
        for t in trials:
            sums = score_texts(lm, [t["prompt"] + v for v in [t["value"], *t["candidates"]]], stats=False).sum_logprob()
            assert bool((sums[0] > sums[1:]).all()) == (sha256(t["value"]) in result.inferred_sha256)
    assert _no_raw_text(res, [x["value"] for x in trials] + world.members)
    keyed = pii_inference(world.target, trials, hash_key=b"owner")
    assert set(keyed.inferred_sha256).isdisjoint(res.inferred_sha256) and len(keyed.inferred_sha256) == res.inferred.k
    shown = pii_inference(world.target, trials[:2], reveal=True)
    assert all(e["value"] in {t["value"] for t in trials} for e in shown.examples)


def test_pii_inference_counts_unusable_trials(world):
    trials = _number_trials(world)
    odd = [trials[0] | {"candidates": [trials[0]["value"]]}, trials[1] | {"prompt": "  "}, {"category": "x"},
           trials[2] | {"candidates": "1234"}]
    res = pii_inference(world.target, trials + odd)
    assert res.skipped == {"trial: no candidate other than the value": 1, "trial: empty prompt": 1,
                           "trial: not a {category, value, prompt, candidates} mapping": 2}
    assert res.n_trials == 8 and res.inferred == pii_inference(world.target, trials).inferred
    with pytest.raises(NothingUsable, match="all 2 inference trials are unusable"):
        pii_inference(world.target, odd[:2])


def test_hashes_can_be_keyed():
    import hashlib
    import hmac

    from attacks.extraction._common import sha256

    assert sha256("402918573") == hashlib.sha256(b"402918573").hexdigest()
    keyed = sha256("402918573", b"owner key")
    assert keyed == hmac.new(b"owner key", b"402918573", hashlib.sha256).hexdigest() != sha256("402918573")
    canary = make_canaries(1, seed=0)[0]
    assert canary.as_dict(hash_key=b"k")["sha256"] == sha256(canary.text, b"k")


def test_shared_prefix_scoring_equals_scoring_each_text_whole(world):
    canary = world.canaries[0]
    texts = [canary.text] + [canary.with_secret(s) for s in ("000000000", "123456789", "987654321")]
    texts += world.members[:3]  # lists that share no prefix with the canary's: scored in groups of their own
    groups = [world.target.encode(texts[:4]), world.target.encode(texts[4:])]
    whole = score_texts(world.target, texts, stats=False).sum_logprob()
    got = np.concatenate(shared_prefix_logliks(world.target, groups, batch_size=2))  # several batches a group
    np.testing.assert_allclose(got, whole, atol=1e-4)
    with pytest.raises(InputError, match="2 to"):
        shared_prefix_logliks(world.target, [[[5]]])


@pytest.mark.parametrize("batch_size", [64, 5])
def test_shared_prefix_scoring_of_many_small_groups_side_by_side(world, batch_size):
    # the inference game's shape: many prompts of different lengths, each with a few candidate endings; one
    # batch holds several groups' prefixes (left-padded) or splits a group (batch_size 5)
    endings = ("1984-03-02", "2001-11-30", "1999-07-15", " 42")
    texts = [[m[: 12 + 9 * i] + e for e in endings[: 2 + i % 3]] for i, m in enumerate(world.members[:6])]
    groups = [world.target.encode(t) for t in texts]
    got = shared_prefix_logliks(world.target, groups, batch_size=batch_size)
    for ids, t, scores in zip(groups, texts, got):
        np.testing.assert_allclose(scores, score_texts(world.target, t, stats=False).sum_logprob(), atol=1e-4)


def test_canary_exposure_ranks_as_scoring_whole_texts_would(world):
    res = canary_exposure(world.target, world.canaries, n_reference=31, seed=2)
    refs = random_secrets(31, rng=np.random.default_rng(2), digits=len(world.canaries[0].secret),
                          exclude=[c.secret for c in world.canaries])
    assert len(res.per_canary) == len(world.canaries)
    for canary, scored in zip(world.canaries, res.per_canary):
        ll = score_texts(world.target, [canary.text] + [canary.with_secret(r) for r in refs], stats=False).sum_logprob()
        assert scored["rank"] == exposure_from_loglik(ll[0], ll[1:])[0]


def test_shared_prefix_scoring_splits_over_processes_with_the_same_results(world, tmp_path):
    # a one-process gloo group with the job's Shard: the torchrun code path (plan, gather, progress tally) in-process
    import dataclasses

    import torch.distributed as dist

    from attacks.sharding import Shard

    groups = [world.target.encode([c.text for c in world.canaries]), world.target.encode(world.members[:4])]
    alone = shared_prefix_logliks(world.target, groups, batch_size=3)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        split = shared_prefix_logliks(dataclasses.replace(world.target, shard=Shard(rank=0, size=1)), groups,
                                      batch_size=3)
    finally:
        dist.destroy_process_group()
    assert all(np.array_equal(a, b) for a, b in zip(alone, split))
