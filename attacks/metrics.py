"""Metrics for privacy attacks: pure numpy/scipy functions, one convention (higher score = member).

* `roc_auc`: area under the ROC curve = Mann-Whitney U / (n_members * n_nonmembers), ties count 1/2.
* `bootstrap_auc_ci`: percentile bootstrap, resampling members and non-members separately (seeded).
* `roc_curve`, `roc_points`: the empirical ROC (member iff score >= t) and a log-spaced subsample of
  it for log-log plots (Carlini et al. 2022, "Membership Inference Attacks From First Principles").
* `tpr_at_fpr`: TPR at the best threshold whose *empirical* FPR is <= the target (non-randomised),
  with Clopper-Pearson intervals, and a warning when there are fewer than 1/FPR (or 10/FPR)
  non-members, because then the figure is really TPR at FPR 0, or very noisy.
* `rate`: k of n with an exact Clopper-Pearson (or Wilson) interval, for extraction rates.
* `epsilon_lower_bound_split`: hypothesis-testing bound (Kairouz et al. 2015; Jagielski et al. 2020;
  Nasr et al. 2021) with Clopper-Pearson FPR/FNR upper bounds, the threshold chosen on one half of
  the data and the bound evaluated on the other half (no selection bias), as jax_privacy's `Split`.
* `one_run_epsilon` / `epsilon_one_run`: Steinke, Nasr, Jagielski (NeurIPS 2023), "Privacy Auditing
  with One (1) Training Run", Appendix D, with m canaries each included with probability 1/2.

Intervals are two-sided at `1 - alpha` unless the name says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import special, stats

from ._usable import NON_FINITE, partition, skip_fields
from .errors import InputError

DEFAULT_FPRS = (0.1, 0.01, 0.001)


# ----------------------------------------------------------------------------- small result types
@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float = 0.95
    method: str = "clopper-pearson"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rate:
    """k successes out of n trials, with a confidence interval."""

    k: int
    n: int
    value: float
    ci: Interval

    def as_dict(self) -> dict:
        return {"k": self.k, "n": self.n, "value": _f(self.value), "ci": self.ci.as_dict()}


@dataclass(frozen=True)
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def as_dict(self) -> dict:
        return {"fpr": [float(x) for x in self.fpr], "tpr": [float(x) for x in self.tpr]}


@dataclass(frozen=True)
class TprAtFpr:
    target_fpr: float
    tpr: float
    tpr_ci: Interval
    fpr: float          # FPR actually attained at the chosen threshold (<= target_fpr)
    fpr_ci: Interval
    threshold: float    # member iff score > threshold
    n_members: int
    n_nonmembers: int
    warning: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tpr_ci"], d["fpr_ci"] = self.tpr_ci.as_dict(), self.fpr_ci.as_dict()
        d["threshold"] = _f(self.threshold)
        return d


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical lower bound on epsilon: with confidence `confidence`, the mechanism is not
    (epsilon', delta)-DP for any epsilon' < `epsilon`."""

    epsilon: float
    delta: float
    confidence: float
    method: str
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"epsilon": _f(self.epsilon), "delta": self.delta, "confidence": self.confidence,
                "method": self.method, "details": {k: _f(v) if isinstance(v, float) else v
                                                   for k, v in self.details.items()}}


def _f(x: float) -> float | None:
    """JSON-safe float: NaN/inf become None (JSON has no NaN)."""
    return float(x) if x is not None and math.isfinite(x) else None


def _scores(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    n = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if m.size == 0 or n.size == 0:
        raise InputError("membership metrics need at least one member and one non-member score")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(n))):
        bad = int(np.sum(~np.isfinite(m)) + np.sum(~np.isfinite(n)))
        raise InputError(f"{bad} of {m.size + n.size} membership scores are NaN or infinite: leave them out "
                         "(run_membership does, and counts them)")
    return m, n


