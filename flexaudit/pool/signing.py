"""Signing the pool's head: an ed25519 signature over (pool id, seq, hash) of the log's last entry.

An attacker who rewrites the whole database cannot forge a head that the holder of the key signed; checking
it needs the public key you already trust (`flexaudit pool verify --public-key`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from flexaudit.errors import InputError, IntegrityError
from flexaudit.pool.db import connect, read_meta, utc_now, write_transaction
from flexaudit.signing import key_id, load_private_key, load_public_key, sign_payload, verify_envelope

POOL_HEAD_TYPE = "application/vnd.flexaudit.pool-head+json"


def sign_head(pool_dir: str | Path, key_path: str | Path, *, now: dt.datetime | None = None) -> dict:
    """Sign the current head (pool id, seq, hash) with an ed25519 key; stored beside the log."""
    pool_dir = Path(pool_dir)
    key = load_private_key(key_path)
    with connect(pool_dir) as conn, write_transaction(conn):
        head = read_meta(conn)
        payload = {"pool_id": head["pool_id"], "seq": int(head["head_seq"]), "hash": head["head_hash"],
                   "signed_at": utc_now(now)}
        envelope = sign_payload(key, payload, payload_type=POOL_HEAD_TYPE)
        conn.execute("INSERT INTO head_signatures (seq, hash, key_id, envelope, created_at) VALUES (?, ?, ?, ?, ?)",
                     (payload["seq"], payload["hash"], key_id(key.public_key()), json.dumps(envelope), payload["signed_at"]))
    return {"seq": payload["seq"], "hash": payload["hash"], "key_id": key_id(key.public_key())}


def verify_head_signature(sigs: list[dict], hashes: dict[int, str], public_key_path, problems: list[str]) -> dict:
    key = load_public_key(public_key_path)
    if not sigs:
        problems.append("the pool's head was never signed, but a public key was given")
        return {"present": 0, "checked": True, "valid": False}
    latest = sigs[-1]
    try:
        payload, kid, _ = verify_envelope(json.loads(latest["envelope"]), key, what="the pool's signed head")
    except (IntegrityError, InputError) as exc:
        problems.append(exc.message)
        return {"present": len(sigs), "checked": True, "valid": False}
    if hashes.get(payload.get("seq")) != payload.get("hash"):
        problems.append(f"the signed head (entry {payload.get('seq')}) is not in the log any more: the log was "
                        "rewritten or truncated after it was signed")
        return {"present": len(sigs), "checked": True, "valid": False, "seq": payload.get("seq")}
    return {"present": len(sigs), "checked": True, "valid": True, "seq": payload["seq"], "key_id": kid,
            "signed_at": payload.get("signed_at")}
