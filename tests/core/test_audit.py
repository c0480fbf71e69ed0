"""The audit command end to end on a tiny expert: a valid report, the anchor beside every figure, no text."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from flexaudit.audit import AuditOptions, run_audit
from flexaudit.cli import app
from flexaudit.report import read_report

runner = CliRunner()
SMALL = AuditOptions(max_documents=24, extraction_documents=6, samples_per_prefix=2, pii_prompts=6)


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_anchor, clinical_expert):
    out = tmp_path_factory.mktemp("audit") / "clinical"
    result = run_audit(clinical_expert, anchor_dir=tiny_anchor, out=out, options=SMALL)
    return out, result


def test_report_holds_every_attack_with_the_anchor_beside_it(audited):
    out, result = audited
    report = read_report(out)  # validates against the shipped schema
    membership = report["empirical"]["membership"]["attacks"]
    for attack in ("FA-MIA-LOSS", "FA-MIA-ZLIB", "FA-MIA-MINK", "FA-MIA-MINKPP", "FA-MIA-REF", "FA-MIA-RMIA"):
        assert membership[attack]["target"]["status"] == "ok", attack
        assert 0.0 <= membership[attack]["target"]["auc"] <= 1.0
    assert membership["FA-MIA-LOSS"]["anchor"]["status"] == "ok"
    extraction = report["empirical"]["extraction"]["attacks"]
    for attack in ("FA-EXT-DISC", "FA-EXT-SAMPLED", "FA-EXT-PROB"):
        assert extraction[attack]["target"]["n_documents"] == 6 and extraction[attack]["anchor"] is not None
    assert extraction["FA-EXT-CANARY"]["target"]["status"] == "not_run"  # trained without canaries: said so
    assert report["subject"]["expert"]["name"] == "clinical"
    assert (out / "figures").is_dir() and any((out / "figures").glob("*.svg"))


def test_report_never_holds_training_text(audited, clinical_expert):
    out, _ = audited
    raw = (out / "report.json").read_text()
    members = clinical_expert.with_name("clinical.local") / "members.jsonl"
    for line in members.read_text().splitlines()[:30]:
        text = json.loads(line)["text"]
        assert text[:30] not in raw
        for token in text.split():
            if "@" in token:  # e-mail addresses are personal data
                assert token.strip(".,") not in raw


def test_cli_exit_codes(audited, tiny_anchor, clinical_expert, tmp_path):
    out, _ = audited
    again = runner.invoke(app, ["audit", str(clinical_expert), "--anchor", str(tiny_anchor), "--out", str(out)])
    assert again.exit_code == 2 and "already holds a report" in again.stderr
    pkg = tmp_path / "pkg"
    shutil.copytree(clinical_expert, pkg)
    tensors = load_file(pkg / "expert.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] * 0.5
    save_file(tensors, str(pkg / "expert.safetensors"))
    tampered = runner.invoke(app, ["audit", str(pkg), "--anchor", str(tiny_anchor), "--out", str(tmp_path / "a")])
    assert tampered.exit_code == 3 and "does not match its manifest" in tampered.stderr
    pkg2 = tmp_path / "pkg2"
    shutil.copytree(clinical_expert, pkg2)
    missing = runner.invoke(app, ["audit", str(pkg2), "--anchor", str(tiny_anchor), "--out", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "members" in missing.stderr
    unknown = runner.invoke(app, ["audit", str(clinical_expert), "--anchor", str(tiny_anchor), "--out",
                                  str(tmp_path / "c"), "--attacks", "FA-MIA-NOPE"])
    assert unknown.exit_code == 2 and "unknown attack" in unknown.stderr


def test_report_renders(audited, tmp_path):
    out, _ = audited
    result = runner.invoke(app, ["report", str(out), "--format", "html,md", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert "clinical" in html and "data:image/svg+xml;base64," in html  # figures embedded
