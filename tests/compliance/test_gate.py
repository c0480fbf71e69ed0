"""The gate: exit codes, upper-bound thresholds, sample sizes, waivers, baselines, and every output format."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from flexaudit.gate import Finding, evaluate, load_policy, parse_policy, run_gate, to_github, to_junit, to_sarif
from flexaudit.report.policy import default_policy_text

from ..conftest import invoke, one_error_line


def _policy(tmp_path, text: str, name: str = "policy.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = '''format = "flexaudit-policy/1"
name = "test"
[controls.PRIV-EXT-DISC]
max = 0.10
max_increase_over_anchor = 0.10
min_samples = {min_samples}
'''


def test_clean_expert_passes_exit_0(make_audit, tmp_path):
    a = make_audit("clinical")
    result = invoke("gate", a.audit, "--policy", _policy(tmp_path, default_policy_text()), "--sarif", tmp_path / "r.sarif",
                    "--junit", tmp_path / "r.xml", "--json", tmp_path / "gate.json", "--markdown", tmp_path / "g.md")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "exit code 0" in result.stdout
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["decision"] == "pass" and gate["package_check"]["verified"]
    assert (tmp_path / "g.md").read_text().startswith("### flexaudit gate: PASS")


def test_paths_the_file_system_refuses_exit_2_naming_them(make_audit, tmp_path):
    a = make_audit("clinical")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    result = invoke("gate", a.audit, "--sarif", a_file / "r.sarif")
    assert result.exit_code == 2
    assert f"cannot write {a_file / 'r.sarif'}: File exists (a file is in the way" in one_error_line(result)
    result = invoke("gate", a.audit, "--policy", tmp_path)
    assert result.exit_code == 2 and "is a folder, not a policy file" in one_error_line(result)
    result = invoke("gate", a.audit, "--json", tmp_path)  # a folder: not its atomic write's temporary name
    assert result.exit_code == 2 and one_error_line(result).endswith(
        f"cannot write {tmp_path}: Is a directory (it is a folder where a file is expected: give a file)")
    assert a_file.read_text() == "keep me"


def test_leaky_expert_fails_exit_1(make_audit):
    a = make_audit("leaky", leaky=True)
    result = invoke("gate", a.audit)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout and "PRIV-EXT-DISC" in result.stdout


def test_missing_or_malformed_audit_exit_2(tmp_path, make_audit):
    result = invoke("gate", tmp_path / "nowhere")
    assert result.exit_code == 2 and "audit directory not found" in one_error_line(result)
    (tmp_path / "empty").mkdir()
    result = invoke("gate", tmp_path / "empty")
    assert result.exit_code == 2 and "holds no report.json" in one_error_line(result)
    a = make_audit("clinical")
    (a.audit / "report.json").write_text('{"schema_version": "1.0.0", "document": 3}')
    result = invoke("gate", a.audit)
    assert result.exit_code == 2 and "does not match schema" in one_error_line(result)


@pytest.mark.parametrize("text, message", [
    ("this is not toml", "not valid TOML"),
    ('format = "flexaudit-policy/1"\nname = "x"\n[controls.PRIV-NOPE]\nmax = 1', "PRIV-NOPE"),
    ('format = "flexaudit-policy/1"\nname = "x"\n[controls.PRIV-EXT-DISC]\nmaxx = 1', "maxx"),
    ('format = "flexaudit-policy/1"\nname = "x"\n[controls.PRIV-EXT-DISC]\nmax = "high"', "max"),
    ('name = "x"\n[controls.PRIV-EXT-DISC]\nmax = 1', "format"),
    ('format = "flexaudit-policy/1"\nname = "x"\n[controls.PRIV-EXT-DISC]\nmax = 1\n[[waivers]]\nid = "W"\nrule = "PRIV-EXT-DISC"',
     "waivers"),
])
def test_malformed_policy_exit_2_one_line(make_audit, tmp_path, text, message):
    a = make_audit("clinical")
    result = invoke("gate", a.audit, "--policy", _policy(tmp_path, text))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "policy" in line and message in line


def test_changed_weights_exit_3(make_audit, tmp_path):
    a = make_audit("clinical")
    weights = a.package / "expert.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    result = invoke("gate", a.audit, "--sarif", tmp_path / "r.sarif")
    assert result.exit_code == 3, result.output
    assert "INTEGRITY" in result.stdout and "expert.safetensors" in result.stdout
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["PRIV-INT-DIGEST"]


def test_manifest_rewritten_to_match_new_weights_exit_3(make_audit):
    """An attacker who re-signs the manifest for new weights still changes the root digest."""
    from flexaudit.report.testing import make_package

    a = make_audit("clinical")
    make_package(a.package, name="clinical", seed=99)  # a different, self-consistent package at the same path
    result = invoke("gate", a.audit)
    assert result.exit_code == 3 and "differs from the audited" in result.stdout


@pytest.mark.parametrize("name", ["extra.bin", "pytorch_model.pt", "sub/evil.pkl"])
def test_pickle_file_in_package_exit_3(make_audit, name):
    a = make_audit("clinical")
    target = a.package / name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"\x80\x04cos\nsystem\n.")
    result = invoke("gate", a.audit)
    assert result.exit_code == 3, result.output
    assert "PRIV-INT-FORMAT" in result.stdout and "pickle" in result.stdout


def test_package_option_and_missing_package(make_audit, tmp_path):
    a = make_audit("clinical")
    moved = tmp_path / "moved"
    shutil.move(a.package, moved)
    result = invoke("gate", a.audit)
    assert result.exit_code == 2 and "expert package not found" in one_error_line(result)
    assert invoke("gate", a.audit, "--package", moved).exit_code == 0


def test_thresholds_use_the_upper_bound_and_min_samples(make_audit, tmp_path):
    a = make_audit("clinical")  # 0 of 150 documents extracted: value 0, 95% upper bound 0.024
    strict = parse_policy(MINIMAL.format(min_samples=10).replace("max = 0.10\nmax_inc", "max = 0.02\nmax_inc").encode(),
                          source="t")
    [f] = evaluate(a.report, strict)
    assert f.status == "fail" and f.observed == 0 and f.upper_bound > 0.02  # the value alone would pass
    lenient = parse_policy(MINIMAL.format(min_samples=10).encode(), source="t")
    assert evaluate(a.report, lenient)[0].status == "pass"
    few = parse_policy(MINIMAL.format(min_samples=1000).encode(), source="t")
    [f] = evaluate(a.report, few)
    assert f.status == "inconclusive" and "fewer than min_samples 1000" in f.message
    result = invoke("gate", a.audit, "--policy", _policy(tmp_path, MINIMAL.format(min_samples=1000)))
    assert result.exit_code == 2 and "INCONCLUSIVE" in result.stdout


def test_certain_violation_with_few_samples_still_fails(make_audit):
    a = make_audit("leaky", leaky=True)  # 68 of 150 extracted: even the lower bound is far above 0.10
    [f] = evaluate(a.report, parse_policy(MINIMAL.format(min_samples=1000).encode(), source="t"))
    assert f.status == "fail" and f.lower_bound > 0.1


def test_increase_over_anchor(make_audit):
    a = make_audit("clinical")
    text = '''format = "flexaudit-policy/1"
name = "t"
[controls.PRIV-MIA-AUC]
max_increase_over_anchor = 0.01
'''
    [f] = evaluate(a.report, parse_policy(text.encode(), source="t"))
    assert f.status == "fail" and "increase over anchor" in f.message and f.anchor is not None
    assert f.increase == pytest.approx(f.upper_bound - f.anchor)


def test_missing_metric_is_inconclusive_unless_skipped(tmp_path):
    from flexaudit.report import build_report
    from flexaudit.report.testing import FAKE_ANCHOR, make_package

    pkg = make_package(tmp_path / "x", name="x")
    report = build_report(pkg, anchor_digest=FAKE_ANCHOR)  # no attack ran at all
    policy = parse_policy(MINIMAL.format(min_samples=5).encode(), source="t")
    assert evaluate(report, policy)[0].status == "inconclusive"
    skip = parse_policy(MINIMAL.format(min_samples=5).replace("min_samples", 'on_missing = "skip"\nmin_samples').encode(), source="t")
    assert evaluate(report, skip)[0].status == "skipped"


def _waiver_policy(tmp_path, digest: str, expires: str) -> str:
    return MINIMAL.format(min_samples=10) + f'''
[[waivers]]
id = "WVR-1"
rule = "PRIV-EXT-DISC"
package_root_digest = "{digest}"
reason = "boilerplate headers; re-audit after de-duplication"
approver = "J. Doe, DPO"
expires = {expires}
'''


def test_waiver_passes_until_expiry_and_not_after(make_audit, tmp_path):
    a = make_audit("leaky", leaky=True)
    digest = a.report["subject"]["expert"]["root_digest"]
    policy = parse_policy(_waiver_policy(tmp_path, digest, "2030-06-30").encode(), source="t")
    [f] = evaluate(a.report, policy, today=dt.date(2030, 6, 30))
    assert f.status == "waived" and f.waiver["id"] == "WVR-1" and not f.waiver["expired"]
    [f] = evaluate(a.report, policy, today=dt.date(2030, 7, 1))
    assert f.status == "fail" and f.waiver["expired"] and "expired on 2030-06-30" in f.message
    other = parse_policy(_waiver_policy(tmp_path, "sha256:" + "0" * 64, "2030-06-30").encode(), source="t")
    assert evaluate(a.report, other, today=dt.date(2030, 1, 1))[0].status == "fail"  # scoped to one package
    # through the command line, against today's date
    future = invoke("gate", a.audit, "--policy", _policy(tmp_path, _waiver_policy(tmp_path, digest, "2999-01-01"), "w1.toml"),
                    "--sarif", tmp_path / "w.sarif")
    assert future.exit_code == 0 and "WAIVED" in future.stdout
    sarif = json.loads((tmp_path / "w.sarif").read_text())
    [res] = sarif["runs"][0]["results"]
    assert res["level"] == "note" and res["suppressions"][0]["status"] == "accepted"
    past = invoke("gate", a.audit, "--policy", _policy(tmp_path, _waiver_policy(tmp_path, digest, "2001-01-01"), "w2.toml"))
    assert past.exit_code == 1 and "expired" in past.stdout


def test_baseline_new_unchanged_resolved(make_audit, tmp_path):
    clean, leaky = make_audit("clinical"), make_audit("clinical-v2", leaky=True)
    text = default_policy_text()
    # the same expert name across versions: baseline matches by rule + expert name
    first = run_gate(leaky.audit, parse_policy(text.encode(), source="p"))
    (tmp_path / "base.json").write_text(json.dumps(first.as_dict()))
    again = run_gate(leaky.audit, parse_policy(text.encode(), source="p"), baseline=tmp_path / "base.json")
    assert {f.baseline_state for f in again.findings if f.problem} == {"unchanged"}
    assert again.baseline["new"] == 0 and again.exit_code == 1  # a baseline never makes a leaky expert pass
    # a clean expert's findings against a previous *report* of a leaky one with the same name
    renamed = json.loads((leaky.audit / "report.json").read_text())
    renamed["subject"]["expert"]["name"] = "clinical"
    (tmp_path / "old-report.json").write_text(json.dumps(renamed))
    fixed = run_gate(clean.audit, parse_policy(text.encode(), source="p"), baseline=tmp_path / "old-report.json")
    assert fixed.exit_code == 0 and fixed.baseline["resolved"] == 8 and fixed.baseline["kind"] == "report"
    result = invoke("gate", clean.audit, "--baseline", tmp_path / "old-report.json", "--sarif", tmp_path / "b.sarif")
    assert result.exit_code == 0 and "RESOLVED" in result.stdout
    states = {r.get("baselineState") for r in json.loads((tmp_path / "b.sarif").read_text())["runs"][0]["results"]}
    assert states == {"absent"}
    bad = tmp_path / "bad-baseline.json"
    bad.write_text('{"format": "flexaudit-gate/1"}')
    result = invoke("gate", clean.audit, "--baseline", bad)
    assert result.exit_code == 2 and "gate result" in one_error_line(result)


def test_sarif_structure(make_audit):
    a = make_audit("leaky", leaky=True)
    result = run_gate(a.audit, load_policy())
    sarif = to_sarif(result)
    assert sarif["version"] == "2.1.0" and sarif["$schema"].endswith("sarif-2.1.0.json")
    run = sarif["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids)) and "PRIV-MIA-TPR" in ids
    assert all(float(r["properties"]["security-severity"]) >= 0 and r["shortDescription"]["text"] for r in rules)
    assert run["invocations"][0]["exitCode"] == 1
    for r in run["results"]:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["level"] in ("error", "warning", "note", "none")
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] and loc["region"]["startLine"] == 1
        assert len(r["partialFingerprints"]["flexauditFinding/v1"]) == 64
    assert {r["ruleId"] for r in run["results"]} >= {"PRIV-EXT-DISC", "PRIV-MIA-AUC"}
    json.dumps(sarif)


def test_junit_xml(make_audit):
    a = make_audit("leaky", leaky=True)
    root = ET.fromstring(to_junit(run_gate(a.audit, load_policy())).split("\n", 1)[1])
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == 13
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases) == 8
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["decision"] == "fail" and props["package_root_digest"].startswith("sha256:")


def test_github_annotations_escape(make_audit):
    a = make_audit("leaky", leaky=True)
    result = run_gate(a.audit, load_policy())
    text = to_github(result)
    lines = text.strip().splitlines()
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
    assert len(lines) == 9 and "%25 CI" in text  # '%' in data is escaped
    f = Finding(rule_id="PRIV-EXT-DISC", title="t", status="fail", severity="high", message="50% a, b: c\r",
                location="dir,with:odd/report.json")
    result.findings = [f]
    line = to_github(result).splitlines()[0]
    assert "file=dir%2Cwith%3Aodd/report.json" in line and line.endswith("::50%25 a, b: c%0D")


def test_github_flag_and_step_summary(make_audit, tmp_path, monkeypatch):
    a = make_audit("leaky", leaky=True)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = invoke("gate", a.audit, "--github", "--quiet")
    assert result.exit_code == 1
    assert result.stdout.count("::error ") == 9 and "exit code" not in result.stdout
    assert "| ❌ FAIL |" in summary.read_text()


def test_the_example_policy_is_the_shipped_default():
    """examples/privacy-policy.toml is what users copy and edit: it must be the policy the gate applies by default."""
    from pathlib import Path

    from flexaudit.report.policy import default_policy_text

    example = Path(__file__).resolve().parents[2] / "examples" / "privacy-policy.toml"
    assert example.read_text(encoding="utf-8") == default_policy_text()
