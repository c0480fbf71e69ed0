"""Issue 15: every function that takes many texts, prompts or canaries skips the unusable ones, counts them
in its result (`n_skipped`, `skipped` by reason, also in `as_dict()`), and raises only when nothing is left.

Each test compares the batch with unusable items against the same call on the usable items alone, so the
skipping is checked to change nothing else.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from attacks import (
    GREEDY,
    Canary,
    NothingUsable,
    ScoreCache,
    blind_baseline,
    canary_exposure,
    discoverable_extraction,
    generate,
    metrics,
    pii_leakage,
    probabilistic_extraction,
    run_membership,
    sampled_extraction,
    score_texts,
)
from attacks import testing as tiny

from .test_membership import fake_cache


def _one_token_word(lm) -> str:
    word = next(w for w in ("order", "parcel", "ledger") if len(lm.encode([w])[0]) == 1)
    return word


def _one_clear_line(info) -> str:
    message = info.value.message
    assert "\n" not in message and info.value.exit_code == 2
    return message


# ----------------------------------------------------------------------------- scoring and membership
def test_score_texts_skips_empty_and_one_word_texts_and_scores_the_rest(world, tmp_path):
    """The issue's case: one empty and one one-word text no longer refuse the whole batch."""
    lm = world.target
    word = _one_token_word(lm)
    batch = [world.members[0], "", world.nonmembers[0], word, None, world.members[1]]
    cache = score_texts(lm, batch)
    clean = score_texts(lm, [world.members[0], world.nonmembers[0], world.members[1]])
    assert len(cache) == 3 and cache.n_input == 6 and cache.source_index.tolist() == [0, 2, 5]
    assert cache.n_skipped == 3 and cache.skipped == {"fewer than 2 tokens": 2, "not a string": 1}
    assert cache.text_sha256 == clean.text_sha256 and np.allclose(cache.logprobs_flat, clean.logprobs_flat, atol=1e-6)
    cache.save(tmp_path / "c.npz")
    back = ScoreCache.load(tmp_path / "c.npz")
    assert back.skipped == cache.skipped and back.n_input == 6 and back.source_index.tolist() == [0, 2, 5]


def test_score_texts_raises_one_clear_error_only_when_nothing_is_left(world):
    word = _one_token_word(world.target)
    with pytest.raises(NothingUsable) as info:
        score_texts(world.target, ["", word, None])
    message = _one_clear_line(info)
    assert "all 3 texts are unusable (2 fewer than 2 tokens, 1 not a string)" in message
    assert info.value.n_skipped == 3
    with pytest.raises(NothingUsable, match="no texts given"):
        score_texts(world.target, [])


def test_run_membership_takes_labels_per_given_text_and_counts_the_skipped(world):
    word = _one_token_word(world.target)
    texts = world.members[:4] + ["", word] + world.nonmembers[:4]
    labels = [True] * 5 + [False] * 5  # the empty text is a "member", the one-word text a "non-member"
    target, anchor = score_texts(world.target, texts), score_texts(world.anchor, texts)
    report = run_membership(target, anchor, is_member=labels, attacks=["FA-MIA-LOSS", "FA-MIA-REF"], n_bootstrap=20)
    clean_texts = world.members[:4] + world.nonmembers[:4]
    clean = run_membership(score_texts(world.target, clean_texts), score_texts(world.anchor, clean_texts),
                           is_member=[True] * 4 + [False] * 4, attacks=["FA-MIA-LOSS", "FA-MIA-REF"], n_bootstrap=20)
    assert (report.n_members, report.n_nonmembers) == (4, 4)
    assert report.n_skipped == 2 and report.skipped == {"fewer than 2 tokens": 2}
    assert report["FA-MIA-REF"].auc == clean["FA-MIA-REF"].auc
    assert np.allclose(report["FA-MIA-LOSS"].member_scores, clean["FA-MIA-LOSS"].member_scores)
    d = report.as_dict()
    assert d["n_skipped"] == 2 and d["skipped"] == {"fewer than 2 tokens": 2}
    assert d["results"]["FA-MIA-LOSS"]["n_skipped"] == 0


