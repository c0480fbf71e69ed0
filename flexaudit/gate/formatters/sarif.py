"""SARIF 2.1.0 (OASIS; GitHub code-scanning subset): one run, every rule of the catalogue, one result per
finding that is not a pass. Model-level findings still carry a physical location (report.json for metric
findings, the offending package file for integrity findings) because consumers drop results without one.
Waived findings carry an accepted external suppression; with a baseline, `baselineState` says new or
unchanged, and resolved findings appear with state "absent" and level "none".
"""

from __future__ import annotations

from flexaudit import __version__
from flexaudit.gate.formatters._paths import relative_uri
from flexaudit.report.findings import SECURITY_SEVERITY
from flexaudit.report.rules import RULES

SCHEMA_VER = "2.1.0"
SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {"fail": "error", "integrity": "error", "inconclusive": "warning", "waived": "note"}
DEFAULT_SEVERITY = {"PRIV-EXT-DISC": "critical", "PRIV-EXT-PII": "critical", "PRIV-EXT-PII-INF": "critical",
                    "PRIV-INT-DIGEST": "critical", "PRIV-INT-FORMAT": "critical", "PRIV-DP-AUDIT": "critical",
                    "PRIV-HYG-BLIND": "medium"}


def _camel(title: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in title.replace("-", " ").split() if w.isalnum() or w[:1].isalnum())


def _rules() -> list[dict]:
    from flexaudit.report.regulatory import obligations_for_control

    out = []
    for rule in RULES.values():
        severity = DEFAULT_SEVERITY.get(rule.id, "high")
        out.append({
            "id": rule.id, "name": _camel(rule.title),
            "shortDescription": {"text": rule.title}, "fullDescription": {"text": rule.description},
            "help": {"text": rule.help},
            "defaultConfiguration": {"level": "error"},
            "properties": {"tags": ["privacy", rule.family, *obligations_for_control(rule.id)][:20],
                           "security-severity": SECURITY_SEVERITY[severity], "precision": "high"},
        })
    return out


def to_sarif(result, *, root=None) -> dict:
    """The SARIF log (a dict; json.dumps it) of a GateResult."""
    rules = _rules()
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in result.findings:
        if not f.problem:
            continue
        r = {
            "ruleId": f.rule_id, "ruleIndex": index[f.rule_id], "level": LEVEL[f.status],
            "message": {"text": f"{result.subject['name']}: {f.title}: {f.message}"},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": relative_uri(f.location, root)},
                                                "region": {"startLine": 1}}}],
            "partialFingerprints": {"flexauditFinding/v1": f.fingerprint},
            "properties": {"status": f.status, "severity": f.severity, "expert": result.subject["name"],
                           "package_root_digest": result.subject["root_digest"], "attack_id": f.attack_id,
                           "observed": f.observed, "upper_bound": f.upper_bound, "anchor": f.anchor,
                           "increase": f.increase, "threshold": f.threshold, "samples": f.samples,
                           "maps_to": f.maps_to},
        }
        if f.status == "waived" and f.waiver:
            r["suppressions"] = [{"kind": "external", "status": "accepted",
                                  "justification": f"{f.waiver['id']} by {f.waiver['approver']}, expires "
                                                   f"{f.waiver['expires']}: {f.waiver['reason']}"}]
        if f.baseline_state:
            r["baselineState"] = f.baseline_state
        results.append(r)
    for gone in result.resolved:
        results.append({"ruleId": gone["rule_id"], "ruleIndex": index[gone["rule_id"]], "kind": "pass",
                        "level": "none", "baselineState": "absent",
                        "message": {"text": f"{result.subject['name']}: {gone['title']}: resolved since the baseline"},
                        "locations": [{"physicalLocation": {"artifactLocation": {
                            "uri": relative_uri(result.report.get("path"), root)}, "region": {"startLine": 1}}}],
                        "partialFingerprints": {"flexauditFinding/v1": gone["fingerprint"]}})
    return {
        "version": SCHEMA_VER, "$schema": SCHEMA_URI,
        "runs": [{
            "tool": {"driver": {"name": "flexaudit", "version": __version__, "semanticVersion": __version__,
                                "informationUri": "https://pypi.org/project/flexaudit/", "rules": rules}},
            "automationDetails": {"id": f"flexaudit-gate/{result.subject['name']}/"},
            "results": results,
            "invocations": [{"executionSuccessful": True, "exitCode": result.exit_code,
                             "endTimeUtc": result.evaluated_at}],
            "properties": {"decision": result.decision, "summary": result.summary, "policy": result.policy,
                           "report_digest": result.report["digest"],
                           "package_root_digest": result.subject["root_digest"]},
        }],
    }
