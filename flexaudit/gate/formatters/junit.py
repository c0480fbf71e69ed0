"""JUnit XML: one <testsuite> per expert, one <testcase> per control (classname = control family).

A violation is a <failure>, an inconclusive control or an integrity failure an <error>, a waived or
skipped control <skipped> with the reason; suite <properties> carry the digests that make the run
reproducible. There is always at least one testcase (empty suites break some consumers).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from flexaudit.report.rules import RULES


def to_junit(result) -> str:
    findings = result.findings
    counts = {"tests": len(findings), "failures": sum(f.status == "fail" for f in findings),
              "errors": sum(f.status in ("inconclusive", "integrity") for f in findings),
              "skipped": sum(f.status in ("waived", "skipped") for f in findings)}
    root = ET.Element("testsuites", name="flexaudit gate", **{k: str(v) for k, v in counts.items()})
    suite = ET.SubElement(root, "testsuite", name=f"expert {result.subject['name']}", timestamp=result.evaluated_at,
                          **{k: str(v) for k, v in counts.items()})
    props = ET.SubElement(suite, "properties")
    for name, value in (("decision", result.decision), ("exit_code", str(result.exit_code)),
                        ("package_root_digest", result.subject["root_digest"]),
                        ("report_digest", result.report["digest"]), ("report_id", result.report["id"]),
                        ("policy", result.policy["name"]), ("policy_digest", result.policy["digest"])):
        ET.SubElement(props, "property", name=name, value=value)
    for f in findings:
        case = ET.SubElement(suite, "testcase", classname=RULES[f.rule_id].family, name=f"{f.rule_id} {f.title}",
                             time="0")
        if f.status == "fail":
            ET.SubElement(case, "failure", message=f.message, type=f.severity).text = f.message
        elif f.status in ("inconclusive", "integrity"):
            ET.SubElement(case, "error", message=f.message, type=f.status).text = f.message
        elif f.status in ("waived", "skipped"):
            ET.SubElement(case, "skipped", message=f.message)
        ET.SubElement(case, "system-out").text = f.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
