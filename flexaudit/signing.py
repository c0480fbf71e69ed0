"""Optional ed25519 signatures (the `cryptography` package) over reports and the pool log's head.

Format (compliance.md §4.2's binding recipe, without a transparency log): the signed payload is an
in-toto Statement v1 whose subject is the expert package's root digest and whose predicate holds the
report digest, id, verdict and policy digest; it is wrapped in a DSSE envelope (signature over the DSSE
pre-authentication encoding, so the payload type is signed too). The envelope sits beside the report as
`report.sig.json`; verification checks the signature, then that the predicate still matches the report
on disk. A signature proves who signed only against a public key you already trust: pass it.

Keys: `flexaudit keys generate --out NAME` writes NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_bytes, atomic_write_json

INTOTO_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
AUDIT_PREDICATE = "https://flexaudit.dev/privacy-audit/v1"
POOL_HEAD_TYPE = "application/vnd.flexaudit.pool-head+json"
SIGNATURE_FILE = "report.sig.json"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ImportError:
        raise InputError("signing needs the 'cryptography' package: pip install cryptography") from None
    return serialization, Ed25519PrivateKey, Ed25519PublicKey, InvalidSignature


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def _raw_public(public_key) -> bytes:
    serialization, *_ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    return "ed25519:" + hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def generate_keypair(prefix: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (private, 0600) and PREFIX.pub; refuses to overwrite unless asked."""
    serialization, Ed25519PrivateKey, _, _ = _crypto()
    prefix = Path(prefix)
    key_path, pub_path = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for p in (key_path, pub_path):
        if p.exists() and not overwrite:
            raise InputError(f"{p} already exists: choose another --out or pass --force")
    key = Ed25519PrivateKey.generate()
    atomic_write_bytes(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()), mode=0o600)
    atomic_write_bytes(pub_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: str | Path):
    serialization, Ed25519PrivateKey, _, _ = _crypto()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"private key not found: {path} (make one with `flexaudit keys generate --out NAME`)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} is not an ed25519 key")
    return key


def load_public_key(path: str | Path):
    serialization, _, Ed25519PublicKey, _ = _crypto()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"public key not found: {path}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path} is not an ed25519 public key")
    return key


def sign_payload(private_key, payload: dict, *, payload_type: str = INTOTO_TYPE) -> dict:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    pub = private_key.public_key()
    return {"payloadType": payload_type, "payload": base64.b64encode(body).decode("ascii"),
            "signatures": [{"keyid": key_id(pub), "sig": base64.b64encode(private_key.sign(pae(payload_type, body))).decode("ascii")}],
            "publicKeys": {key_id(pub): base64.b64encode(_raw_public(pub)).decode("ascii")}}


def verify_envelope(envelope: Any, public_key=None, *, what: str = "signature") -> tuple[dict, str, bool]:
    """(payload, signer key id, trusted) after checking the signature; IntegrityError if it does not verify.

    With `public_key` the envelope must be signed by that key (trusted=True); without it the signature is
    only checked against the key the envelope itself names (trusted=False: consistent, signer unknown)."""
    _, _, Ed25519PublicKey, InvalidSignature = _crypto()
    try:
        payload_type = envelope["payloadType"]
        body = base64.b64decode(envelope["payload"], validate=True)
        sig_entry = envelope["signatures"][0]
        sig = base64.b64decode(sig_entry["sig"], validate=True)
        kid = sig_entry["keyid"]
    except (KeyError, IndexError, TypeError, ValueError):
        raise InputError(f"{what} is not a DSSE envelope written by flexaudit") from None
    if public_key is None:
        try:
            public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(envelope["publicKeys"][kid]))
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"{what} names no usable public key: pass --public-key") from None
        trusted = False
    else:
        trusted = True
        if key_id(public_key) != kid:
            raise IntegrityError(f"{what} was made by key {kid}, not by the given public key {key_id(public_key)}")
    try:
        public_key.verify(sig, pae(payload_type, body))
    except InvalidSignature:
        raise IntegrityError(f"{what} does not verify: the signed content was changed after signing") from None
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        raise IntegrityError(f"{what} payload is not JSON") from None
    return payload, kid, trusted


# ---------------------------------------------------------------------------------------------- reports
def report_statement(report: dict) -> dict:
    from flexaudit.report.io import report_digest

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
    from flexaudit.report.io import read_report, report_path

    path = report_path(audit_dir)
    report = read_report(path)
    key = load_private_key(private_key_path)
    envelope = sign_payload(key, report_statement(report))
    out = path.parent / SIGNATURE_FILE
    atomic_write_json(out, envelope)
    return out, key_id(key.public_key())


def verify_report_signature(audit_dir: str | Path, public_key_path: str | Path | None = None) -> dict:
    """Check AUDIT_DIR/report.sig.json against the report on disk; IntegrityError on any mismatch."""
    from flexaudit.report.io import read_report, report_path

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
