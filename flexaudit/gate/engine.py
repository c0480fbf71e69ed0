"""The gate: integrity -> load -> controls -> waivers -> baseline -> one decision and one exit code.

    result = run_gate("audits/clinical", load_policy("privacy-policy.toml"))
    result.exit_code          # 0 pass, 1 violation, 2 inconclusive, 3 integrity failure
    result.findings           # one Finding per control (plus the two integrity checks)

Order (compliance.md §6.4): the package's files are re-hashed and compared with the digests the
report binds to before anything is judged; if they differ, or a pickle file is present, the decision
is an integrity failure and no control is evaluated (the figures describe other weights). Waivers are
applied before the exit code is computed; an expired waiver leaves the control failing. A baseline
only annotates findings (new/unchanged) and lists resolved ones: it never makes a failing expert pass.
Bad input (no report, malformed report, policy or baseline, missing package) raises InputError.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexaudit import __version__
from flexaudit.errors import InputError, IntegrityError
from flexaudit.gate.findings import Finding
from flexaudit.gate.policy import Policy, default_policy
from flexaudit.gate.rules import RULES, base_finding, evaluate_control
from flexaudit.report.schema import GATE_SCHEMA, SCHEMA_VERSION, validate

GATE_FORMAT = "flexaudit-gate/1"
DECISIONS = {"pass": 0, "pass_with_waivers": 0, "fail": 1, "inconclusive": 2, "integrity_failure": 3}


def _utc(now: dt.datetime | None = None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def iso(now: dt.datetime) -> str:
    return _utc(now).strftime("%Y-%m-%dT%H:%M:%SZ")


def expert_of(report: dict) -> tuple[str, str]:
    e = report["subject"]["expert"]
    return e["name"], e["root_digest"]


# ---------------------------------------------------------------------------------------------- controls
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
    return apply_waivers(findings, policy, root_digest=root, today=today or _utc().date())


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


# ---------------------------------------------------------------------------------------------- integrity
def check_package(report: dict, package_dir: Path, *, expert: str) -> tuple[list[Finding], str]:
    """The two integrity findings for the package at `package_dir`, and a one-line detail.

    Raises InputError if there is no such directory (a usage problem, not tampering)."""
    from flexaudit.checkpoint import PICKLE_SUFFIXES
    from flexaudit.digest import artifact_files, file_digests, root_digest
    from flexaudit.expert import load_package

    if not package_dir.is_dir():
        raise InputError(f"expert package not found: {package_dir} (pass --package DIR with the audited package)")
    fmt_rule, dig_rule = RULES["PRIV-INT-FORMAT"], RULES["PRIV-INT-DIGEST"]
    files = artifact_files(package_dir)
    hidden_pickles = sorted(str(p.relative_to(package_dir)) for p in package_dir.rglob("*")
                            if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    bad = sorted(set(hidden_pickles) | {f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES})
    weights = package_dir / "expert.safetensors"
    if bad:
        f_format = base_finding(fmt_rule, None, status="integrity", expert=expert, location=str(package_dir / bad[0]),
                                message=f"pickle-format file(s) in the package: {', '.join(bad)} "
                                        "(flexaudit never loads pickle: it can run code)")
    else:
        f_format = base_finding(fmt_rule, None, status="pass", expert=expert, location=str(weights),
                                message=f"{len(files)} file(s), safetensors and JSON only")
    expected_root = report["subject"]["expert"]["root_digest"]
    problem = None
    if bad:
        problem = "not checked further: disallowed file format"
    else:
        try:
            package = load_package(package_dir)
        except (IntegrityError, InputError) as exc:  # e.g. the manifest was removed: not the audited package
            problem = exc.message
        else:
            actual_root = root_digest(package_dir)
            if actual_root != expected_root:
                stated = {f["path"]: f["sha256"] for f in report["subject"]["expert"]["files"]}
                now = file_digests(package_dir)
                changed = sorted(p for p in set(stated) | set(now) if stated.get(p) != now.get(p))
                problem = (f"package root digest {actual_root[:19]}... differs from the audited {expected_root[:19]}... "
                           f"(changed: {', '.join(changed) or 'unknown'})")
            elif (package.manifest.get("anchor") or {}).get("root_digest") != report["subject"]["anchor"]["root_digest"]:
                problem = "the package names another anchor than the audit did"
    if problem:
        f_digest = base_finding(dig_rule, None, status="integrity", expert=expert,
                                location=str(package_dir / "manifest.json"), message=problem)
        return [f_format, f_digest], problem
    f_digest = base_finding(dig_rule, None, status="pass", expert=expert, location=str(package_dir / "manifest.json"),
                            message=f"files hash to the audited root digest {expected_root}")
    return [f_format, f_digest], f"verified: files hash to {expected_root}"


# ---------------------------------------------------------------------------------------------- result
@dataclass
class GateResult:
    decision: str
    findings: list[Finding]
    policy: dict
    report: dict
    subject: dict
    package_check: dict
    evaluated_at: str
    baseline: dict | None = None
    resolved: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return DECISIONS[self.decision]

    @property
    def summary(self) -> str:
        return summary_line(self.decision, self.findings)

    def as_dict(self) -> dict:
        d = {"format": GATE_FORMAT, "decision": self.decision, "exit_code": self.exit_code,
             "evaluated_at": self.evaluated_at, "tool": {"name": "flexaudit", "version": __version__},
             "policy": dict(self.policy), "report": dict(self.report), "subject": dict(self.subject),
             "package_check": dict(self.package_check), "findings": [f.as_dict() for f in self.findings],
             "resolved": list(self.resolved), "baseline": self.baseline}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GateResult":
        return cls(decision=d["decision"], findings=[Finding.from_dict(f) for f in d["findings"]],
                   policy=d["policy"], report=d["report"], subject=d["subject"], package_check=d["package_check"],
                   evaluated_at=d["evaluated_at"], baseline=d.get("baseline"), resolved=list(d.get("resolved") or []))


def read_gate_result(path: str | Path) -> GateResult:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"gate result not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    validate(doc, version=SCHEMA_VERSION, name=GATE_SCHEMA, what=f"gate result {path}")
    return GateResult.from_dict(doc)


def _baseline_findings(path: Path, policy: Policy, today: dt.date) -> tuple[list[Finding], dict]:
    """Previous findings from a gate result JSON, or from a previous report.json evaluated with this policy."""
    from flexaudit.report.io import read_report, report_digest

    if not path.exists():
        raise InputError(f"baseline not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"baseline {path} is not valid JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("format") == GATE_FORMAT:
        previous = read_gate_result(path)
        return previous.findings, {"path": str(path), "kind": "gate result", "evaluated_at": previous.evaluated_at,
                                   "report_digest": previous.report["digest"]}
    report = read_report(path)
    return evaluate(report, policy, today=today), {"path": str(path), "kind": "report",
                                                   "report_digest": report_digest(report)}


def annotate_baseline(findings: list[Finding], previous: list[Finding]) -> tuple[list[Finding], list[dict]]:
    before = {f.fingerprint: f for f in previous if f.problem}
    now = {f.fingerprint for f in findings if f.problem}
    out = [f.with_(baseline_state=("unchanged" if f.fingerprint in before else "new")) if f.problem else f
           for f in findings]
    resolved = [{"rule_id": f.rule_id, "title": f.title, "fingerprint": f.fingerprint, "previous_status": f.status,
                 "previous_message": f.message} for fp, f in sorted(before.items()) if fp not in now]
    return out, resolved


def run_gate(audit_dir: str | Path, policy: Policy | None = None, *, package_dir: str | Path | None = None,
             baseline: str | Path | None = None, now: dt.datetime | None = None) -> GateResult:
    """Judge the audit in `audit_dir` (or a report.json path) under `policy` (default: the shipped one).

    The package is re-verified first: `package_dir`, else the path recorded in the report."""
    from flexaudit.report.io import read_report, report_digest, report_path

    policy = policy or default_policy()
    now = _utc(now)
    path = report_path(audit_dir)
    report = read_report(path)
    name, root = expert_of(report)
    pkg = Path(package_dir) if package_dir is not None else (
        Path(report["subject"]["expert"]["path"]) if report["subject"]["expert"].get("path") else None)
    if pkg is None:
        raise InputError("the report records no package path: pass --package DIR with the audited package")
    integrity, detail = check_package(report, pkg, expert=name)
    verified = all(f.status == "pass" for f in integrity)
    if verified:
        findings = integrity + evaluate(report, policy, today=now.date(), location=str(path))
    else:
        findings = integrity
    baseline_info, resolved = None, []
    if baseline is not None:
        previous, baseline_info = _baseline_findings(Path(baseline), policy, now.date())
        findings, resolved = annotate_baseline(findings, previous)
        baseline_info = {**baseline_info, "new": sum(f.baseline_state == "new" for f in findings),
                         "unchanged": sum(f.baseline_state == "unchanged" for f in findings),
                         "resolved": len(resolved)}
    result = GateResult(
        decision=decide(findings), findings=findings, policy=policy.identity(),
        report={"digest": report_digest(report), "id": report["document"]["id"],
                "schema_version": report["schema_version"], "path": str(path)},
        subject={"name": name, "root_digest": root},
        package_check={"verified": verified, "detail": detail, "path": str(pkg)},
        evaluated_at=iso(now), baseline=baseline_info, resolved=resolved)
    validate(result.as_dict(), name=GATE_SCHEMA, what="gate result")
    return result


def evaluation_block(report: dict, policy: Policy, *, now: dt.datetime) -> dict[str, Any]:
    """The report's own `verdict` section: the policy's controls on this report (no package re-check:
    the builder has just verified the package)."""
    findings = evaluate(report, policy, today=_utc(now).date())
    decision = decide(findings)
    return {"decision": decision, "summary": summary_line(decision, findings),
            "policy": {"name": policy.name, "digest": policy.digest}, "evaluated_at": iso(now),
            "controls": [f.as_dict() for f in findings]}
