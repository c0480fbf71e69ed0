"""Running the registered membership attacks on score caches and measuring them.

    report = run_membership(target_cache, reference_cache, is_member=labels)
    report["FA-MIA-LOSS"].auc, report.as_dict()

Every attack is scored once per text from the caches (no forward pass here); each result carries the
member and non-member scores and the metrics of `attacks.metrics` (AUC with bootstrap interval, TPR at
10%/1%/0.1% FPR with Clopper-Pearson intervals and sample-size warnings, ROC points for log-log
plots). Attacks whose inputs are missing (LiRA without shadow models, Ref/RMIA without a reference)
are reported with status "not_run" and the reason when they were not asked for by name, and raise
`MissingAttackInput` when they were: a number is only ever a measured one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import metrics
from ..errors import InputError, MissingAttackInput
from ..registry import AttackSpec, get_attack, list_attacks
from ..scoring import ScoreCache
from .context import MembershipContext, Population


@dataclass
class MembershipResult:
    """One membership attack measured on one member/non-member split (no text, only numbers)."""

    attack_id: str
    name: str
    citation: str
    status: str                                    # "ok" or "not_run"
    params: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None                      # why it did not run
    member_scores: np.ndarray | None = None
    nonmember_scores: np.ndarray | None = None
    auc: float | None = None
    auc_ci: metrics.Interval | None = None
    tpr_at_fpr: list[metrics.TprAtFpr] = field(default_factory=list)
    roc: metrics.RocCurve | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self, *, include_scores: bool = True) -> dict:
        d: dict[str, Any] = {"attack_id": self.attack_id, "name": self.name, "citation": self.citation,
                             "status": self.status, "params": dict(self.params), "reason": self.reason,
                             "warnings": list(self.warnings)}
        if not self.ok:
            return d
        d.update({"auc": self.auc, "auc_ci": self.auc_ci.as_dict() if self.auc_ci else None,
                  "tpr_at_fpr": [t.as_dict() for t in self.tpr_at_fpr],
                  "roc": self.roc.as_dict() if self.roc else None})
        if include_scores:
            d["member_scores"] = [float(x) for x in self.member_scores]
            d["nonmember_scores"] = [float(x) for x in self.nonmember_scores]
        return d


@dataclass
class MembershipReport:
    """All membership results of one run, keyed by attack ID."""

    results: dict[str, MembershipResult]
    n_members: int
    n_nonmembers: int
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, attack_id: str) -> MembershipResult:
        return self.results[attack_id]

    def __iter__(self):
        return iter(self.results.values())

    def worst_case(self) -> MembershipResult | None:
        """The attack with the highest AUC among those that ran (what a gate should look at first)."""
        ran = [r for r in self.results.values() if r.ok]
        return max(ran, key=lambda r: r.auc) if ran else None

    def as_dict(self, *, include_scores: bool = True) -> dict:
        return {"n_members": self.n_members, "n_nonmembers": self.n_nonmembers, "warnings": list(self.warnings),
                "results": {k: r.as_dict(include_scores=include_scores) for k, r in self.results.items()}}


def _population(target: ScoreCache, reference: ScoreCache | None, nonmember_mask: np.ndarray,
                population: tuple[ScoreCache, ScoreCache | None] | None) -> Population | None:
    """RMIA's z samples: the given population caches, else the audit's non-members.

    An audit text that is also in the population (same SHA-256) is left out of its own comparison.
    """
    if population is not None:
        pop_target, pop_reference = population
        if pop_reference is not None:
            pop_target.check_aligned(pop_reference, what="population reference")
    else:
        idx = np.flatnonzero(nonmember_mask)
        if idx.size == 0:
            return None
        pop_target, pop_reference = target.subset(idx), (reference.subset(idx) if reference is not None else None)
    where = {h: j for j, h in enumerate(pop_target.text_sha256)}
    loo = np.array([where.get(h, -1) for h in target.text_sha256], dtype=np.int64)
    return Population(pop_target, pop_reference, loo)


def run_membership(target: ScoreCache, reference: ScoreCache | None = None, *, is_member: Sequence[bool],
                   attacks: Sequence[str] | None = None, shadows: Sequence[ScoreCache] = (),
                   population: tuple[ScoreCache, ScoreCache | None] | None = None,
                   params: dict[str, dict[str, Any]] | None = None,
                   fprs: Sequence[float] = metrics.DEFAULT_FPRS, alpha: float = 0.05,
                   n_bootstrap: int = 1000, roc_points: int = 200, seed: int = 0) -> MembershipReport:
    """Runs membership attacks on cached scores and measures them against the known labels.

    Args:
        target: scores of the audit texts under the model under attack.
        reference: scores of the same texts under the reference model (the frozen anchor).
        is_member: one flag per text of `target` (True = in the training set).
        attacks: attack IDs to run (default: every registered membership attack; those whose inputs
            are missing are then reported as not run).
        shadows: LiRA's OUT shadow models' scores of the same texts.
        population: (target scores, reference scores) of extra non-member texts for RMIA; default:
            the audit's non-members, each left out of its own comparison.
        params: per-attack keyword overrides, e.g. {"FA-MIA-MINK": {"k": 0.1}}.
        fprs: FPRs at which TPR is reported.
        alpha: 1 - confidence level of every interval.
        n_bootstrap, seed: bootstrap of the AUC interval.
        roc_points: at most this many ROC points are kept per attack (log-spaced in FPR).
    """
    labels = np.asarray(is_member, dtype=bool).ravel()
    if labels.size != len(target):
        raise InputError(f"is_member has {labels.size} flags but the target cache holds {len(target)} texts")
    if labels.all() or not labels.any():
        raise InputError("membership inference needs both members and non-members in the audit set")
    if reference is not None:
        target.check_aligned(reference)
    params = dict(params or {})
    requested = list(attacks) if attacks is not None else None
    specs: list[AttackSpec] = ([get_attack(a) for a in requested] if requested is not None
                               else list_attacks("membership"))
    unknown = set(params) - {s.id for s in specs}
    if unknown:
        raise InputError(f"parameters given for attacks that are not run: {', '.join(sorted(unknown))}")
    ctx = MembershipContext(target=target, reference=reference, shadows=tuple(shadows),
                            population=_population(target, reference, ~labels, population))
    report = MembershipReport(results={}, n_members=int(labels.sum()), n_nonmembers=int((~labels).sum()))
    if target.truncated.any():
        report.warnings.append(f"{int(target.truncated.sum())} audit text(s) were longer than the scoring "
                               f"context ({target.max_length} tokens) and only their beginning was scored")
    for spec in specs:
        if spec.kind != "membership":
            raise InputError(f"{spec.id} is an {spec.kind} attack, not a membership attack")
        kwargs = {**spec.defaults, **params.get(spec.id, {})}
        try:
            scores = np.asarray(spec.func(ctx, **kwargs), dtype=np.float64)
        except MissingAttackInput as exc:
            if requested is not None:
                raise
            report.results[spec.id] = MembershipResult(spec.id, spec.name, spec.citation, "not_run",
                                                       params=kwargs, reason=exc.message)
            continue
        report.results[spec.id] = _measure(spec, kwargs, scores, labels, fprs=fprs, alpha=alpha,
                                           n_bootstrap=n_bootstrap, roc_points=roc_points, seed=seed)
    return report


def _measure(spec: AttackSpec, kwargs: dict, scores: np.ndarray, labels: np.ndarray, *, fprs, alpha,
             n_bootstrap, roc_points, seed) -> MembershipResult:
    if scores.shape != labels.shape or not np.all(np.isfinite(scores)):
        raise RuntimeError(f"{spec.id} returned {scores.shape} scores (expected {labels.shape}, all finite)")
    mem, non = scores[labels], scores[~labels]
    tprs = metrics.tpr_at_fprs(mem, non, fprs=fprs, alpha=alpha)
    warnings = list(dict.fromkeys(t.warning for t in tprs if t.warning))
    return MembershipResult(
        spec.id, spec.name, spec.citation, "ok", params=kwargs, member_scores=mem, nonmember_scores=non,
        auc=metrics.roc_auc(mem, non),
        auc_ci=metrics.bootstrap_auc_ci(mem, non, n_boot=n_bootstrap, alpha=alpha, seed=seed),
        tpr_at_fpr=tprs, roc=metrics.roc_points(mem, non, max_points=roc_points), warnings=warnings)
