"""The verdict: a policy's controls evaluated on a report, waivers applied, and one decision.

    findings = evaluate(report, policy)      # one Finding per enabled control (pure: no files read)
    decide(findings)                         # pass | pass_with_waivers | fail | inconclusive | integrity_failure

A report carries its own verdict under the policy it was built with (`evaluation_block`); the gate
(flexaudit.gate) evaluates it again under the CI's policy, after re-verifying the package's weights.
Waivers turn a failing control into `waived` until their expiry day; an expired one leaves it failing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flexaudit.report.findings import Finding
from flexaudit.report.policy import Policy, default_policy
from flexaudit.report.rules import evaluate_control


def utc(now: dt.datetime | None = None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def iso(now: dt.datetime) -> str:
    return utc(now).strftime("%Y-%m-%dT%H:%M:%SZ")


def expert_of(report: dict) -> tuple[str, str]:
    e = report["subject"]["expert"]
    return e["name"], e["root_digest"]


def apply_waivers(findings: list[Finding], policy: Policy, *, root_digest: str, today: dt.date) -> list[Finding]:
    """A failing control with a waiver for this rule and this exact package becomes `waived` until the
    waiver's expiry day (inclusive); after it, the control fails again and says which waiver expired."""
    out = []
    for f in findings:
        if f.status != "fail":
            out.append(f)
            continue
        mine = [w for w in policy.waivers if w.rule == f.rule_id and w.package_root_digest == root_digest]
        active = [w for w in mine if w.active_on(today)]
        if active:
            w = max(active, key=lambda w: w.expires)
            out.append(f.with_(status="waived", waiver={**w.as_dict(), "expired": False},
                               message=f"waived by {w.id} (approved by {w.approver}, expires "
                                       f"{w.expires.isoformat()}: {w.reason}): {f.message}"))
        elif mine:
            w = max(mine, key=lambda w: w.expires)
            out.append(f.with_(waiver={**w.as_dict(), "expired": True},
                               message=f"waiver {w.id} expired on {w.expires.isoformat()}: {f.message}"))
        else:
            out.append(f)
    return out


def evaluate(report: dict, policy: Policy | None = None, *, today: dt.date | None = None,
             location: str | None = None) -> list[Finding]:
    """One Finding per enabled control of the policy, waivers applied. Pure: no files are read."""
    policy = policy or default_policy()
    name, root = expert_of(report)
    findings = [evaluate_control(report, c, expert=name, location=location) for c in policy.enabled_controls()]
    return apply_waivers(findings, policy, root_digest=root, today=today or utc().date())


def decide(findings: list[Finding]) -> str:
    statuses = {f.status for f in findings}
    if "integrity" in statuses:
        return "integrity_failure"
    if "fail" in statuses:
        return "fail"
    if "inconclusive" in statuses:
        return "inconclusive"
    if "waived" in statuses:
        return "pass_with_waivers"
    return "pass"


def summary_line(decision: str, findings: list[Finding]) -> str:
    counted = [f for f in findings if f.status != "skipped"]
    def ids(status: str) -> str:
        return ", ".join(f.rule_id for f in findings if f.status == status)
    if decision == "integrity_failure":
        return f"INTEGRITY FAILURE: {ids('integrity')}: the package is not the one that was audited"
    if decision == "fail":
        return f"FAIL: {sum(f.status == 'fail' for f in counted)} of {len(counted)} controls violated ({ids('fail')})"
    if decision == "inconclusive":
        return f"INCONCLUSIVE: {ids('inconclusive')} could not be decided (fail closed)"
    if decision == "pass_with_waivers":
        return f"PASS WITH WAIVERS: {len(counted)} controls, waived: {ids('waived')}"
    return f"PASS: all {len(counted)} evaluated controls within the policy"


def evaluation_block(report: dict, policy: Policy, *, now: dt.datetime) -> dict[str, Any]:
    """The report's own `verdict` section: the policy's controls on this report (no package re-check:
    the builder has just verified the package)."""
    findings = evaluate(report, policy, today=utc(now).date())
    decision = decide(findings)
    return {"decision": decision, "summary": summary_line(decision, findings),
            "policy": {"name": policy.name, "digest": policy.digest}, "evaluated_at": iso(now),
            "controls": [f.as_dict() for f in findings]}
