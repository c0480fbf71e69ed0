"""Running the registered membership attacks on score caches and measuring them.

    report = run_membership(target_cache, reference_cache, is_member=labels)
    report["FA-MIA-LOSS"].auc, report.as_dict()

Every attack is scored once per text from the caches (no forward pass here); each result carries the
member and non-member scores and the metrics of `attacks.metrics` (AUC with bootstrap interval, TPR at
10%/1%/0.1% FPR with Clopper-Pearson intervals and sample-size warnings, ROC points for log-log
plots). Attacks whose inputs are missing (LiRA without shadow models, Ref/RMIA without a reference)
are reported with status "not_run" and the reason when they were not asked for by name, and raise
`MissingAttackInput` when they were: a number is only ever a measured one.

Unusable texts are skipped and counted, never a reason to refuse the batch: texts `score_texts` could
not score (`is_member` may have one flag per text given to score_texts; the caches say which were
scored), texts that some other cache (reference, shadow model) could not score, and, per attack, texts
whose score is not finite. `MembershipReport.skipped` and `MembershipResult.skipped` count them by reason;
only a split with no usable member or no usable non-member raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import metrics
from .._usable import NON_FINITE, describe, merge, prefixed, skip_fields
from ..errors import InputError, MissingAttackInput, NothingUsable
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
    skipped: dict[str, int] = field(default_factory=dict)  # texts this attack could not score: reason -> count

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self, *, include_scores: bool = True) -> dict:
        d: dict[str, Any] = {"attack_id": self.attack_id, "name": self.name, "citation": self.citation,
                             "status": self.status, "params": dict(self.params), "reason": self.reason,
                             "warnings": list(self.warnings), **skip_fields(self.skipped)}
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
    skipped: dict[str, int] = field(default_factory=dict)  # texts left out of every attack: reason -> count

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

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
                **skip_fields(self.skipped),
                "results": {k: r.as_dict(include_scores=include_scores) for k, r in self.results.items()}}


def _align(target: ScoreCache, others: Sequence[tuple[str, ScoreCache]]) -> tuple[np.ndarray, list[ScoreCache], dict]:
    """The texts every cache scored: their positions in `target`, each other cache restricted to them (in
    target order), and how many target texts another cache could not score ("unusable under the <what>").

    Caches are matched by `source_index` (the position in the list given to score_texts), so caches that
    skipped different texts (another tokenizer) still line up; they must come from the same list of texts.
    """
    keep = np.ones(len(target), dtype=bool)
    positions, skipped = [], {}
    for what, other in others:
        where = {int(s): j for j, s in enumerate(other.source_index)}
        pos = np.array([where.get(int(s), -1) for s in target.source_index], dtype=np.int64)
        both = np.flatnonzero(pos >= 0)
        # more texts missing than the other cache skipped as unusable: it was made from other texts (or cut down)
        if (other.n_input != target.n_input or int(np.sum(pos < 0)) > other.n_skipped
                or any(target.text_sha256[i] != other.text_sha256[pos[i]] for i in both)):
            raise InputError(f"the {what} scores cover different texts (or a different order) than the "
                             "target scores; score the same list of texts with both models")
        lost = int(np.sum(keep & (pos < 0)))
        if lost:
            skipped = merge(skipped, {f"unusable under the {what}": lost})
        keep &= pos >= 0
        positions.append(pos)
    kept = np.flatnonzero(keep)
    return kept, [other.subset(pos[kept]) for (_, other), pos in zip(others, positions)], skipped


def _subset(cache: ScoreCache, kept: np.ndarray) -> ScoreCache:
    return cache if kept.size == len(cache) else cache.subset(kept)


def _labels(is_member: Sequence[bool], target: ScoreCache) -> tuple[np.ndarray, dict]:
    """One flag per cached target text: `is_member` is per cached text, or per text given to score_texts."""
    labels = np.asarray(is_member, dtype=bool).ravel()
    if labels.size == len(target):
        return labels, {}
    if labels.size == target.n_input:
        # texts a caller removed from the cache after scoring (ScoreCache.subset) are counted, not lost silently
        removed = target.n_input - len(target) - target.n_skipped
        return labels[target.source_index], ({"left out of the target cache": removed} if removed > 0 else {})
    raise InputError(f"is_member has {labels.size} flags but the target cache holds {len(target)} texts "
                     f"(of {target.n_input} given to score_texts): pass one flag per text given to score_texts")


def _population(target: ScoreCache, reference: ScoreCache | None, nonmember_mask: np.ndarray,
                population: tuple[ScoreCache, ScoreCache | None] | None) -> tuple[Population | None, dict]:
    """RMIA's z samples: the given population caches, else the audit's non-members; and the population
    texts left out ("population text: <reason>").

    An audit text that is also in the population (same SHA-256) is left out of its own comparison.
    """
    skipped: dict[str, int] = {}
    if population is not None:
        pop_target, pop_reference = population
        skipped = prefixed("population text", pop_target.skipped)
        if pop_reference is not None:
            kept, (pop_reference,), lost = _align(pop_target, [("population reference", pop_reference)])
            pop_target, skipped = _subset(pop_target, kept), merge(skipped, prefixed("population text", lost))
    else:
        idx = np.flatnonzero(nonmember_mask)
        if idx.size == 0:
            return None, skipped
        pop_target, pop_reference = target.subset(idx), (reference.subset(idx) if reference is not None else None)
    where = {h: j for j, h in enumerate(pop_target.text_sha256)}
    loo = np.array([where.get(h, -1) for h in target.text_sha256], dtype=np.int64)
    return Population(pop_target, pop_reference, loo), skipped


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
        is_member: one flag per text given to `score_texts` (True = in the training set), or one per text
            of `target`; flags of texts that could not be scored are dropped and those texts counted.
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

    Raises:
        NothingUsable: no usable member or no usable non-member is left (the message counts the skipped).
    """
    labels, left_out = _labels(is_member, target)
    others = ([("reference model", reference)] if reference is not None else []) + \
        [(f"shadow model {k + 1}", s) for k, s in enumerate(shadows)]
    kept, aligned, lost = _align(target, others)
    target, labels = _subset(target, kept), labels[kept]
    if reference is not None:
        reference, *aligned = aligned
    shadows = aligned
    skipped = merge(target.skipped, left_out, lost)
    if labels.all() or not labels.any():
        side = "non-members" if labels.all() else "members"
        left = f" ({describe(skipped)} skipped)" if skipped else ""
        raise NothingUsable(f"membership inference needs both members and non-members in the audit set, and no "
                            f"usable {side} are left{left}: pass texts of at least 2 tokens on both sides",
                            skipped=skipped, n_items=len(labels) + sum(skipped.values()))
    params = dict(params or {})
    requested = list(attacks) if attacks is not None else None
    specs: list[AttackSpec] = ([get_attack(a) for a in requested] if requested is not None
                               else list_attacks("membership"))
    unknown = set(params) - {s.id for s in specs}
    if unknown:
        raise InputError(f"parameters given for attacks that are not run: {', '.join(sorted(unknown))}")
    pop, pop_skipped = _population(target, reference, ~labels, population)
    ctx = MembershipContext(target=target, reference=reference, shadows=tuple(shadows), population=pop)
    report = MembershipReport(results={}, n_members=int(labels.sum()), n_nonmembers=int((~labels).sum()),
                              skipped=merge(skipped, pop_skipped))
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
    if scores.shape != labels.shape:
        raise RuntimeError(f"{spec.id} returned {scores.shape} scores (expected {labels.shape})")
    # a text the model gives probability 0 (log-probability -inf) has no finite score: skipped for this attack
    finite = np.isfinite(scores)
    skipped = {NON_FINITE: int((~finite).sum())} if not finite.all() else {}
    mem, non = scores[labels & finite], scores[~labels & finite]
    if not mem.size or not non.size:
        return MembershipResult(spec.id, spec.name, spec.citation, "not_run", params=kwargs, skipped=skipped,
                                reason=f"no finite score left for the {'members' if not mem.size else 'non-members'}")
    tprs = metrics.tpr_at_fprs(mem, non, fprs=fprs, alpha=alpha)
    warnings = list(dict.fromkeys(t.warning for t in tprs if t.warning))
    return MembershipResult(
        spec.id, spec.name, spec.citation, "ok", params=kwargs, member_scores=mem, nonmember_scores=non,
        auc=metrics.roc_auc(mem, non),
        auc_ci=metrics.bootstrap_auc_ci(mem, non, n_boot=n_bootstrap, alpha=alpha, seed=seed),
        tpr_at_fpr=tprs, roc=metrics.roc_points(mem, non, max_points=roc_points), warnings=warnings,
        skipped=skipped)
