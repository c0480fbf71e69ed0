"""The one-screen terminal summary and the Markdown summary (PR comments, $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from flexaudit.report.filters import md_escape

MARK = {"pass": "PASS", "fail": "FAIL", "waived": "WAIVED", "inconclusive": "INCONCLUSIVE", "integrity": "INTEGRITY",
        "skipped": "skipped"}
ICON = {"pass": "✅", "fail": "❌", "waived": "⚠️", "inconclusive": "❔", "integrity": "⛔", "skipped": "➖"}
ORDER = {"integrity": 0, "fail": 1, "inconclusive": 2, "waived": 3, "pass": 4, "skipped": 5}


def _sorted(findings):
    return sorted(findings, key=lambda f: (ORDER[f.status], f.rule_id))


def to_summary(result, *, width: int = 160) -> str:
    """Plain text, at most ~20 lines: the decision, one line per control, the baseline counts."""
    lines = [f"flexaudit gate: {result.summary}",
             f"  expert {result.subject['name']}  {result.subject['root_digest']}",
             f"  policy {result.policy['name']}  {result.policy['digest']}",
             f"  package: {result.package_check['detail']}"]
    for f in _sorted(result.findings):
        tag = MARK[f.status] + (f" ({f.baseline_state})" if f.baseline_state else "")
        line = f"  {tag:<20} {f.rule_id:<17} {f.message}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    if result.baseline:
        b = result.baseline
        lines.append(f"  baseline {b['path']}: {b['new']} new, {b['unchanged']} unchanged, {b['resolved']} resolved")
        for gone in result.resolved:
            lines.append(f"  {'RESOLVED':<20} {gone['rule_id']:<17} was {gone['previous_status']}")
    lines.append(f"  exit code {result.exit_code}")
    return "\n".join(lines) + "\n"


def to_markdown(result) -> str:
    """A Markdown summary; every value that comes from the report or the policy is escaped."""
    e = md_escape
    out = [f"### flexaudit gate: {e(result.summary)}", "",
           f"Expert **{e(result.subject['name'])}** `{result.subject['root_digest']}` · policy "
           f"{e(result.policy['name'])} `{result.policy['digest'][:19]}…` · exit code {result.exit_code}", "",
           "| | control | result |", "|---|---|---|"]
    for f in _sorted(result.findings):
        state = f" ({f.baseline_state})" if f.baseline_state else ""
        out.append(f"| {ICON[f.status]} {MARK[f.status]}{state} | `{f.rule_id}` {e(f.title)} | {e(f.message)} |")
    for gone in result.resolved:
        out.append(f"| ✅ RESOLVED | `{gone['rule_id']}` {e(gone['title'])} | was {gone['previous_status']} |")
    out += ["", f"Package check: {e(result.package_check['detail'])}", ""]
    return "\n".join(out)
