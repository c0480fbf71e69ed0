"""The pool's append-only, hash-chained log of every admission, refusal, revocation and opt-out.

Each entry is a JSON object (seq, time, event, actor, expert, digests, decision, reason) and
    hash_n = SHA-256(hash_{n-1} + "\\n" + canonical JSON of entry n),   hash_0 = "sha256:" + 64 zeros,
with canonical JSON = sorted keys, no whitespace, UTF-8. `check_chain` recomputes the chain and reports the
first broken entry: an edited entry breaks its hash, a deleted one leaves a gap in seq (or breaks the next
entry's link), reordered ones carry the wrong seq. The chain head (seq, hash) is also kept in the meta table,
which catches a truncated tail, and can be signed (flexaudit.pool.signing).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from flexaudit.pool.db import connect, read_meta

GENESIS = "sha256:" + "0" * 64
EVENTS = ("init", "admit", "reject", "revoke", "opt_out", "sign_head")


def canonical(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chain_hash(prev_hash: str, entry: dict) -> str:
    return "sha256:" + hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical(entry)).hexdigest()


def append(conn: sqlite3.Connection, event: str, now: str, **fields) -> dict:
    """Append one log entry (inside the caller's write transaction) and move the head."""
    assert event in EVENTS
    row = conn.execute("SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row["seq"] + 1, row["hash"]) if row else (1, GENESIS)
    entry = {"seq": seq, "time": now, "event": event, "pool_id": read_meta(conn)["pool_id"], **fields}
    h = chain_hash(prev, entry)
    conn.execute("INSERT INTO log (seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)",
                 (seq, canonical(entry).decode("utf-8"), prev, h))
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     [("head_seq", str(seq)), ("head_hash", h)])
    return {**entry, "hash": h}


def read_log(pool_dir: str | Path) -> list[dict]:
    with connect(Path(pool_dir)) as conn:
        return [{**json.loads(r["entry"]), "hash": r["hash"], "prev_hash": r["prev_hash"], "row_seq": r["seq"]}
                for r in conn.execute("SELECT * FROM log ORDER BY seq")]


@dataclass
class ChainCheck:
    """What the log says, recomputed: problems (with the first broken seq), the experts it leaves admitted
    (name -> root digest) and each entry's hash (for checking a signed head)."""

    problems: list[str] = field(default_factory=list)
    first_broken_at: int | None = None
    admitted: dict[str, str] = field(default_factory=dict)
    hashes: dict[int, str] = field(default_factory=dict)

    def broken(self, at: int | None, msg: str) -> None:
        self.problems.append(msg)
        if at is not None and (self.first_broken_at is None or at < self.first_broken_at):
            self.first_broken_at = at


def check_chain(rows: list[dict], *, pool_id: str | None) -> ChainCheck:
    """Walk the log rows (seq, entry, prev_hash, hash; in seq order) from the genesis hash."""
    check = ChainCheck()
    broken, admitted, hashes = check.broken, check.admitted, check.hashes
    prev, expected_seq = GENESIS, 1
    for row in rows:
        seq = row["seq"]
        try:
            entry = json.loads(row["entry"])
        except json.JSONDecodeError:
            broken(seq, f"entry {seq} is not JSON")
            prev, expected_seq = row["hash"], seq + 1
            continue
        if seq != expected_seq:
            broken(expected_seq, f"entries {expected_seq}..{seq - 1} are missing (deleted)")
        if entry.get("seq") != seq:
            broken(seq, f"entry at position {seq} claims seq {entry.get('seq')} (entries reordered or renumbered)")
        if row["prev_hash"] != prev:
            broken(seq, f"entry {seq} does not link to the entry before it (an entry was deleted, inserted or reordered)")
        if chain_hash(row["prev_hash"], entry) != row["hash"]:
            broken(seq, f"entry {seq} was edited: its hash does not match its content")
        if entry.get("pool_id") != pool_id:
            broken(seq, f"entry {seq} belongs to another pool")
        ev, name = entry.get("event"), entry.get("expert")
        if ev == "admit":
            admitted[name] = entry.get("root_digest")
        elif ev in ("revoke", "opt_out"):
            admitted.pop(name, None)
        hashes[seq] = row["hash"]
        prev, expected_seq = row["hash"], seq + 1
    return check
