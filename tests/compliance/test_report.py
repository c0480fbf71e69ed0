"""report.json: building, the shipped schema, validation on write and read, migration, redaction."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import pytest

from flexaudit.errors import InputError, IntegrityError
from flexaudit.report import build_report, read_report, report_digest, write_report
from flexaudit.report import schema as S
from flexaudit.report.resources import schema as schema_node
from flexaudit.report.testing import FAKE_ANCHOR, dp_block, fake_report, make_package

ROOT = Path(__file__).resolve().parents[2]


def test_report_sections_and_side_by_side_figures(make_audit):
    a = make_audit("clinical")
    r = read_report(a.audit)
    assert r["schema_version"] == S.SCHEMA_VERSION == "1.0.0"
    for section in ("document", "subject", "verdict", "intended_use", "data", "training", "privacy_guarantee",
                    "empirical", "dpia", "limitations"):
        assert section in r
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", r["document"]["policy"]["digest"])
    expert = r["subject"]["expert"]
    assert {f["path"] for f in expert["files"]} == {"expert.safetensors", "manifest.json"}
    assert r["subject"]["anchor"]["root_digest"] == FAKE_ANCHOR and r["subject"]["format_check"]["passed"]
    loss = r["empirical"]["membership"]["attacks"]["FA-MIA-LOSS"]
    assert loss["target"]["auc_ci"]["high"] >= loss["target"]["auc"] and loss["anchor"]["status"] == "ok"
    assert r["empirical"]["membership"]["attacks"]["FA-MIA-REF"]["anchor"]["status"] == "not_run"
    disc = r["empirical"]["extraction"]["attacks"]["FA-EXT-DISC"]
    assert disc["target"]["exact"]["ci"]["high"] > 0 and disc["anchor"]["exact"]["n"] == disc["target"]["exact"]["n"]
    assert r["privacy_guarantee"]["guarantee"] == "none" and "no formal guarantee" in r["privacy_guarantee"]["statement"]
    assert r["training"]["frozen"].startswith("embeddings") and r["training"]["steps"] == 300
    assert r["data"]["personal_data_categories"]  # derived from the PII attack's categories
    assert r["verdict"]["decision"] == "pass"
    assert any("lower bounds on leakage" in x for x in r["limitations"])


def test_report_is_canonical_and_digest_stable(make_audit):
    a = make_audit("clinical")
    text = (a.audit / "report.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert report_digest(read_report(a.audit)) == report_digest(a.report)


def test_dp_block_and_budget_consumption(tmp_path, clean_results):
    pkg = make_package(tmp_path / "dp", name="dp", privacy=dp_block(epsilon=3.0))
    r = fake_report(pkg, results=clean_results)
    g = r["privacy_guarantee"]
    assert (g["guarantee"], g["epsilon"], g["unit"]) == ("dp", 3.0, "document") and "opacus" in g["accountant"]
    points = g["consumption"]["points"]
    assert points[0] == {"step": 0, "epsilon": 0.0} and points[-1]["step"] == 300
    assert all(a["epsilon"] <= b["epsilon"] for a, b in zip(points, points[1:]))
    assert r["data"]["unit_of_privacy"] == "document"


def test_dp_figures_name_the_fallback_accountant(tmp_path, clean_results, monkeypatch):
    from flexaudit.privacy import AccountantFailure, Segment, account
    from flexaudit.privacy.accountants import RDPAccountant

    spent = account([Segment(4.0, 0.00033, 10000)], delta=1.1e-18)  # issue 15: PRV and PLD fail, RDP answers
    block = {**dp_block(epsilon=spent.epsilon, delta=1.1e-18, noise_multiplier=4.0, sample_rate=0.00033, steps=22),
             **{k: v for k, v in spent.to_dict().items() if k in ("accountant", "requested_accountant", "fallback")}}
    g = fake_report(make_package(tmp_path / "dp", name="dp", privacy=block), results=clean_results)["privacy_guarantee"]
    assert g["accountant"].startswith("rdp (opacus") and "fallback: figure by rdp after prv failed" in g["accountant"]
    assert g["details"]["requested_accountant"] == "prv"
    assert {p["accountant"] for p in g["consumption"]["points"][1:]} == {"rdp"}

    def broken(self, history, delta):
        raise AccountantFailure("rdp broken (test double)")

    monkeypatch.setattr(RDPAccountant, "_compute", broken)  # the budget figure's own accountant fails
    pkg = make_package(tmp_path / "dp2", name="dp2", privacy=dp_block(steps=22))
    consumption = fake_report(pkg, results=clean_results)["privacy_guarantee"]["consumption"]
    points = consumption["points"][1:]
    assert {p["accountant"] for p in points} == {"prv"} and "prv produced the point" in consumption["note"]
    assert all(a["epsilon"] <= b["epsilon"] for a, b in zip(points, points[1:]))


def test_dp_claim_without_its_parameters_is_refused(tmp_path, clean_results):
    pkg = make_package(tmp_path / "dp", name="dp", privacy={"guarantee": "dp", "epsilon": 2.0})
    with pytest.raises(InputError, match="delta, unit, accountant"):
        fake_report(pkg, results=clean_results)


def test_anchor_mismatch_is_an_integrity_error(tmp_path, clean_results):
    pkg = make_package(tmp_path / "x", name="x")
    with pytest.raises(IntegrityError, match="trained on anchor"):
        fake_report(pkg, results=clean_results, anchor_digest="sha256:" + "1" * 64)


def test_no_raw_text_without_reveal(tmp_path):
    from flexaudit.report.testing import fake_results

    results = fake_results(reveal=True, seed=3)  # the attack results carry raw examples
    pkg = make_package(tmp_path / "x", name="x")
    r = fake_report(pkg, results=results)
    blob = json.dumps(r)
    assert "Ada Moreau" not in blob and '"examples"' not in blob and not r["document"]["reveal"]
    assert any("raw text examples" in x for x in r["document"]["redactions"])
    assert '"sha256"' not in json.dumps(r["empirical"])  # unkeyed per-document hashes removed
    revealed = fake_report(pkg, results=results, reveal=True)
    assert revealed["document"]["reveal"] and "Ada Moreau" in json.dumps(revealed)
    sneaky = copy.deepcopy(revealed)
    sneaky["document"]["reveal"] = False
    with pytest.raises(InputError, match="examples"):
        S.validate(sneaky)


def test_write_refuses_invalid_and_nan(tmp_path, make_audit):
    r = copy.deepcopy(make_audit("clinical").report)
    r["verdict"]["decision"] = "maybe"
    with pytest.raises(InputError, match="verdict/decision"):
        write_report(tmp_path / "bad", r)
    r = copy.deepcopy(make_audit("other").report)
    r["training"]["final_loss"] = float("nan")
    with pytest.raises(InputError):
        write_report(tmp_path / "nan", r)
    assert not (tmp_path / "bad" / "report.json").exists()


@pytest.mark.parametrize("content, message", [
    (None, "audit directory not found"),
    ("", "not valid JSON"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"schema_version": "1.0.0"}', "does not match schema 1.0.0"),
    ('{"document": {}}', "no schema_version"),
    ('{"schema_version": "9.0.0"}', "newer than this flexaudit"),
    ('{"schema_version": "0.1.0"}', "cannot be migrated"),
    ('{"schema_version": 1}', "no schema_version"),
])
def test_read_refuses_malformed_reports(tmp_path, content, message):
    audit = tmp_path / "audit"
    if content is not None:
        audit.mkdir()
        (audit / "report.json").write_text(content)
    with pytest.raises(InputError, match=message):
        read_report(audit)


def test_migration_path_with_a_fake_older_version(monkeypatch, make_audit):
    current = make_audit("clinical").report

    def to_current(doc):  # the fake 0.9.0 kept the verdict under "decision" and had no dpia section
        doc = copy.deepcopy(doc)
        doc["verdict"] = doc.pop("decision")
        doc["dpia"] = {k: None for k in ("necessity", "proportionality", "risk_owner", "residual_risk", "consultation")} \
            | {"additional_measures": []}
        return doc

    old = copy.deepcopy(current)
    old["schema_version"] = "0.9.0"
    old["decision"] = old.pop("verdict")
    del old["dpia"]
    monkeypatch.setitem(S.MIGRATIONS, "0.9.0", ("1.0.0", to_current))
    migrated = S.migrate(old)
    assert migrated["schema_version"] == "1.0.0" and migrated["verdict"] == current["verdict"]
    S.validate(migrated)
    assert old["schema_version"] == "0.9.0"  # the input is not modified


def test_shipped_schemas_are_consistent():
    """$id names its version directory, every $ref resolves, the schemas are valid JSON Schema."""
    from jsonschema import Draft202012Validator

    for version in S.KNOWN_VERSIONS:
        for name in (S.REPORT_SCHEMA, S.GATE_SCHEMA):
            doc = json.loads(schema_node(f"v{version}", name).read_text())
            assert f"v{version}" in doc["$id"] and doc["$id"].endswith(name)
            Draft202012Validator.check_schema(doc)
            for ref in re.findall(r'"\$ref": "([^"]+)"', json.dumps(doc)):
                if ref.startswith("#/$defs/"):
                    assert ref.split("/")[-1] in doc["$defs"], ref
                else:
                    assert ref.startswith("urn:flexaudit:schema:v" + version), ref
    policy_schema = json.loads(schema_node("policy", "v1", "policy.schema.json").read_text())
    Draft202012Validator.check_schema(policy_schema)


def test_package_data_is_declared_and_default_policy_shipped():
    """Everything the code loads from `reports` is matched by pyproject's package-data globs, and the
    examples/ copy of the default policy is the shipped one."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["reports"]
    data = [p.relative_to(ROOT / "reports") for p in (ROOT / "reports").rglob("*") if p.is_file()
            and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert data
    for rel in data:
        assert any(rel.match(g) or rel.as_posix().startswith(g.split("/")[0] + "/") for g in globs), rel
    assert (ROOT / "examples" / "privacy-policy.toml").read_bytes() == \
        (ROOT / "reports" / "schema" / "policy" / "v1" / "privacy-policy.toml").read_bytes()


def test_build_accepts_result_objects_and_lists(tmp_path):
    """The builder takes the attack library's objects as well as their as_dict()."""
    from attacks import metrics
    from attacks.extraction.discoverable import DiscoverableResult
    from attacks.hygiene import BlindBaselineResult

    pkg = make_package(tmp_path / "x", name="x")
    disc = DiscoverableResult("FA-EXT-DISC", {}, 60, 0, metrics.rate(k=1, n=60), 0.2,
                              [{"sha256": "ab" * 32, "offset": 0, "token_match": 0.2, "exact": False}] * 60)
    blind = BlindBaselineResult("FA-HYG-BLIND", 0.5, metrics.Interval(0.4, 0.6), [0.5], 60, 60, 5, 0.6, None)
    r = build_report(pkg, anchor_digest=FAKE_ANCHOR, extraction={"target": [disc], "anchor": None}, hygiene=blind)
    assert r["empirical"]["membership"] is None
    assert r["empirical"]["extraction"]["attacks"]["FA-EXT-DISC"]["anchor"] is None
    assert any("not measured on the anchor" in x for x in r["limitations"])
    assert any("Membership inference was not run" in x for x in r["limitations"])
    assert r["verdict"]["decision"] == "inconclusive"  # the default policy's MIA controls lack evidence
    not_run = build_report(pkg, anchor_digest=FAKE_ANCHOR, extraction={"target": [{"attack_id": "FA-EXT-CANARY",
                           "status": "not_run", "reason": "no canaries were planted"}]})
    assert not_run["empirical"]["extraction"]["attacks"]["FA-EXT-CANARY"]["target"]["reason"] == "no canaries were planted"