# ----------------------------------------------------------------------------- binomial intervals
def clopper_pearson(*, k: int, n: int, alpha: float = 0.05) -> Interval:
    """Exact two-sided interval for a binomial proportion (Clopper & Pearson 1934)."""
    if n <= 0:
        return Interval(0.0, 1.0, 1 - alpha, "clopper-pearson")
    low = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Interval(low, high, 1 - alpha, "clopper-pearson")


def clopper_pearson_upper(k, n, *, alpha: float):
    """One-sided upper bound at confidence 1 - alpha (vectorised over k)."""
    k = np.asarray(k, dtype=np.float64)
    up = stats.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k >= n, 1.0, up)


def wilson(*, k: int, n: int, alpha: float = 0.05) -> Interval:
    """Wilson score interval (Wilson 1927); narrower than Clopper-Pearson, not exact."""
    if n <= 0:
        return Interval(0.0, 1.0, 1 - alpha, "wilson")
    z = stats.norm.ppf(1 - alpha / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half), 1 - alpha, "wilson")


def rate(*, k: int, n: int, alpha: float = 0.05, method: str = "clopper-pearson") -> Rate:
    """k of n with an interval; the value is NaN (JSON null) when n is 0."""
    if method not in ("clopper-pearson", "wilson"):
        raise InputError(f"unknown interval method {method!r}; use 'clopper-pearson' or 'wilson'")
    interval = clopper_pearson if method == "clopper-pearson" else wilson
    ci = interval(k=k, n=n, alpha=alpha)
    return Rate(int(k), int(n), k / n if n else float("nan"), ci)


# ----------------------------------------------------------------------------- ROC
def roc_auc(member_scores, nonmember_scores) -> float:
    """P(score(member) > score(non-member)) + 1/2 P(equal): the Mann-Whitney U statistic, normalised."""
    m, n = _scores(member_scores, nonmember_scores)
    ranks = stats.rankdata(np.concatenate([m, n]))  # average ranks: ties count 1/2
    u = ranks[:m.size].sum() - m.size * (m.size + 1) / 2
    return float(u / (m.size * n.size))


