"""The pool's database: one SQLite file holding the registry, the log and the signed heads.

Every write is one `BEGIN IMMEDIATE` transaction (writers serialised, busy timeout), so two concurrent
admissions both land, in some order, on one unbroken chain; SQLite triggers make the log append-only for any
client, and a failed transaction leaves the registry as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Iterator

from flexaudit.errors import InputError

DB_FILE = "pool.db"
APPLICATION_ID = 0x464C5850  # "FLXP"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE members (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    root_digest TEXT NOT NULL,
    package_dir TEXT NOT NULL,
    report_digest TEXT NOT NULL,
    report_id TEXT NOT NULL,
    policy_digest TEXT NOT NULL,
    decision TEXT NOT NULL,
    admitted_at TEXT NOT NULL,
    admitted_by TEXT,
    admit_seq INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('admitted', 'revoked', 'opted_out')),
    removed_at TEXT, removed_by TEXT, removal_reason TEXT, removal_seq INTEGER
);
CREATE UNIQUE INDEX one_admitted_name ON members(name) WHERE status = 'admitted';
CREATE UNIQUE INDEX one_admitted_digest ON members(root_digest) WHERE status = 'admitted';
CREATE TABLE log (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER log_append_only_update BEFORE UPDATE ON log BEGIN SELECT RAISE(ABORT, 'the pool log is append-only'); END;
CREATE TRIGGER log_append_only_delete BEFORE DELETE ON log BEGIN SELECT RAISE(ABORT, 'the pool log is append-only'); END;
CREATE TABLE head_signatures (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL,
                              key_id TEXT NOT NULL, envelope TEXT NOT NULL, created_at TEXT NOT NULL);
"""


def utc_now(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def connect(pool_dir: Path, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    db = pool_dir / DB_FILE
    if not create and not db.is_file():
        raise InputError(f"{pool_dir} is not a pool (no {DB_FILE}): create one with `flexaudit pool init {pool_dir}`")
    conn = sqlite3.connect(db, timeout=60.0, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 60000")
        if not create:
            if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                raise InputError(f"{db} is not a flexaudit pool database")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise InputError(f"pool database {db} cannot be used ({exc}): restore it from a backup") from None
    finally:
        conn.close()


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}
