"""ed25519 signatures over reports (in-toto statement in a DSSE envelope)."""

from __future__ import annotations

import json

from ..conftest import invoke, one_error_line


def test_sign_and_verify_report(make_audit, tmp_path):
    a = make_audit("clinical")
    assert invoke("keys", "generate", "--out", tmp_path / "officer").exit_code == 0
    assert (tmp_path / "officer.key").stat().st_mode & 0o777 == 0o600
    r = invoke("report-sign", a.audit, "--key", tmp_path / "officer.key")
    assert r.exit_code == 0 and (a.audit / "report.sig.json").is_file()
    envelope = json.loads((a.audit / "report.sig.json").read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    r = invoke("report-verify", a.audit, "--public-key", tmp_path / "officer.pub", "--package", a.package)
    assert r.exit_code == 0 and "trusted key" in r.stdout and "verified" in r.stdout
    from flexaudit.report.render import render_report

    assert "signed by key ed25519:" in render_report(a.audit, "html")["html"].read_text()


def test_tampering_is_an_integrity_failure(make_audit, tmp_path):
    a = make_audit("clinical")
    invoke("keys", "generate", "--out", tmp_path / "k")
    invoke("keys", "generate", "--out", tmp_path / "other")
    invoke("report-sign", a.audit, "--key", tmp_path / "k.key")
    r = invoke("report-verify", a.audit, "--public-key", tmp_path / "other.pub")
    assert r.exit_code == 3 and "not by the given public key" in one_error_line(r)
    report = json.loads((a.audit / "report.json").read_text())
    report["limitations"].append("edited after signing")
    (a.audit / "report.json").write_text(json.dumps(report))
    r = invoke("report-verify", a.audit, "--public-key", tmp_path / "k.pub")
    assert r.exit_code == 3 and "changed after it was signed" in one_error_line(r)
    envelope = json.loads((a.audit / "report.sig.json").read_text())
    envelope["payload"] = envelope["payload"][:-4] + "AAA="
    (a.audit / "report.sig.json").write_text(json.dumps(envelope))
    r = invoke("report-verify", a.audit, "--public-key", tmp_path / "k.pub")
    assert r.exit_code in (2, 3)
    assert invoke("report-verify", a.audit, "--public-key", tmp_path / "missing.pub").exit_code == 2


def test_unsigned_report_and_changed_package(make_audit, tmp_path):
    a = make_audit("clinical")
    r = invoke("report-verify", a.audit)
    assert r.exit_code == 3 and "not signed" in one_error_line(r)
    invoke("keys", "generate", "--out", tmp_path / "k")
    invoke("report-sign", a.audit, "--key", tmp_path / "k.key")
    (a.package / "expert.safetensors").write_bytes(b"\x00" * 16)
    r = invoke("report-verify", a.audit, "--public-key", tmp_path / "k.pub", "--package", a.package)
    assert r.exit_code == 3 and "PRIV-INT-DIGEST" in one_error_line(r)
