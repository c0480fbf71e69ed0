"""ed25519 keys and DSSE envelopes (the `cryptography` package): what report and pool signatures are made of.

An envelope signs the DSSE pre-authentication encoding of its payload, so the payload type is signed too.
What is signed lives with its owner: a report's in-toto statement in flexaudit.report.signature, the pool's
head in flexaudit.pool.signing. A signature proves who signed only against a public key you already trust.

Keys: `flexaudit keys generate --out NAME` writes NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from flexaudit.errors import InputError, IntegrityError
from flexaudit.fsutil import atomic_write_bytes

INTOTO_TYPE = "application/vnd.in-toto+json"


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
