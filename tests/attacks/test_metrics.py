"""Golden values for every metric, on inputs small enough to check by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from attacks import InputError, metrics


def test_clopper_pearson_closed_forms():
    # k = 0 and k = n have closed forms: (alpha/2)^(1/n)
    ci = metrics.clopper_pearson(k=0, n=10)
    assert ci.low == 0.0 and ci.high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)
    ci = metrics.clopper_pearson(k=10, n=10)
    assert ci.high == 1.0 and ci.low == pytest.approx(0.025 ** (1 / 10), abs=1e-12)
    ci = metrics.clopper_pearson(k=5, n=10)  # textbook value
    assert (ci.low, ci.high) == pytest.approx((0.187086, 0.812914), abs=1e-6)


def test_wilson_and_rate():
    ci = metrics.wilson(k=5, n=10)
    z = stats.norm.ppf(0.975)
    half = z / (1 + z * z / 10) * math.sqrt(0.025 + z * z / 400)
    assert (ci.low, ci.high) == pytest.approx((0.5 - half, 0.5 + half))
    assert (ci.low, ci.high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    r = metrics.rate(k=3, n=12)
    assert r.value == 0.25 and r.ci.method == "clopper-pearson"
    empty = metrics.rate(k=0, n=0)
    assert math.isnan(empty.value) and json.loads(json.dumps(empty.as_dict()))["value"] is None
    with pytest.raises(InputError):
        metrics.rate(k=1, n=2, method="bogus")


def test_auc_hand_computed_with_ties():
    # pairs (member, non-member): 3>1, 3>2, 2>1 win; 2=2 ties (counts 1/2) -> 3.5 / 4
    assert metrics.roc_auc([3, 2], [1, 2]) == 0.875
    assert metrics.roc_auc([1, 1], [1, 1]) == 0.5
    assert metrics.roc_auc([5, 6], [1, 2]) == 1.0
    assert metrics.roc_auc([1, 2], [5, 6]) == 0.0


def test_auc_equals_mann_whitney_u():
    rng = np.random.default_rng(0)
    m, n = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)  # many ties
    u = stats.mannwhitneyu(m, n, alternative="two-sided").statistic
    assert metrics.roc_auc(m, n) == pytest.approx(u / (40 * 30), abs=1e-12)


def test_auc_rejects_empty_and_nan():
    with pytest.raises(InputError):
        metrics.roc_auc([], [1.0])
    with pytest.raises(InputError):
        metrics.roc_auc([np.nan], [1.0])


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    m, n = rng.normal(1, 1, 50), rng.normal(0, 1, 50)
    a = metrics.bootstrap_auc_ci(m, n, n_boot=300, seed=3)
    b = metrics.bootstrap_auc_ci(m, n, n_boot=300, seed=3)
    assert a == b and a.low < metrics.roc_auc(m, n) < a.high
    perfect = metrics.bootstrap_auc_ci([5, 6], [1, 2], n_boot=50)
    assert (perfect.low, perfect.high) == (1.0, 1.0)


@pytest.mark.parametrize("sizes", [(37, 29), (3000, 3000)])  # one block of resamples; two (333 per block)
def test_bootstrap_ranks_blocks_of_resamples_as_one_auc_per_resample_would(sizes):
    # the vectorised bootstrap against its definition: one roc_auc per resample, drawn in the same order
    rng = np.random.default_rng(7)
    m, n = rng.integers(0, 6, sizes[0]).astype(float), rng.integers(0, 6, sizes[1]).astype(float)  # many ties
    draws = np.random.default_rng(11)
    aucs = []
    for _ in range(400):
        mi, ni = draws.integers(0, m.size, m.size), draws.integers(0, n.size, n.size)
        aucs.append(metrics.roc_auc(m[mi], n[ni]))
    low, high = np.quantile(aucs, [0.025, 0.975])
    ci = metrics.bootstrap_auc_ci(m, n, n_boot=400, seed=11)
    assert (ci.low, ci.high) == pytest.approx((low, high), abs=1e-12)


def test_roc_curve_hand_computed():
    c = metrics.roc_curve([3, 2], [1, 2])
    assert c.fpr.tolist() == [0, 0, 0.5, 1]
    assert c.tpr.tolist() == [0, 0.5, 1, 1]
    assert c.thresholds.tolist() == [np.inf, 3, 2, 1]


def test_roc_points_downsampled_keeps_envelope():
    rng = np.random.default_rng(2)
    m, n = rng.normal(1, 1, 3000), rng.normal(0, 1, 3000)
    full, pts = metrics.roc_curve(m, n), metrics.roc_points(m, n, max_points=50)
    assert pts.fpr.size <= 50 and pts.fpr[0] == 0 and pts.fpr[-1] == 1 and pts.tpr[-1] == 1
    assert np.all(np.diff(pts.fpr) > 0) and np.all(np.diff(pts.tpr) >= 0)
    for f, t in zip(pts.fpr, pts.tpr):  # each kept point is the best TPR at FPR <= f
        assert t == full.tpr[full.fpr <= f].max()


def test_tpr_at_fpr_hand_computed():
    non = np.arange(10.0)                      # 0..9
    mem = np.array([9.5, 8.5, 3.0, 100.0])
    r = metrics.tpr_at_fpr(mem, non, fpr=0.1)      # one false positive allowed: threshold 8, member iff > 8
    assert (r.tpr, r.fpr, r.threshold) == (0.75, 0.1, 8.0)
    assert r.tpr_ci == metrics.clopper_pearson(k=3, n=4) and r.fpr_ci == metrics.clopper_pearson(k=1, n=10)
    assert "10/FPR" in r.warning               # 10 non-members: >= 1/FPR but < 10/FPR
    r = metrics.tpr_at_fpr(mem, non, fpr=0.01)     # none allowed: threshold 9
    assert (r.tpr, r.fpr, r.threshold) == (0.5, 0.0, 9.0) and "1/FPR" in r.warning
    assert metrics.tpr_at_fpr(mem, np.arange(1000.0), fpr=0.1).warning is None
    assert metrics.tpr_at_fpr(mem, non, fpr=1.0).tpr == 1.0
    assert [t.target_fpr for t in metrics.tpr_at_fprs(mem, non)] == [0.1, 0.01, 0.001]


def test_epsilon_from_counts_golden():
    # perfect test on 100 + 100: FPR_hi = FNR_hi = 1 - 0.025^(1/100) (one-sided CP at alpha/2 = 0.025)
    hi = 1 - 0.025 ** (1 / 100)
    eps = metrics.epsilon_from_counts(tp=100, n_members=100, fp=0, n_nonmembers=100, alpha=0.05)
    assert float(eps) == pytest.approx(math.log((1 - hi) / hi), rel=1e-9)
    eps_d = metrics.epsilon_from_counts(tp=100, n_members=100, fp=0, n_nonmembers=100, delta=0.01)
    assert float(eps_d) == pytest.approx(math.log((1 - 0.01 - hi) / hi), rel=1e-9)
    # a useless test (TPR = FPR) bounds nothing
    assert float(metrics.epsilon_from_counts(tp=50, n_members=100, fp=50, n_nonmembers=100)) == 0.0


def test_epsilon_split_evaluates_on_held_out_half():
    m, n = np.arange(100.0) + 1000, np.arange(100.0)  # perfectly separable
    b = metrics.epsilon_lower_bound_split(m, n, seed=0)
    d = b.details
    assert (d["tp"], d["fp"], d["n_members_eval"], d["n_nonmembers_eval"]) == (50, 0, 50, 50)
    hi = 1 - 0.025 ** (1 / 50)
    assert b.epsilon == pytest.approx(math.log((1 - hi) / hi), rel=1e-9)
    assert b.method == "clopper-pearson-split" and b.confidence == 0.95
    rng = np.random.default_rng(0)
    null = metrics.epsilon_lower_bound_split(rng.normal(size=400), rng.normal(size=400), seed=1)
    assert null.epsilon < 0.5
    json.dumps(b.as_dict(), allow_nan=False)


def _paper_p_value(m, r, v, eps, delta):
    """Steinke, Nasr, Jagielski 2023, Appendix D, verbatim (loop form)."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0, 0
    for i in range(1, v + 1):
        total = total + stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return min(beta + alpha * delta * 2 * m, 1)