def test_run_membership_raises_only_without_usable_members_or_non_members(world):
    word = _one_token_word(world.target)
    cache = score_texts(world.target, world.members[:3] + ["", word])
    with pytest.raises(NothingUsable) as info:
        run_membership(cache, is_member=[True, True, True, False, False], attacks=["FA-MIA-LOSS"])
    message = _one_clear_line(info)
    assert "no usable non-members" in message and "2 fewer than 2 tokens" in message


def test_texts_another_model_could_not_score_are_skipped_and_named():
    target = fake_cache([[-1.0, -2.0], [-0.5, -0.1], [-3.0, -2.0], [-0.2, -0.3]])
    reference = dataclasses.replace(target.subset([0, 1, 3]), skipped={"fewer than 2 tokens": 1})
    shadow = dataclasses.replace(target.subset([0, 2, 3]), skipped={"fewer than 2 tokens": 1})
    report = run_membership(target, reference, is_member=[True, True, False, False], shadows=[shadow],
                            attacks=["FA-MIA-REF", "FA-MIA-LIRA"], n_bootstrap=10)
    assert (report.n_members, report.n_nonmembers) == (1, 1)
    assert report.skipped == {"unusable under the reference model": 1, "unusable under the shadow model 1": 1}
    assert report["FA-MIA-LIRA"].ok and report["FA-MIA-REF"].ok


def test_non_finite_scores_are_skipped_per_attack():
    # a token of probability 0 (log-probability -inf): that text has no finite LOSS score
    target = fake_cache([[-1.0, -np.inf], [-0.5, -0.1], [-0.4, -0.2], [-3.0, -2.0], [-2.5, -2.0]])
    report = run_membership(target, is_member=[True, True, True, False, False], attacks=["FA-MIA-LOSS"],
                            n_bootstrap=10)
    loss = report["FA-MIA-LOSS"]
    assert loss.ok and loss.skipped == {"non-finite score": 1} and loss.member_scores.size == 2
    assert loss.as_dict()["n_skipped"] == 1 and report.n_members == 3  # the text is usable for other attacks
    gone = run_membership(fake_cache([[-np.inf, -1.0], [-0.5, -0.1], [-3.0, -2.0]]), is_member=[True, False, False],
                          attacks=["FA-MIA-LOSS"], n_bootstrap=10)["FA-MIA-LOSS"]
    assert gone.status == "not_run" and "members" in gone.reason and gone.n_skipped == 1


# ----------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("attack", [discoverable_extraction, probabilistic_extraction])
def test_window_attacks_skip_short_documents_and_non_texts(world, attack):
    batch = [world.members[0], "too short", None, world.members[1]]
    result = attack(world.target, batch, prefix_len=6, suffix_len=6)
    clean = attack(world.target, [world.members[0], world.members[1]], prefix_len=6, suffix_len=6)
    assert result.n_documents == 2 and result.n_skipped == 2
    assert result.skipped == {"shorter than the 12-token window": 1, "not a string": 1}
    assert [d["offset"] for d in result.per_document] == [0, None, None, 0]
    kept = [result.per_document[i] for i in (0, 3)]
    assert kept == clean.per_document
    d = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert d["n_skipped"] == 2 and d["skipped"]["not a string"] == 1
    with pytest.raises(NothingUsable) as info:
        attack(world.target, ["too short", "", None], prefix_len=6, suffix_len=6)
    assert "all 3 documents are unusable" in _one_clear_line(info)


def test_sampled_extraction_skips_short_documents(world):
    kw = dict(prefix_len=4, window_len=12, n_samples=2, seed=5, offset="start")
    result = sampled_extraction(world.target, ["x", world.members[2], ""], **kw)
    clean = sampled_extraction(world.target, [world.members[2]], **kw)
    assert result.skipped == {"shorter than the 12-token window": 2} and result.n_documents == 1
    assert result.extracted == clean.extracted and result.as_dict()["n_skipped"] == 2
    with pytest.raises(NothingUsable):
        sampled_extraction(world.target, ["x"], **kw)


