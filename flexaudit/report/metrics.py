"""Reading the figures a gate judges out of a report: one function per metric, pure, no I/O.

Every function returns `Measurement`s (one per attack) with the point value, its confidence interval,
the sample size behind it and the anchor's figure for the same attack on the same texts. Where the
anchor has no figure for an attack (reference-model attacks need a reference, so they cannot run on
the anchor alone), the chance level is used and named as such: AUC 0.5, TPR equal to the FPR.
An attack that did not run yields a Measurement with value None and the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

MEMBERSHIP_METRICS = ("auc", "tpr_at_fpr")
EXTRACTION_RATE_FIELD = {"FA-EXT-DISC": "exact", "FA-EXT-SAMPLED": "extracted", "FA-EXT-PII": "leaked",
                         "FA-EXT-PII-INF": "inferred"}


@dataclass(frozen=True)
class Measurement:
    attack_id: str
    metric: str
    value: float | None
    lower: float | None = None
    upper: float | None = None          # upper confidence bound; None where the method gives no interval
    samples: int | None = None
    anchor: float | None = None
    anchor_source: str = "not measured"  # "anchor", "chance level" or "not measured"
    unit: str = ""
    reason: str | None = None            # why value is None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def measured(self) -> bool:
        return self.value is not None

    @property
    def bound(self) -> float | None:
        """The figure a threshold is tested against: the upper bound, else the value."""
        return self.upper if self.upper is not None else self.value

    @property
    def increase(self) -> float | None:
        """Upper bound (or value) minus the anchor's figure: the leakage this expert adds."""
        if self.bound is None or self.anchor is None:
            return None
        return self.bound - self.anchor


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _membership(report: dict) -> dict:
    return ((report.get("empirical") or {}).get("membership") or {}).get("attacks") or {}


def _extraction(report: dict) -> dict:
    return ((report.get("empirical") or {}).get("extraction") or {}).get("attacks") or {}


def _selected(attacks: dict, only: Iterable[str] | None) -> list[tuple[str, dict]]:
    keep = set(only) if only else None
    return [(k, v) for k, v in sorted(attacks.items()) if keep is None or k in keep]


def _tpr_entry(result: dict | None, fpr: float) -> dict | None:
    for t in (result or {}).get("tpr_at_fpr") or []:
        if math.isclose(float(t["target_fpr"]), fpr, rel_tol=1e-9, abs_tol=1e-12):
            return t
    return None


def membership_tpr(report: dict, *, fpr: float, attacks: Iterable[str] | None = None) -> list[Measurement]:
    """TPR at `fpr` per membership attack, with its Clopper-Pearson interval and the anchor's TPR."""
    out = []
    for attack_id, pair in _selected(_membership(report), attacks):
        target, anchor = pair.get("target") or {}, pair.get("anchor")
        if target.get("status") != "ok":
            out.append(Measurement(attack_id, f"tpr_at_fpr_{fpr:g}", None, reason=target.get("reason") or "not run"))
            continue
        entry = _tpr_entry(target, fpr)
        if entry is None:
            out.append(Measurement(attack_id, f"tpr_at_fpr_{fpr:g}", None,
                                   reason=f"the audit did not measure TPR at FPR {fpr:g}"))
            continue
        a_entry = _tpr_entry(anchor, fpr) if anchor and anchor.get("status") == "ok" else None
        out.append(Measurement(
            attack_id, f"tpr_at_fpr_{fpr:g}", _num(entry["tpr"]), lower=_num(entry["tpr_ci"]["low"]),
            upper=_num(entry["tpr_ci"]["high"]), samples=min(int(entry["n_members"]), int(entry["n_nonmembers"])),
            anchor=_num(a_entry["tpr"]) if a_entry else fpr,
            anchor_source="anchor" if a_entry else "chance level", unit="TPR",
            warnings=tuple(w for w in [entry.get("warning")] if w)))
    return out


def membership_auc(report: dict, *, attacks: Iterable[str] | None = None) -> list[Measurement]:
    """ROC AUC per membership attack with its bootstrap interval and the anchor's AUC."""
    out = []
    for attack_id, pair in _selected(_membership(report), attacks):
        target, anchor = pair.get("target") or {}, pair.get("anchor")
        if target.get("status") != "ok":
            out.append(Measurement(attack_id, "auc", None, reason=target.get("reason") or "not run"))
            continue
        a_ok = bool(anchor and anchor.get("status") == "ok")
        tpr = (target.get("tpr_at_fpr") or [{}])[0]
        samples = min(int(tpr["n_members"]), int(tpr["n_nonmembers"])) if tpr else None
        if samples is None and target.get("member_scores") is not None:
            samples = min(len(target["member_scores"]), len(target.get("nonmember_scores") or []))
        out.append(Measurement(
            attack_id, "auc", _num(target["auc"]), lower=_num(target["auc_ci"]["low"]),
            upper=_num(target["auc_ci"]["high"]), samples=samples,
            anchor=_num(anchor["auc"]) if a_ok else 0.5, anchor_source="anchor" if a_ok else "chance level",
            unit="AUC", warnings=tuple(target.get("warnings") or ())))
    return out


