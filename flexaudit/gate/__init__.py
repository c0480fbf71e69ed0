"""The policy gate: judges an audit's report.json against a privacy policy, bound to the exact weights.

    from flexaudit.gate import load_policy, run_gate
    result = run_gate("audits/clinical", load_policy("privacy-policy.toml"))
    result.exit_code   # 0 pass, 1 violation, 2 inconclusive/bad input, 3 integrity failure
    to_sarif(result), to_junit(result), to_github(result), to_summary(result), to_markdown(result)

Rule IDs (stable): see flexaudit.gate.rules.RULES.
"""

from flexaudit.gate.engine import (DECISIONS, GateResult, apply_waivers, decide, evaluate, read_gate_result,
                                   run_gate)
from flexaudit.gate.findings import Finding
from flexaudit.gate.formatters import to_github, to_junit, to_markdown, to_sarif, to_summary
from flexaudit.gate.policy import Control, Policy, Waiver, default_policy, default_policy_text, load_policy, parse_policy
from flexaudit.gate.rules import RULES

__all__ = ["run_gate", "evaluate", "decide", "apply_waivers", "read_gate_result", "GateResult", "DECISIONS",
           "Finding", "Policy", "Control", "Waiver", "load_policy", "parse_policy", "default_policy",
           "default_policy_text", "RULES", "to_sarif", "to_junit", "to_github", "to_summary", "to_markdown"]
