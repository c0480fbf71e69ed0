"""GitHub Actions workflow commands: one `::error`/`::warning`/`::notice` line per finding that is not a
pass, with properties and data escaped as the runner expects (data: % CR LF; properties also : and ,).
The Markdown summary for $GITHUB_STEP_SUMMARY is `to_markdown`.
"""

from __future__ import annotations

from flexaudit.gate.formatters._paths import relative_uri

COMMAND = {"fail": "error", "integrity": "error", "inconclusive": "warning", "waived": "notice"}


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def to_github(result, *, root=None) -> str:
    lines = []
    for f in result.findings:
        if not f.problem:
            continue
        props = {"file": relative_uri(f.location, root), "line": "1",
                 "title": f"{f.rule_id} {f.title} ({result.subject['name']})"}
        prop_text = ",".join(f"{k}={escape_property(v)}" for k, v in props.items())
        lines.append(f"::{COMMAND[f.status]} {prop_text}::{escape_data(f.message)}")
    level = "error" if result.exit_code else "notice"
    lines.append(f"::{level} title={escape_property('flexaudit gate')}::{escape_data(result.summary)}")
    return "\n".join(lines) + "\n"
