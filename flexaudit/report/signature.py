"""Signatures over audit reports: a compliance officer signs what the report says, bound to the exact weights.

Format (compliance.md §4.2's binding recipe, without a transparency log): the signed payload is an in-toto
Statement v1 whose subject is the expert package's root digest and whose predicate holds the report digest,
id, verdict and policy digest; it is wrapped in a DSSE envelope (flexaudit.signing). The envelope sits beside
the report as `report.sig.json`; verification checks the signature, then that the predicate still matches the
report on disk. Rendered reports show whether a signature is present and matches (`signature_status`).
"""

from __future__ import annotations

import json
from pathlib import Path

from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_json
from flexaudit.report.io import read_report, report_digest, report_path
from flexaudit.signing import key_id, load_private_key, load_public_key, sign_payload, verify_envelope

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
AUDIT_PREDICATE = "https://flexaudit.dev/privacy-audit/v1"
SIGNATURE_FILE = "report.sig.json"


def report_statement(report: dict) -> dict:
    expert = report["subject"]["expert"]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": expert["name"], "digest": {"sha256": expert["root_digest"].removeprefix("sha256:")}}],
        "predicateType": AUDIT_PREDICATE,
        "predicate": {"report_digest": report_digest(report), "report_id": report["document"]["id"],
                      "schema_version": report["schema_version"], "decision": report["verdict"]["decision"],
                      "policy_digest": report["verdict"]["policy"]["digest"],
                      "anchor_root_digest": report["subject"]["anchor"]["root_digest"]},
    }


def sign_report(audit_dir: str | Path, private_key_path: str | Path) -> tuple[Path, str]:
    """Sign AUDIT_DIR/report.json (read and validated first); writes AUDIT_DIR/report.sig.json."""
    path = report_path(audit_dir)
    report = read_report(path)
    key = load_private_key(private_key_path)
    envelope = sign_payload(key, report_statement(report))
    out = path.parent / SIGNATURE_FILE
    atomic_write_json(out, envelope)
    return out, key_id(key.public_key())


def verify_report_signature(audit_dir: str | Path, public_key_path: str | Path | None = None) -> dict:
    """Check AUDIT_DIR/report.sig.json against the report on disk; IntegrityError on any mismatch."""
    path = report_path(audit_dir)
    sig_path = path.parent / SIGNATURE_FILE
    if not sig_path.is_file():
        raise IntegrityError(f"{path.parent} has no {SIGNATURE_FILE}: the report is not signed")
    try:
        envelope = json.loads(sig_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{sig_path} is not valid JSON") from None
    public_key = load_public_key(public_key_path) if public_key_path is not None else None
    payload, kid, trusted = verify_envelope(envelope, public_key, what=str(sig_path))
    report = read_report(path)
    expected = report_statement(report)
    if payload != expected:
        raise IntegrityError(f"{sig_path} was made for another report (digest {payload.get('predicate', {}).get('report_digest', '?')[:19]}...); "
                             "report.json changed after it was signed")
    return {"key_id": kid, "trusted": trusted, "report_digest": expected["predicate"]["report_digest"],
            "path": str(sig_path)}


def signature_status(audit_dir: str | Path) -> dict | None:
    """For the rendered report: is there a signature, and does it match this report (signer not trusted)?"""
    sig_path = Path(audit_dir) / SIGNATURE_FILE
    if not sig_path.is_file():
        return None
    try:
        info = verify_report_signature(audit_dir)
        return {"present": True, "valid": True, "key_id": info["key_id"], "detail": "matches this report"}
    except (IntegrityError, InputError) as exc:
        return {"present": True, "valid": False, "key_id": None, "detail": exc.message}