def _rate_of(result: dict | None, attack_id: str, queries: int | None) -> dict | None:
    if not result or result.get("status", "ok") != "ok":
        return None
    if attack_id == "FA-EXT-PROB":
        entry = (result.get("by_queries") or {}).get(str(queries))
        return entry["extractable"] if entry else None
    return result.get(EXTRACTION_RATE_FIELD.get(attack_id, ""))


def extraction_rate(report: dict, attack_id: str, *, queries: int | None = None) -> Measurement | None:
    """The extraction rate of one attack (exact-match, extracted, (n,p)-extractable at `queries`,
    personal-data items leaked or inferred) with its Clopper-Pearson interval; None if the report lacks the attack."""
    pair = _extraction(report).get(attack_id)
    metric = {"FA-EXT-DISC": "exact_match_rate", "FA-EXT-SAMPLED": "extracted_rate",
              "FA-EXT-PROB": f"extractable_rate_at_{queries}_queries", "FA-EXT-PII": "leaked_item_rate",
              "FA-EXT-PII-INF": "inferred_item_rate"}[attack_id]
    if pair is None:
        return None
    target = pair.get("target") or {}
    if target.get("status", "ok") != "ok":
        return Measurement(attack_id, metric, None, reason=target.get("reason") or "not run")
    rate = _rate_of(target, attack_id, queries)
    if rate is None:
        return Measurement(attack_id, metric, None, reason=f"the audit did not measure {metric}")
    anchor_rate = _rate_of(pair.get("anchor"), attack_id, queries)
    anchor_value = _num(anchor_rate["value"]) if anchor_rate else None
    return Measurement(attack_id, metric, _num(rate["value"]), lower=_num(rate["ci"]["low"]),
                       upper=_num(rate["ci"]["high"]), samples=int(rate["n"]), anchor=anchor_value,
                       anchor_source="anchor" if anchor_value is not None else "not measured", unit="rate",
                       warnings=tuple(target.get("warnings") or ()))


def canary_exposure(report: dict) -> Measurement | None:
    """Largest canary exposure in bits (no interval: the estimator is censored at log2(n_reference+1))."""
    pair = _extraction(report).get("FA-EXT-CANARY")
    if pair is None:
        return None
    target, anchor = pair.get("target") or {}, pair.get("anchor")
    if target.get("status", "ok") != "ok":
        return Measurement("FA-EXT-CANARY", "max_exposure_bits", None, reason=target.get("reason") or "not run")
    a = _num(anchor.get("max_exposure")) if anchor and anchor.get("status", "ok") == "ok" else None
    return Measurement("FA-EXT-CANARY", "max_exposure_bits", _num(target.get("max_exposure")),
                       samples=int(target.get("n_canaries") or 0), anchor=a,
                       anchor_source="anchor" if a is not None else "not measured", unit="bits",
                       warnings=tuple(target.get("warnings") or ()))


def empirical_epsilon_bounds(report: dict) -> list[Measurement]:
    """Every empirical epsilon lower bound in the report: the canaries' one-run bound and any listed
    in `empirical.epsilon_lower_bounds`. `value` is the lower bound itself."""
    out = []
    pair = _extraction(report).get("FA-EXT-CANARY")
    if pair and (pair.get("target") or {}).get("status", "ok") == "ok":
        bound = (pair["target"] or {}).get("epsilon_one_run")
        if bound and _num(bound.get("epsilon")) is not None:
            out.append(Measurement("FA-EXT-CANARY", "epsilon_lower_bound", _num(bound["epsilon"]),
                                   samples=int((bound.get("details") or {}).get("m") or pair["target"].get("n_canaries") or 0),
                                   unit="epsilon"))
    for b in (report.get("empirical") or {}).get("epsilon_lower_bounds") or []:
        if _num(b.get("epsilon")) is not None:
            details = b.get("details") or {}
            n = details.get("n_members_eval")
            out.append(Measurement(b.get("source") or b.get("method", "bound"), "epsilon_lower_bound",
                                   _num(b["epsilon"]), samples=int(n) if isinstance(n, int) else None, unit="epsilon"))
    return out


def blind_baseline(report: dict) -> Measurement | None:
    check = ((report.get("empirical") or {}).get("hygiene") or {}).get("checks", {}).get("FA-HYG-BLIND")
    if not check:
        return None
    return Measurement("FA-HYG-BLIND", "blind_auc", _num(check["auc"]), lower=_num(check["auc_ci"]["low"]),
                       upper=_num(check["auc_ci"]["high"]),
                       samples=min(int(check.get("n_members") or 0), int(check.get("n_nonmembers") or 0)) or None,
                       anchor=0.5, anchor_source="chance level", unit="AUC")


def claimed_epsilon(report: dict) -> float | None:
    g = report.get("privacy_guarantee") or {}
    return _num(g.get("epsilon")) if g.get("guarantee") == "dp" else None


def worst(measurements: Iterable[Measurement]) -> Measurement | None:
    """The measured one with the highest tested bound (the worst case over attacks)."""
    ms = [m for m in measurements if m.measured]
    return max(ms, key=lambda m: (m.bound, m.value)) if ms else None
