"""The policy gate: a CI decision on an audit, bound to the exact weights, with a stable exit code.

    from flexaudit.gate import load_policy, run_gate
    result = run_gate("audits/clinical", load_policy("privacy-policy.toml"))
    result.exit_code   # 0 pass, 1 violation, 2 inconclusive/bad input, 3 integrity failure
    to_sarif(result), to_junit(result), to_github(result), to_summary(result), to_markdown(result)

The gate re-verifies the package against the digests the report binds to, evaluates the policy's controls
(flexaudit.report.verdict, the same evaluation a report carries as its verdict), applies waivers and a
baseline, and writes gate.json; one formatter per CI format in `formatters`. The policy, its controls and
the Finding type live with the report (flexaudit.report.policy, .rules, .findings) and are re-exported here.
Rule IDs (stable): see flexaudit.report.rules.RULES.
"""

from flexaudit.gate.engine import DECISIONS, GateResult, read_gate_result, run_gate
from flexaudit.gate.formatters import to_github, to_junit, to_markdown, to_sarif, to_summary
from flexaudit.report.findings import Finding
from flexaudit.report.policy import (
           Control,
           Policy,
           Waiver,
           default_policy,
           default_policy_text,
           load_policy,
           parse_policy,
)
from flexaudit.report.rules import RULES
from flexaudit.report.verdict import apply_waivers, decide, evaluate

__all__ = ["run_gate", "evaluate", "decide", "apply_waivers", "read_gate_result", "GateResult", "DECISIONS",
           "Finding", "Policy", "Control", "Waiver", "load_policy", "parse_policy", "default_policy",
           "default_policy_text", "RULES", "to_sarif", "to_junit", "to_github", "to_summary", "to_markdown"]
