"""Membership attacks on hand-made ScoreCaches (golden values) and the run_membership contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from attacks import (
    InputError,
    MissingAttackInput,
    ScoreCache,
    get_attack,
    list_attacks,
    register_attack,
    run_membership,
)
from attacks.membership import MembershipContext
from attacks.registry import unregister_attack


def fake_cache(logprobs, *, mu=None, var=None, zlib=None, scored_bytes=None, fingerprint="tok", names=None):
    """A ScoreCache with the given per-text token log-probs (and Min-K%++ moments)."""
    n = len(logprobs)
    offs = np.concatenate([[0], np.cumsum([len(x) for x in logprobs])]).astype(np.int64)
    flat = lambda xs: np.concatenate([np.asarray(x, dtype=float) for x in xs])  # noqa: E731
    tok_offs = offs + np.arange(n + 1)  # one more token than scored positions
    return ScoreCache(
        text_sha256=names or [f"{i:064x}" for i in range(n)], token_ids_flat=np.zeros(tok_offs[-1], np.int64),
        token_offsets=tok_offs, logprobs_flat=flat(logprobs), offsets=offs,
        mu_flat=flat(mu) if mu is not None else None, var_flat=flat(var) if var is not None else None,
        scored_bytes=np.asarray(scored_bytes or [10] * n, dtype=np.int64),
        zlib_bytes=np.asarray(zlib or [10] * n, dtype=np.int64), truncated=np.zeros(n, bool),
        tokenizer_fingerprint=fingerprint)


def score(attack_id, ctx, **params):
    spec = get_attack(attack_id)
    return spec.func(ctx, **{**spec.defaults, **params})


def test_registry_lists_every_attack_with_stable_ids():
    ids = {s.id for s in list_attacks()}
    assert {"FA-MIA-LOSS", "FA-MIA-ZLIB", "FA-MIA-MINK", "FA-MIA-MINKPP", "FA-MIA-REF", "FA-MIA-RMIA",
            "FA-MIA-LIRA"} == {s.id for s in list_attacks("membership")}
    assert {"FA-EXT-DISC", "FA-EXT-SAMPLED", "FA-EXT-PROB", "FA-EXT-CANARY", "FA-EXT-PII"} <= ids
    assert all(s.citation for s in list_attacks())
    assert get_attack("FA-MIA-LIRA").needs == {"shadows"}


def test_duplicate_registration_raises_and_force_replaces():
    with pytest.raises(ValueError, match="already registered"):
        register_attack("FA-MIA-LOSS", name="again")(lambda ctx: None)
    try:
        register_attack("FA-MIA-TEST", name="test")(lambda ctx: ctx.target.mean_logprob())
        register_attack("FA-MIA-TEST", name="test2", force=True)(lambda ctx: -ctx.target.mean_logprob())
        assert get_attack("FA-MIA-TEST").name == "test2"
    finally:
        unregister_attack("FA-MIA-TEST")
    with pytest.raises(InputError, match="unknown attack"):
        get_attack("FA-MIA-NOPE")


def test_loss_zlib_mink_golden():
    ctx = MembershipContext(fake_cache([[-1, -2, -3, -4], [-0.5, -0.5]], zlib=[5, 2]))
    assert score("FA-MIA-LOSS", ctx).tolist() == [-2.5, -0.5]
    assert score("FA-MIA-ZLIB", ctx).tolist() == [-0.5, -0.25]
    assert score("FA-MIA-MINK", ctx, k=0.5).tolist() == [-3.5, -0.5]    # 2 lowest of 4; 1 of 2
    assert score("FA-MIA-MINK", ctx, k=0.2).tolist() == [-4.0, -0.5]    # floor(0.8) = 0 -> at least one
    assert score("FA-MIA-MINK", ctx, k=1.0).tolist() == [-2.5, -0.5]    # k = 100% is LOSS


def test_min_k_plus_plus_golden():
    # z = (logp - mu) / sigma = [(-1+1)/1, (-2+1)/2, (-3+1)/1] = [0, -0.5, -2]
    ctx = MembershipContext(fake_cache([[-1, -2, -3]], mu=[[-1, -1, -1]], var=[[1, 4, 1]]))
    assert score("FA-MIA-MINKPP", ctx, k=0.5).tolist() == [-2.0]
    assert score("FA-MIA-MINKPP", ctx, k=1.0)[0] == pytest.approx(-2.5 / 3)
    one_hot = MembershipContext(fake_cache([[0.0]], mu=[[0.0]], var=[[0.0]]))  # sigma = 0: finite, 0
    assert score("FA-MIA-MINKPP", one_hot).tolist() == [0.0]
    with pytest.raises(InputError, match="stats"):
        score("FA-MIA-MINKPP", MembershipContext(fake_cache([[-1.0]])))


def test_reference_attack_same_and_different_tokenizers():
    target = fake_cache([[-1, -1], [-4]], scored_bytes=[4, 2])
    same = fake_cache([[-2, -4], [-1]], scored_bytes=[4, 2])
    assert score("FA-MIA-REF", MembershipContext(target, same)).tolist() == [2.0, -3.0]  # per-token means
    other = fake_cache([[-2, -4, -2]], fingerprint="other", scored_bytes=[4])
    t1 = fake_cache([[-1, -1]], scored_bytes=[4])
    # different tokenizers: log-likelihood per byte, (-2)/4 - (-8)/4
    assert score("FA-MIA-REF", MembershipContext(t1, other)).tolist() == [1.5]
    with pytest.raises(MissingAttackInput, match="reference"):
        score("FA-MIA-REF", MembershipContext(target))


def test_rmia_golden():
    # a = 1 makes Pr(x) = Pr(x|ref), so log LR(x) = mean log p_target - mean log p_ref = [2, 0, 1, -1]
    target = fake_cache([[2.0], [0.0], [1.0], [-1.0]])
    ref = fake_cache([[0.0], [0.0], [0.0], [0.0]])
    labels = np.array([True, True, False, False])  # population = texts 2 and 3, each left out of its own
    rep = run_membership(target, ref, is_member=labels, attacks=["FA-MIA-RMIA"], n_bootstrap=10,
                         params={"FA-MIA-RMIA": {"a": 1.0, "gamma": 1.0}})
    r = rep["FA-MIA-RMIA"]
    assert r.member_scores.tolist() == [1.0, 0.5] and r.nonmember_scores.tolist() == [1.0, 0.0]
    rep = run_membership(target, ref, is_member=labels, attacks=["FA-MIA-RMIA"], n_bootstrap=10,
                         params={"FA-MIA-RMIA": {"a": 1.0, "gamma": math.exp(1.5)}})
    r = rep["FA-MIA-RMIA"]  # LR >= e^1.5: x0 beats only x3 (2 - (-1) = 3); x2 beats x3 (2)
    assert r.member_scores.tolist() == [0.5, 0.0] and r.nonmember_scores.tolist() == [1.0, 0.0]


def test_rmia_offline_marginal_matches_brute_force():
    rng = np.random.default_rng(0)
    t, rf = rng.normal(-3, 1, 12), rng.normal(-3, 1, 12)
    labels = np.arange(12) < 6
    a, gamma = 0.33, 1.2
    rep = run_membership(fake_cache([[x] for x in t]), fake_cache([[x] for x in rf]), is_member=labels,
                         attacks=["FA-MIA-RMIA"], params={"FA-MIA-RMIA": {"a": a, "gamma": gamma}}, n_bootstrap=10)
    ratio = np.exp(t) / (0.5 * ((1 + a) * np.exp(rf) + (1 - a)))
    expected = []
    for i in range(12):
        zs = [j for j in range(6, 12) if j != i]
        expected.append(np.mean([ratio[i] / ratio[j] >= gamma for j in zs]))
    got = np.r_[rep["FA-MIA-RMIA"].member_scores, rep["FA-MIA-RMIA"].nonmember_scores]
    assert got.tolist() == pytest.approx(expected)


def test_lira_needs_shadows_and_matches_gaussian_formula():
    target = fake_cache([[-0.1], [-2.0]])
    with pytest.raises(MissingAttackInput, match="shadow"):
        score("FA-MIA-LIRA", MembershipContext(target))
    shadows = tuple(fake_cache([[a], [b]]) for a, b in [(-1.0, -2.0), (-2.0, -2.5), (-3.0, -1.5)])
    phi = lambda lp: lp - math.log(1 - math.exp(lp))  # noqa: E731
    got = score("FA-MIA-LIRA", MembershipContext(target, shadows=shadows), per_example_variance_from=2)
    out0, out1 = [phi(x) for x in (-1, -2, -3)], [phi(x) for x in (-2, -2.5, -1.5)]
    assert got[0] == pytest.approx(stats.norm.logcdf(phi(-0.1), np.median(out0), np.std(out0)))
    assert got[1] == pytest.approx(stats.norm.logcdf(phi(-2.0), np.median(out1), np.std(out1)))
    fixed = score("FA-MIA-LIRA", MembershipContext(target, shadows=shadows))  # < 64 shadows: pooled std
    pooled = np.std(out0 + out1)
    assert fixed[1] == pytest.approx(stats.norm.logcdf(phi(-2.0), np.median(out1), pooled))
    with pytest.raises(InputError, match="different texts"):
        score("FA-MIA-LIRA", MembershipContext(target, shadows=(fake_cache([[-1.0]]),)))


def _labelled():
    rng = np.random.default_rng(0)
    members = [list(rng.normal(-0.5, 0.3, 6)) for _ in range(20)]
    nonmembers = [list(rng.normal(-2.0, 0.3, 6)) for _ in range(20)]
    all_lp = members + nonmembers
    target = fake_cache(all_lp, mu=[[-1.0] * 6] * 40, var=[[1.0] * 6] * 40)
    ref = fake_cache([[-2.0] * 6] * 40)
    return target, ref, np.arange(40) < 20


def test_run_membership_runs_all_and_reports_what_could_not_run():
    target, ref, labels = _labelled()
    rep = run_membership(target, ref, is_member=labels, n_bootstrap=50)
    assert rep.n_members == rep.n_nonmembers == 20
    assert rep["FA-MIA-LIRA"].status == "not_run" and "shadow" in rep["FA-MIA-LIRA"].reason
    for attack_id in ("FA-MIA-LOSS", "FA-MIA-ZLIB", "FA-MIA-MINK", "FA-MIA-MINKPP", "FA-MIA-REF", "FA-MIA-RMIA"):
        r = rep[attack_id]
        assert r.ok and r.auc > 0.9, attack_id  # one convention: higher = member, so AUC > 0.5
        assert [t.target_fpr for t in r.tpr_at_fpr] == [0.1, 0.01, 0.001]
        assert any("1/FPR" in w for w in r.warnings)  # 20 non-members are too few for 1% FPR
    assert rep.worst_case().auc == max(r.auc for r in rep if r.ok)
    d = rep.as_dict()
    json.dumps(d, allow_nan=False)
    assert d["results"]["FA-MIA-LIRA"]["status"] == "not_run"
    assert "member_scores" not in rep.as_dict(include_scores=False)["results"]["FA-MIA-LOSS"]


def test_run_membership_errors():
    target, ref, labels = _labelled()
    with pytest.raises(MissingAttackInput):  # asked for by name: raise rather than skip
        run_membership(target, None, is_member=labels, attacks=["FA-MIA-REF"])
    with pytest.raises(InputError, match="flags"):
        run_membership(target, ref, is_member=labels[:5])
    with pytest.raises(InputError, match="both members and non-members"):
        run_membership(target, ref, is_member=np.ones(40, bool))
    with pytest.raises(InputError, match="different texts"):
        run_membership(target, ref.subset(range(39)), is_member=labels)
    with pytest.raises(InputError, match="not run"):
        run_membership(target, ref, is_member=labels, attacks=["FA-MIA-LOSS"], params={"FA-MIA-MINK": {"k": 0.1}})
    rep = run_membership(target, ref, is_member=labels, attacks=["FA-MIA-MINK"], params={"FA-MIA-MINK": {"k": 0.5}},
                         n_bootstrap=10)
    assert rep["FA-MIA-MINK"].params == {"k": 0.5}


def test_cache_subset_and_roundtrip(tmp_path):
    c = fake_cache([[-1, -2], [-3], [-4, -5, -6]], mu=[[0, 0], [0], [0, 0, 0]], var=[[1, 1], [1], [1, 1, 1]])
    s = c.subset([2, 0])
    assert s.mean_logprob().tolist() == [-5.0, -1.5] and s.text_sha256 == [c.text_sha256[2], c.text_sha256[0]]
    c.save(tmp_path / "c.npz")
    back = ScoreCache.load(tmp_path / "c.npz")
    assert back.text_sha256 == c.text_sha256 and np.array_equal(back.logprobs_flat, c.logprobs_flat)
    assert np.array_equal(back.var_flat, c.var_flat) and back.tokenizer_fingerprint == "tok"
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError):
        ScoreCache.load(tmp_path / "bad.npz")