def bootstrap_auc_ci(member_scores, nonmember_scores, *, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> Interval:
    """Percentile bootstrap interval for the AUC (members and non-members resampled separately).

    Resamples are drawn one after another from one seeded generator (members, then non-members) and their
    AUCs computed in blocks of rows, ranked together: the same interval as calling `roc_auc` per resample.
    """
    m, n = _scores(member_scores, nonmember_scores)
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    block = max(1, 2_000_000 // (m.size + n.size))  # resamples ranked at once: about 16 MB of float64
    for start in range(0, n_boot, block):
        rows = [(rng.integers(0, m.size, m.size), rng.integers(0, n.size, n.size))
                for _ in range(min(block, n_boot - start))]
        both = np.concatenate([np.stack([m[i] for i, _ in rows]), np.stack([n[j] for _, j in rows])], axis=1)
        ranks = stats.rankdata(both, axis=1)  # (rows, m + n), average ranks: ties count 1/2
        u = ranks[:, :m.size].sum(axis=1) - m.size * (m.size + 1) / 2
        aucs[start:start + len(rows)] = u / (m.size * n.size)
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return Interval(float(low), float(high), 1 - alpha, "bootstrap-percentile")


def roc_curve(member_scores, nonmember_scores) -> RocCurve:
    """Empirical ROC: one point per distinct threshold t (member iff score >= t), from (0, 0) to (1, 1)."""
    m, n = _scores(member_scores, nonmember_scores)
    scores = np.concatenate([m, n])
    labels = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_group = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tp = np.cumsum(labels)[last_of_group]
    fp = (last_of_group + 1) - tp
    return RocCurve(fpr=np.r_[0.0, fp / n.size], tpr=np.r_[0.0, tp / m.size],
                    thresholds=np.r_[np.inf, scores[last_of_group]])


def roc_points(member_scores, nonmember_scores, *, max_points: int = 200) -> RocCurve:
    """The ROC curve, subsampled on a log-spaced FPR grid when it has more than `max_points` points.

    At each grid FPR f the point keeps the best TPR with FPR <= f (the curve's upper envelope), so a
    log-log plot of the subsample shows the low-FPR regime faithfully.
    """
    curve = roc_curve(member_scores, nonmember_scores)
    if curve.fpr.size <= max_points:
        return curve
    smallest = curve.fpr[curve.fpr > 0].min()
    grid = np.unique(np.r_[0.0, np.geomspace(smallest, 1.0, max_points - 1)])
    idx = np.searchsorted(curve.fpr, grid, side="right") - 1
    return RocCurve(fpr=grid, tpr=curve.tpr[idx], thresholds=curve.thresholds[idx])


def _sample_size_warning(n_nonmembers: int, fpr: float) -> str | None:
    if n_nonmembers < round(1 / fpr):
        return (f"only {n_nonmembers} non-members, fewer than 1/FPR = {round(1 / fpr)}: TPR at FPR {fpr:g} "
                "is measured at FPR 0 and says little; add non-members")
    if n_nonmembers < round(10 / fpr):
        return (f"only {n_nonmembers} non-members, fewer than 10/FPR = {round(10 / fpr)}: TPR at FPR {fpr:g} "
                "is noisy; read its interval")
    return None


def tpr_at_fpr(member_scores, nonmember_scores, *, fpr: float, alpha: float = 0.05) -> TprAtFpr:
    """TPR at the lowest threshold whose empirical FPR does not exceed `fpr` (member iff score > t)."""
    m, n = _scores(member_scores, nonmember_scores)
    if not 0 < fpr <= 1:
        raise InputError(f"target FPR must be in (0, 1], not {fpr}")
    allowed = int(math.floor(fpr * n.size + 1e-9))  # false positives the target tolerates
    desc = np.sort(n)[::-1]
    threshold = -np.inf if allowed >= n.size else desc[allowed]
    tp, fp = int(np.sum(m > threshold)), int(np.sum(n > threshold))
    return TprAtFpr(target_fpr=fpr, tpr=tp / m.size, tpr_ci=clopper_pearson(k=tp, n=m.size, alpha=alpha),
                    fpr=fp / n.size, fpr_ci=clopper_pearson(k=fp, n=n.size, alpha=alpha),
                    threshold=float(threshold), n_members=m.size, n_nonmembers=n.size,
                    warning=_sample_size_warning(n.size, fpr))


def tpr_at_fprs(member_scores, nonmember_scores, *, fprs: Sequence[float] = DEFAULT_FPRS,
                alpha: float = 0.05) -> list[TprAtFpr]:
    return [tpr_at_fpr(member_scores, nonmember_scores, fpr=f, alpha=alpha) for f in fprs]


# ----------------------------------------------------------------------------- epsilon lower bounds
def epsilon_from_counts(*, tp, n_members: int, fp, n_nonmembers: int, delta: float = 0.0,
                        alpha: float = 0.05):
    """Hypothesis-testing epsilon lower bound at fixed thresholds (vectorised over tp/fp arrays).

    For an (eps, delta)-DP mechanism every test satisfies FPR + e^eps FNR >= 1 - delta and
    FNR + e^eps FPR >= 1 - delta (Kairouz et al. 2015), hence
        eps >= max{ ln((1 - delta - FPR_hi) / FNR_hi), ln((1 - delta - FNR_hi) / FPR_hi), 0 }
    with one-sided Clopper-Pearson upper bounds FPR_hi, FNR_hi at alpha/2 each (union bound: the
    result holds with confidence 1 - alpha). Terms with a non-positive numerator are skipped.
    """
    tp, fp = np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64)
    fpr_hi = clopper_pearson_upper(fp, n_nonmembers, alpha=alpha / 2)
    fnr_hi = clopper_pearson_upper(n_members - tp, n_members, alpha=alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(1 - delta - fpr_hi > 0, np.log(np.maximum(1 - delta - fpr_hi, 1e-300) / fnr_hi), 0.0)
        b = np.where(1 - delta - fnr_hi > 0, np.log(np.maximum(1 - delta - fnr_hi, 1e-300) / fpr_hi), 0.0)
    return np.maximum(np.maximum(a, b), 0.0)


def _threshold_counts(member: np.ndarray, nonmember: np.ndarray, thresholds: np.ndarray):
    """(tp, fp) for 'member iff score >= t' at each threshold t."""
    m_sorted, n_sorted = np.sort(member), np.sort(nonmember)
    tp = member.size - np.searchsorted(m_sorted, thresholds, side="left")
    fp = nonmember.size - np.searchsorted(n_sorted, thresholds, side="left")
    return tp, fp


def epsilon_lower_bound_split(member_scores, nonmember_scores, *, delta: float = 0.0, alpha: float = 0.05,
                              selection_fraction: float = 0.5, seed: int = 0) -> EpsilonBound:
    """Clopper-Pearson epsilon lower bound with the threshold chosen on a separate split.

    Members and non-members are each shuffled (seeded) and split; the threshold maximising the bound
    on the selection part is then applied once to the evaluation part, whose counts give the bound.
    Choosing and evaluating on the same scores would overstate epsilon (attacks.md §4.3).

    Note that without independent training runs this bounds the *membership* test on these examples;
    it is a valid DP lower bound when members were included at random (e.g. a random split).
    """
    m, n = _scores(member_scores, nonmember_scores)
    if not 0 < selection_fraction < 1:
        raise InputError("selection_fraction must be strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    m, n = rng.permutation(m), rng.permutation(n)
    km, kn = int(round(m.size * selection_fraction)), int(round(n.size * selection_fraction))
    if min(km, kn, m.size - km, n.size - kn) < 1:
        raise InputError("too few members or non-members to split into selection and evaluation halves")
    m_sel, m_eval, n_sel, n_eval = m[:km], m[km:], n[:kn], n[kn:]
    # thresholds halfway between consecutive distinct selection scores: the chosen cut then sits in the
    # middle of a gap rather than on a selection point, which generalises to the evaluation half
    distinct = np.unique(np.concatenate([m_sel, n_sel]))
    candidates = np.r_[distinct[:1], (distinct[:-1] + distinct[1:]) / 2]
    tp, fp = _threshold_counts(m_sel, n_sel, candidates)
    eps_sel = epsilon_from_counts(tp=tp, n_members=m_sel.size, fp=fp, n_nonmembers=n_sel.size,
                                  delta=delta, alpha=alpha)
    threshold = float(candidates[int(np.argmax(eps_sel))])
    tp_e, fp_e = _threshold_counts(m_eval, n_eval, np.array([threshold]))
    eps = float(epsilon_from_counts(tp=tp_e, n_members=m_eval.size, fp=fp_e, n_nonmembers=n_eval.size,
                                    delta=delta, alpha=alpha)[0])
    return EpsilonBound(epsilon=eps, delta=delta, confidence=1 - alpha, method="clopper-pearson-split",
                        details={"threshold": threshold, "tp": int(tp_e[0]), "n_members_eval": int(m_eval.size),
                                 "fp": int(fp_e[0]), "n_nonmembers_eval": int(n_eval.size),
                                 "n_members_selection": int(km), "n_nonmembers_selection": int(kn)})


def one_run_p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of >= v correct guesses out of r under (epsilon, delta)-DP, m randomised canaries.

    Steinke, Nasr, Jagielski 2023, Appendix D: P[Bin(r, q) >= v] + 2 m delta max_i (1/i) P[v > Bin(r, q) >= v - i],
    q = e^eps / (1 + e^eps) (the accuracy of eps-randomised response).
    """
    if not 0 <= v <= r <= m:
        raise InputError(f"one-run audit needs 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    q = float(special.expit(epsilon))
    p = float(stats.binom.sf(v - 1, r, q))
    if delta > 0 and v > 0:
        i = np.arange(1, v + 1)
        partial = np.cumsum(stats.binom.pmf(v - i, r, q))  # P[v > Bin >= v - i]
        p += float(np.max(partial / i)) * delta * 2 * m
    return min(p, 1.0)


def one_run_epsilon(*, m: int, r: int, v: int, delta: float = 0.0, beta: float = 0.05) -> float:
    """Largest epsilon whose p-value is below beta (0 when even epsilon = 0 is not rejected).

    Doubling then 50 bisection steps (the paper's snippet uses 30).
    """
    if not 0 < beta < 1:
        raise InputError("beta (1 - confidence) must be strictly between 0 and 1")
    if one_run_p_value(m=m, r=r, v=v, epsilon=0.0, delta=delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m=m, r=r, v=v, epsilon=hi, delta=delta) < beta:
        lo, hi = hi, hi * 2
    for _ in range(50):
        mid = (lo + hi) / 2
        if one_run_p_value(m=m, r=r, v=v, epsilon=mid, delta=delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def epsilon_one_run(scores, is_member, *, delta: float = 0.0, beta: float = 0.05, k_pos: int | None = None,
                    k_neg: int | None = None) -> EpsilonBound:
    """One-run audit of canaries: guess IN for the k_pos highest scores, OUT for the k_neg lowest.

    `is_member[i]` says whether canary i was (randomly, with probability 1/2) included in training.
    With k_pos and k_neg given, that single guess set is used (pre-registered). Without them, k_pos =
    k_neg = k is tried on a small grid and the confidence is Bonferroni-corrected (beta / grid size),
    so the reported bound stays valid despite the choice.

    A canary whose score is not finite or whose flag is unknown (None) is skipped; the bound's details
    count them (`n_skipped`, `skipped`). Raises NothingUsable when no canary is left.
    """
    raw_s, raw_lab = list(np.asarray(scores, dtype=np.float64).ravel()), list(np.asarray(is_member, dtype=object).ravel())
    if len(raw_s) != len(raw_lab):
        raise InputError("epsilon_one_run needs one membership flag per canary score")
    usable = partition(raw_s, lambda i, x: NON_FINITE if not math.isfinite(x) else (
        "inclusion unknown" if raw_lab[i] is None else None))
    usable.require("canaries", "pass finite scores and the inclusion flag of every canary")
    s = np.asarray([raw_s[i] for i in usable.kept])
    lab = np.asarray([bool(raw_lab[i]) for i in usable.kept])
    m = s.size
    order = np.argsort(-s, kind="mergesort")
    ranked = lab[order]

    def correct(kp: int, kn: int) -> int:
        lowest = ranked[m - kn:] if kn else ranked[:0]
        return int(ranked[:kp].sum() + (~lowest).sum())

    if k_pos is None and k_neg is None:
        grid = _k_grid(m)
        level = beta / len(grid)
        eps, kp, kn = max((one_run_epsilon(m=m, r=kp + kn, v=correct(kp, kn), delta=delta, beta=level), kp, kn)
                          for kp, kn in grid)
        method = f"steinke-one-run (best of {len(grid)} guess counts, Bonferroni)"
    else:
        kp, kn = int(k_pos or 0), int(k_neg or 0)
        if kp + kn > m or kp < 0 or kn < 0:
            raise InputError(f"k_pos + k_neg ({kp} + {kn}) must not exceed the number of canaries ({m})")
        level, method = beta, "steinke-one-run"
        eps = one_run_epsilon(m=m, r=kp + kn, v=correct(kp, kn), delta=delta, beta=beta)
    return EpsilonBound(epsilon=eps, delta=delta, confidence=1 - beta, method=method,
                        details={"m": m, "k_pos": kp, "k_neg": kn, "guesses": kp + kn,
                                 "correct": correct(kp, kn), "beta_per_test": level, **skip_fields(usable.skipped)})


def _k_grid(m: int) -> list[tuple[int, int]]:
    """Symmetric guess counts (k, k) at a few fractions of m; (1, 0) when m < 2."""
    ks = sorted({max(1, int(round(m * f))) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)})
    pairs = [(k, k) for k in ks if 2 * k <= m]
    return pairs or [(1, 0)]
