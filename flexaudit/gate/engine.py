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

from flexaudit import __version__
from flexaudit.errors import InputError, IntegrityError
from flexaudit.report.findings import Finding
from flexaudit.report.policy import Policy, default_policy
from flexaudit.report.rules import RULES, base_finding
from flexaudit.report.schema import GATE_SCHEMA, SCHEMA_VERSION, validate
from flexaudit.report.verdict import decide, evaluate, expert_of, iso, summary_line, utc

GATE_FORMAT = "flexaudit-gate/1"
DECISIONS = {"pass": 0, "pass_with_waivers": 0, "fail": 1, "inconclusive": 2, "integrity_failure": 3}


# ---------------------------------------------------------------------------------------------- integrity
def check_package(report: dict, package_dir: Path, *, expert: str) -> tuple[list[Finding], str]:
    """The two integrity findings for the package at `package_dir`, and a one-line detail.

    Raises InputError if there is no such directory (a usage problem, not tampering)."""
    from flexaudit.digest import artifact_files, file_digests, root_digest
    from flexaudit.moe.checkpoint import PICKLE_SUFFIXES
    from flexaudit.moe.expert import load_package

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
    now = utc(now)
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


