"""The deterministic member/holdout split and the keyed fingerprints that record it.

Assignment is a public function of (seed, document content): the same data and seed always give the
same split, on any machine, so audits can rebuild members and non-members exactly. The record that
goes into a shared manifest lists keyed hashes (HMAC-SHA256 under the owner's secret key), never
plain hashes: a plain hash would let anyone holding a candidate text test whether it was trained on.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from flexaudit.data.documents import Document
from flexaudit.errors import InputError
from flexaudit.fsutil import atomic_write_bytes

SPLIT_RULE = "holdout iff int(sha256(f'{seed}:{sha256(text)}')[:16], 16) / 2**64 < holdout_fraction"


def owner_home() -> Path:
    """Where an owner's private state lives (its key, its privacy ledger). Never shared."""
    return Path(os.environ.get("FLEXAUDIT_HOME") or Path.home() / ".local" / "share" / "flexaudit")


def owner_key(home: Path | None = None) -> bytes:
    """The owner's 32-byte secret, created on first use with mode 0600."""
    path = (home or owner_home()) / "owner.key"
    if not path.exists():
        atomic_write_bytes(path, secrets.token_hex(32).encode("ascii"), mode=0o600)
    raw = path.read_bytes().strip()
    try:
        key = bytes.fromhex(raw.decode("ascii"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise InputError(f"owner key {path} is malformed: restore it from backup (or delete it to start a new identity)")
    return key


def keyed_hash(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _unit_interval(seed: int, doc: Document, by_subject: bool) -> float:
    key = hashlib.sha256(doc.subject.encode()).hexdigest() if by_subject else doc.sha256
    h = hashlib.sha256(f"{seed}:{key}".encode("ascii")).hexdigest()
    return int(h[:16], 16) / 2**64


@dataclass(frozen=True)
class Split:
    members: list[Document]
    holdout: list[Document]
    seed: int
    holdout_fraction: float

    def record(self, key: bytes) -> dict:
        """What a manifest states about the split: counts and keyed hashes, no text."""
        return {
            "rule": SPLIT_RULE,
            "seed": self.seed,
            "holdout_fraction": self.holdout_fraction,
            "hash": "HMAC-SHA256(owner key, SHA-256 of document text); the key stays with the owner",
            "members": {"count": len(self.members), "hashes": sorted(keyed_hash(key, d.sha256) for d in self.members)},
            "holdout": {"count": len(self.holdout), "hashes": sorted(keyed_hash(key, d.sha256) for d in self.holdout)},
        }


def split_documents(docs: list[Document], *, seed: int = 0, holdout_fraction: float = 0.1,
                    by_subject: bool = False) -> Split:
    """Split documents by content hash: identical texts always land on the same side. With by_subject,
    all records of one data subject land on the same side (the privacy unit is the person)."""
    if not 0.0 < holdout_fraction < 1.0:
        raise InputError(f"holdout fraction must be between 0 and 1, got {holdout_fraction}")
    if len({d.sha256 for d in docs}) < 2:
        raise InputError("need at least two distinct documents to split into members and holdout")
    if by_subject and any(d.subject is None for d in docs):
        raise InputError("splitting by subject needs a subject on every record: pass --subject-field")
    scored = [(_unit_interval(seed, d, by_subject), d) for d in docs]
    holdout = [d for u, d in scored if u < holdout_fraction]
    members = [d for u, d in scored if u >= holdout_fraction]
    if not holdout:  # tiny data: keep one unit (all its copies) out rather than audit with none
        lowest = min(scored, key=lambda s: s[0])[0]
        holdout = [d for u, d in scored if u == lowest]
        members = [d for u, d in scored if u != lowest]
    if not members:
        raise InputError("the split left no member documents: lower --holdout-fraction or add data")
    return Split(members=members, holdout=holdout, seed=seed, holdout_fraction=holdout_fraction)


def dataset_fingerprint(docs: list[Document], key: bytes) -> dict:
    """Counts and a keyed digest identifying this exact dataset for this owner (used by the ledger)."""
    hashes = sorted(d.sha256 for d in docs)
    digest = keyed_hash(key, "\n".join(hashes))
    subjects = {d.subject for d in docs if d.subject is not None}
    return {
        "documents": len(docs),
        "distinct_documents": len(set(hashes)),
        "characters": sum(len(d.text) for d in docs),
        "subjects": len(subjects) if subjects else None,
        "fingerprint": "hmac-sha256:" + digest,
    }
