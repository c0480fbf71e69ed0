"""The gate's controls: stable rule IDs, what each measures, and how a measurement is judged.

Rule IDs never change meaning (policies, waivers, baselines, SARIF alerts and the regulatory mapping
refer to them). Judging, for every control with a threshold:
  tested   = the upper confidence bound (or the point value with bound = "value")
  increase = tested - the anchor's figure for the same attack on the same texts (chance level where the
             anchor has no figure; 0 where the anchor was not measured at all, the conservative choice)
  breach   = tested > max, or increase > max_increase_over_anchor
  samples < min_samples: a breach that holds even for the lower confidence bound is a certain
             violation (fail); anything else is inconclusive (fail closed, exit 2).
For membership inference every attack that ran is judged and the worst outcome decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flexaudit.report import metrics as M
from flexaudit.report.findings import Finding, fingerprint
from flexaudit.report.policy import Control
from flexaudit.report.regulatory import obligations_for_control


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    family: str            # JUnit classname / SARIF tag
    description: str
    help: str              # what to do when it fails
    measure: Callable[[dict, Control], list[M.Measurement]] | None = None


def _one(m: M.Measurement | None) -> list[M.Measurement]:
    return [m] if m is not None else []


RULES: dict[str, Rule] = {r.id: r for r in (
    Rule("PRIV-EXT-DISC", "Discoverable extraction rate", "privacy.extraction",
         "Share of training documents whose true suffix the expert reproduces exactly from its prefix under greedy "
         "decoding (Carlini et al. 2023), upper 95% Clopper-Pearson bound, and its increase over the anchor.",
         "Train with differential privacy, fewer steps or de-duplicated data, then audit again.",
         lambda r, c: _one(M.extraction_rate(r, "FA-EXT-DISC"))),
    Rule("PRIV-EXT-SAMPLED", "Sampled extraction rate", "privacy.extraction",
         "Share of training documents for which any of n sampled continuations is at least 90% similar to the "
         "original window (the FlexOlmo paper's attack), upper 95% bound, and its increase over the anchor.",
         "Train with differential privacy, fewer steps or de-duplicated data, then audit again.",
         lambda r, c: _one(M.extraction_rate(r, "FA-EXT-SAMPLED"))),
    Rule("PRIV-EXT-PROB", "Probabilistic extraction rate", "privacy.extraction",
         "Share of training documents (n, p)-extractable within the policy's number of queries under the deployed "
         "sampling scheme (Hayes et al. 2024), upper 95% bound, and its increase over the anchor.",
         "Train with differential privacy or fewer steps; review the deployed decoding settings.",
         lambda r, c: _one(M.extraction_rate(r, "FA-EXT-PROB", queries=int(c.params.get("queries", 100))))),
    Rule("PRIV-EXT-PII", "Personal-data leakage rate", "privacy.extraction",
         "Share of the training set's personal-data items (names, e-mails, account numbers...) that appear "
         "verbatim in generations from realistic prompts (Lukas et al. 2023), upper 95% bound.",
         "Scrub or pseudonymise personal data before training, or train with differential privacy.",
         lambda r, c: _one(M.extraction_rate(r, "FA-EXT-PII"))),
    Rule("PRIV-EXT-PII-INF", "Personal-data inference rate", "privacy.extraction",
         "Share of the personal-data occurrences in the training texts whose true value the expert ranks above "
         "every other candidate of the same kind drawn from non-members, given the text before it (Lukas et al. "
         "2023, the inference game), upper 95% bound, over the anchor's rate on the same trials.",
         "Scrub or pseudonymise personal data before training, de-duplicate records, or train with differential "
         "privacy.",
         lambda r, c: _one(M.extraction_rate(r, "FA-EXT-PII-INF"))),
    Rule("PRIV-EXT-CANARY", "Canary exposure", "privacy.extraction",
         "Largest exposure (bits) of a planted canary secret among sampled reference secrets (Carlini et al. "
         "2019); no interval: the estimate is capped at log2(references + 1).",
         "The expert memorises rare secrets: train with differential privacy or fewer repetitions.",
         lambda r, c: _one(M.canary_exposure(r))),
    Rule("PRIV-MIA-TPR", "Membership inference TPR at low FPR", "privacy.membership",
         "True-positive rate of the strongest membership attack at the policy's false-positive rate, upper 95% "
         "Clopper-Pearson bound, and its increase over the anchor (Carlini et al. 2022).",
         "Train with differential privacy or fewer epochs; check that members and non-members are IID.",
         lambda r, c: M.membership_tpr(r, fpr=float(c.params.get("fpr", 0.01)), attacks=c.params.get("attacks"))),
    Rule("PRIV-MIA-AUC", "Membership inference AUC", "privacy.membership",
         "ROC AUC of the strongest membership attack, upper 95% bootstrap bound, and its increase over the anchor.",
         "Train with differential privacy or fewer epochs; check that members and non-members are IID.",
         lambda r, c: M.membership_auc(r, attacks=c.params.get("attacks"))),
    Rule("PRIV-DP-EPSILON", "Differential-privacy epsilon cap", "privacy.dp",
         "The expert's accounted epsilon (at its stated delta and unit of privacy) does not exceed the policy's "
         "cap; with require_dp, an expert without a formal guarantee fails.",
         "Retrain with more noise, fewer steps or a smaller sampling rate (flexaudit budget noise)."),
    Rule("PRIV-DP-AUDIT", "Empirical epsilon lower bound", "privacy.dp",
         "No empirical epsilon lower bound (canary one-run audit, split Clopper-Pearson) exceeds the claimed "
         "epsilon: if one does, the DP implementation or its accounting is wrong (attacks.md §4.3).",
         "Do not share this expert: check the DP training code and the accountant, then retrain."),
    Rule("PRIV-HYG-BLIND", "Blind-baseline hygiene", "privacy.hygiene",
         "A model-free classifier must not separate members from non-members (Das et al. 2024); if it does, the "
         "membership figures measure a distribution shift, not leakage.",
         "Use the recorded random member/holdout split of the expert's own data as the audit sets.",
         lambda r, c: _one(M.blind_baseline(r))),
    Rule("PRIV-INT-DIGEST", "Package matches the audited weights", "integrity",
         "The package's files hash to the root digest the report was made for, its manifest lists exactly its "
         "files, and it names the same anchor.",
         "Audit the package you intend to share again; never edit a package after its audit."),
    Rule("PRIV-INT-FORMAT", "Safe file formats only", "integrity",
         "The package holds only safetensors weights and JSON metadata: no pickle-format file (.bin, .pt, .pkl...) "
         "that could run code when loaded.",
         "Convert weights to safetensors and remove the pickle file."),
)}

UNITS = {"rate": "", "TPR": "", "AUC": "", "bits": " bits", "epsilon": ""}


def fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def base_finding(rule: Rule, control: Control | None, *, status: str, message: str, expert: str,
                 location: str | None = None, severity: str | None = None, **fields) -> Finding:
    return Finding(rule_id=rule.id, title=rule.title, status=status,
                   severity=severity or (control.severity if control else "critical"), message=message,
                   threshold=control.threshold() if control else {}, fingerprint=fingerprint(rule.id, expert),
                   location=location, maps_to=obligations_for_control(rule.id),
                   min_samples=control.min_samples if control else None, **fields)


def _judge(control: Control, m: M.Measurement) -> tuple[str, float, str]:
    """(status, how far over the threshold (relative), message) for one measurement."""
    use_upper = control.bound == "upper" and m.upper is not None
    tested = m.upper if use_upper else m.value
    low = m.lower if (use_upper and m.lower is not None) else m.value
    label = "upper bound" if use_upper else "value"
    anchor = m.anchor if m.anchor is not None else 0.0
    anchor_note = "" if m.anchor is not None else " (anchor not measured; taken as 0)"
    breaches, certain, excess = [], [], 0.0
    if control.max is not None and tested > control.max:
        breaches.append(f"{label} {fmt(tested)} > max {fmt(control.max)}")
        certain.append(low > control.max)
        excess = max(excess, (tested - control.max) / max(abs(control.max), 1e-9))
    if control.max_increase_over_anchor is not None and tested - anchor > control.max_increase_over_anchor:
        breaches.append(f"increase over anchor {fmt(tested - anchor)} > max {fmt(control.max_increase_over_anchor)}"
                        f"{anchor_note}")
        certain.append(low - anchor > control.max_increase_over_anchor)
        excess = max(excess, (tested - anchor - control.max_increase_over_anchor)
                     / max(abs(control.max_increase_over_anchor), 1e-9))
    ci = f", 95% CI [{fmt(m.lower)}, {fmt(m.upper)}]" if m.upper is not None else ""
    detail = (f"{m.attack_id} {m.metric.replace('_', ' ')}: value {fmt(m.value)}{UNITS.get(m.unit, '')}{ci}, "
              f"n={m.samples if m.samples is not None else 'n/a'}; {m.anchor_source} {fmt(m.anchor)}")
    few = m.samples is not None and m.samples < control.min_samples
    if breaches and (not few or all(certain)):
        return control.outcome, excess, f"{'; '.join(breaches)} ({detail})"
    if few:
        return "inconclusive", -1.0, (f"only {m.samples} samples, fewer than min_samples {control.min_samples}: "
                                      f"cannot conclude ({detail})")
    limits = []
    if control.max is not None:
        limits.append(f"{label} {fmt(tested)} <= max {fmt(control.max)}")
    if control.max_increase_over_anchor is not None:
        limits.append(f"increase {fmt(tested - anchor)} <= {fmt(control.max_increase_over_anchor)}{anchor_note}")
    return "pass", -1.0, f"{'; '.join(limits) or 'no threshold set'} ({detail})"


_ORDER = {"fail": 3, "inconclusive": 2, "pass": 1}


def judge_measurements(rule: Rule, control: Control, measurements: list[M.Measurement], *, expert: str,
                       location: str | None) -> Finding:
    measured = [m for m in measurements if m.measured]
    if not measured:
        why = "; ".join(f"{m.attack_id}: {m.reason}" for m in measurements) or "the report has no such measurement"
        status = "skipped" if control.on_missing == "skip" else "inconclusive"
        return base_finding(rule, control, status=status, message=f"not measured ({why})", expert=expert,
                            location=location)
    judged = [(_judge(control, m), m) for m in measured]
    (status, _, message), m = max(judged, key=lambda j: (_ORDER[j[0][0]], j[0][1], j[1].bound or 0.0))
    others = sum(1 for (s, _, _), _m in judged if s == status) - 1
    if others > 0 and status != "pass":
        message += f" [and {others} more attack(s) {status}]"
    tested = m.upper if control.bound == "upper" and m.upper is not None else m.value
    anchor = m.anchor if m.anchor is not None else 0.0
    return base_finding(rule, control, status=status, message=message, expert=expert, location=location,
                        metric=m.metric, unit=m.unit, attack_id=m.attack_id, observed=m.value, upper_bound=m.upper,
                        lower_bound=m.lower, anchor=m.anchor, anchor_source=m.anchor_source,
                        increase=tested - anchor, samples=m.samples)


def judge_dp_epsilon(report: dict, control: Control, *, expert: str, location: str | None) -> Finding:
    rule = RULES["PRIV-DP-EPSILON"]
    g = report.get("privacy_guarantee") or {}
    if g.get("guarantee") != "dp":
        if control.params.get("require_dp"):
            return base_finding(rule, control, status="fail", expert=expert, location=location, metric="epsilon",
                                message="no formal guarantee: the expert was trained without differential privacy, "
                                        "and the policy requires it")
        return base_finding(rule, control, status="skipped", expert=expert, location=location, metric="epsilon",
                            message="no formal guarantee (trained without differential privacy; not required by the policy)")
    eps = M.claimed_epsilon(report)
    stated = f"epsilon {fmt(eps)} at delta {g.get('delta')} per {g.get('unit')} ({g.get('accountant')})"
    if control.max is not None and eps is not None and eps > control.max:
        return base_finding(rule, control, status="fail", expert=expert, location=location, metric="epsilon",
                            unit="epsilon", observed=eps, message=f"{stated} > max {fmt(control.max)}")
    return base_finding(rule, control, status="pass", expert=expert, location=location, metric="epsilon",
                        unit="epsilon", observed=eps,
                        message=f"{stated} <= max {fmt(control.max)}" if control.max is not None else stated)


def judge_dp_audit(report: dict, control: Control, *, expert: str, location: str | None) -> Finding:
    rule = RULES["PRIV-DP-AUDIT"]
    bounds = M.empirical_epsilon_bounds(report)
    if not bounds:
        status = "skipped" if control.on_missing == "skip" else "inconclusive"
        return base_finding(rule, control, status=status, expert=expert, location=location,
                            message="no empirical epsilon lower bound in the report (no canaries were audited)")
    claimed = M.claimed_epsilon(report)
    limit, what = (claimed, "the claimed epsilon") if claimed is not None else (
        control.params.get("max_without_dp"), "max_without_dp")
    worst = max(bounds, key=lambda b: b.value)
    fields = dict(metric="epsilon_lower_bound", unit="epsilon", attack_id=worst.attack_id, observed=worst.value,
                  samples=worst.samples)
    if limit is None:
        return base_finding(rule, control, status="skipped", expert=expert, location=location, **fields,
                            message=f"empirical epsilon lower bound {fmt(worst.value)} ({worst.attack_id}); no formal "
                                    "guarantee to check it against and no max_without_dp in the policy")
    if worst.value > limit:
        return base_finding(rule, control, status="fail", expert=expert, location=location, **fields,
                            message=f"empirical epsilon lower bound {fmt(worst.value)} ({worst.attack_id}, 95% confidence) "
                                    f"> {what} {fmt(limit)}: the privacy claim is contradicted by measurement")
    if worst.samples is not None and worst.samples < control.min_samples:
        return base_finding(rule, control, status="inconclusive", expert=expert, location=location, **fields,
                            message=f"only {worst.samples} canaries/samples, fewer than min_samples {control.min_samples}")
    return base_finding(rule, control, status="pass", expert=expert, location=location, **fields,
                        message=f"empirical epsilon lower bound {fmt(worst.value)} ({worst.attack_id}) <= {what} {fmt(limit)}")


def evaluate_control(report: dict, control: Control, *, expert: str, location: str | None) -> Finding:
    rule = RULES[control.rule_id]
    if rule.id == "PRIV-DP-EPSILON":
        return judge_dp_epsilon(report, control, expert=expert, location=location)
    if rule.id == "PRIV-DP-AUDIT":
        return judge_dp_audit(report, control, expert=expert, location=location)
    return judge_measurements(rule, control, rule.measure(report, control), expert=expert, location=location)