def test_one_run_p_value_matches_paper_code():
    for m, r, v, eps, delta in [(1000, 100, 90, 1.5, 1e-5), (200, 50, 40, 0.7, 1e-3), (50, 10, 10, 3.0, 0.0)]:
        assert metrics.one_run_p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) == pytest.approx(
            _paper_p_value(m, r, v, eps, delta), rel=1e-10)


def test_one_run_epsilon_closed_form():
    # all r guesses right, delta = 0: p = q^r < beta  <=>  q < beta^(1/r)  =>  eps = logit(beta^(1/r))
    q = 0.05 ** (1 / 100)
    assert metrics.one_run_epsilon(m=100, r=100, v=100, beta=0.05) == pytest.approx(math.log(q / (1 - q)), abs=1e-9)
    assert metrics.one_run_epsilon(m=100, r=100, v=50) == 0.0  # chance accuracy proves nothing
    with_delta = metrics.one_run_epsilon(m=100, r=100, v=100, delta=1e-4)
    assert 0 < with_delta < math.log(q / (1 - q))  # delta can only weaken the bound


def test_epsilon_one_run_guesses():
    scores = np.arange(20.0)
    members = scores >= 10  # the top 10 are exactly the included canaries
    b = metrics.epsilon_one_run(scores, members, k_pos=5, k_neg=5)
    assert (b.details["guesses"], b.details["correct"]) == (10, 10)
    assert b.epsilon == pytest.approx(metrics.one_run_epsilon(m=20, r=10, v=10))
    grid = metrics.epsilon_one_run(scores, members)  # k chosen on a grid, Bonferroni-corrected
    assert grid.details["beta_per_test"] < 0.05 and grid.epsilon > 0
    flipped = metrics.epsilon_one_run(scores, ~members, k_pos=5, k_neg=5)
    assert flipped.epsilon == 0.0
    with pytest.raises(InputError):
        metrics.epsilon_one_run(scores, members, k_pos=15, k_neg=10)