def test_generate_skips_empty_and_too_long_prompts(world):
    lm = world.target
    ok = lm.encode(world.members[:1])[0][:5]
    too_long = list(range(1, lm.context_length))  # leaves no room for 4 new tokens
    out = generate(lm, [[], ok, too_long], max_new_tokens=4)
    assert out[0] is None and out[2] is None and np.array_equal(out[1], generate(lm, [ok], max_new_tokens=4)[0])
    room = lm.context_length - 4
    assert out.n_skipped == 2 and out.skipped == {"no tokens": 1, f"longer than the {room} tokens the context leaves": 1}
    with pytest.raises(NothingUsable) as info:
        generate(lm, [[], too_long], max_new_tokens=4)
    assert "all 2 prompts are unusable" in _one_clear_line(info)


def test_canary_exposure_skips_malformed_canaries(world):
    good = world.canaries
    bad = [Canary(owner="Ada", secret="12ab56789"), Canary(owner="Bo", secret="1234"), "not a canary",
           Canary(owner="Cy", secret="123456789", template="{secret} is first")]
    result = canary_exposure(world.target, good[:3] + bad + good[3:], n_reference=15, seed=1)
    clean = canary_exposure(world.target, good, n_reference=15, seed=1)
    assert result.n_canaries == len(good) and result.n_skipped == 4
    assert set(result.skipped) == {"secret is not a digit string", "secret not of the batch's 9-digit length",
                                   "not a Canary", "template without text before {secret} (the first token is never scored)"}
    assert result.per_canary == clean.per_canary and result.epsilon_one_run == clean.epsilon_one_run
    assert result.as_dict()["n_skipped"] == 4
    with pytest.raises(NothingUsable) as info:
        canary_exposure(world.target, bad[:1] + bad[2:], n_reference=5)
    assert "all 3 canaries are unusable" in _one_clear_line(info)


def test_pii_leakage_skips_malformed_items_and_unusable_prompts(world):
    numbers = [t.split()[-1].rstrip(".") for t in world.members]
    items = [{"category": "number", "value": v} for v in numbers]
    prompts = [" ".join(t.split()[:8]) for t in world.members[:3]]
    kw = dict(max_new_tokens=12, sampling=GREEDY)
    result = pii_leakage(world.target, items + ["oops", {"category": "number"}], [""] + prompts + [None], **kw)
    clean = pii_leakage(world.target, items, prompts, **kw)
    assert result.skipped == {"personal-data item: not a {category, value} mapping": 2,
                              "prompt: no tokens": 1, "prompt: not a string": 1}
    assert result.n_skipped == 4 and result.n_prompts == 3 and result.leaked == clean.leaked
    assert result.as_dict()["skipped"] == result.skipped
    with pytest.raises(NothingUsable) as info:
        pii_leakage(world.target, items, ["", None], **kw)
    assert "all 2 prompts are unusable" in _one_clear_line(info)
    with pytest.raises(NothingUsable, match="personal-data items"):
        pii_leakage(world.target, [{"category": "code", "value": "7"}], prompts, **kw)


# ----------------------------------------------------------------------------- hygiene and metrics
def test_blind_baseline_skips_empty_texts():
    texts = tiny.synthetic_texts(40, seed=4)
    result = blind_baseline(texts[:20] + ["", "  "], [None] + texts[20:], n_bootstrap=50)
    clean = blind_baseline(texts[:20], texts[20:], n_bootstrap=50)
    assert result.auc == clean.auc and (result.n_members, result.n_nonmembers) == (20, 20)
    assert result.skipped == {"member: empty or whitespace only": 2, "non-member: not a string": 1}
    assert result.as_dict()["n_skipped"] == 3
    with pytest.raises(NothingUsable) as info:
        blind_baseline(texts[:5], ["", texts[5]])
    assert "got 5 and 1" in _one_clear_line(info)


def test_epsilon_one_run_skips_canaries_without_a_score_or_a_flag():
    rng = np.random.default_rng(0)
    included = rng.random(40) < 0.5
    scores = rng.normal(0, 1, 40) + 3 * included
    bound = metrics.epsilon_one_run(list(scores) + [np.nan, 1.0], list(included) + [True, None])
    clean = metrics.epsilon_one_run(scores, included)
    assert bound.epsilon == clean.epsilon and bound.details["m"] == 40
    assert bound.details["skipped"] == {"non-finite score": 1, "inclusion unknown": 1}
    with pytest.raises(NothingUsable):
        metrics.epsilon_one_run([np.nan], [True])
