"""The expert pool: a registry of admitted experts (SQLite) with an append-only, hash-chained log.

    init_pool(pool_dir, policy_path=None, anchor_dir=None)  # the pool's admission policy is fixed here
    admit(pool_dir, package_dir, audit_dir)                 # re-runs the gate; admits only on pass
    revoke(pool_dir, name, reason=..., opt_out=True)        # removes it; the next merge leaves it out
    verify_pool(pool_dir)                                    # any edit, deletion or reordering of the log
    pool_members(pool_dir)                                   # admitted package copies, for merge

Layout: POOL/pool.db (registry + log), POOL/policy.toml (the admission policy, digest in the db),
POOL/experts/<hex>/ (a verified copy of each admitted package, content-addressed by root digest; the
pool never depends on the owner's copy staying unchanged), POOL/audits/<hex>/ (the report and gate
result each admission was decided on).

The log (flexaudit.pool.log) records every admission, refusal, revocation and opt-out in a hash chain whose
head can be signed (flexaudit.pool.signing); `verify_pool` recomputes it and cross-checks the registry.

Concurrency: every write is one `BEGIN IMMEDIATE` transaction (writers serialised, busy timeout), so
two concurrent admissions both land, in some order, on one unbroken chain. SQLite triggers make the log
append-only for any client. Nothing is half-written: package copies are staged and renamed, and a
failed transaction leaves the registry as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from flexaudit.errors import InputError, IntegrityError, PolicyViolation
from flexaudit.fsutil import atomic_write_bytes, atomic_write_json, staged_directory
from flexaudit.pool.db import APPLICATION_ID, DB_FILE, SCHEMA, connect, read_meta, utc_now, write_transaction
from flexaudit.pool.log import append, check_chain
from flexaudit.pool.signing import sign_head, verify_head_signature

POLICY_FILE = "policy.toml"
REGISTRY_FORMAT = "flexaudit-pool-registry/1"









# ---------------------------------------------------------------------------------------------- database








# ---------------------------------------------------------------------------------------------- init
def init_pool(pool_dir: str | Path, *, policy_path: str | Path | None = None, anchor_dir: str | Path | None = None,
              actor: str | None = None, now: dt.datetime | None = None) -> dict:
    """Create a pool with its admission policy (default: the shipped one) and optional anchor binding."""
    from flexaudit.report.policy import default_policy_text, load_policy

    pool_dir = Path(pool_dir)
    if (pool_dir / DB_FILE).exists():
        raise InputError(f"{pool_dir} already holds a pool: choose another directory")
    policy = load_policy(policy_path)
    policy_bytes = Path(policy_path).read_bytes() if policy_path is not None else default_policy_text().encode("utf-8")
    anchor_digest = None
    if anchor_dir is not None:
        from flexaudit.digest import root_digest
        from flexaudit.moe.checkpoint import read_json

        anchor_dir = Path(anchor_dir)
        if not anchor_dir.is_dir():
            raise InputError(f"anchor directory not found: {anchor_dir}")
        info = read_json(anchor_dir / "anchor.json", "anchor.json (is this an anchor?)")
        anchor_digest = root_digest(anchor_dir, exclude=["anchor.json"])
        if anchor_digest != info.get("root_digest"):
            raise IntegrityError(f"anchor {anchor_dir} does not match its anchor.json digest: restore the original anchor")
    pool_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(pool_dir / POLICY_FILE, policy_bytes)
    stamp = utc_now(now)
    pool_id = f"urn:uuid:{uuid.uuid4()}"
    try:
        with connect(pool_dir, create=True) as conn:
            with write_transaction(conn):
                for stmt in SCHEMA.strip().rstrip(";").split(";\n"):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("format", REGISTRY_FORMAT), ("pool_id", pool_id), ("created_at", stamp),
                    ("policy_digest", policy.digest), ("policy_name", policy.name),
                    ("anchor_root_digest", anchor_digest or "")])
                append(conn, "init", stamp, actor=actor, policy_digest=policy.digest,
                        anchor_root_digest=anchor_digest)
    except BaseException:
        with contextlib.suppress(OSError):
            (pool_dir / DB_FILE).unlink()
        raise
    return {"pool_id": pool_id, "policy": policy.identity(), "anchor_root_digest": anchor_digest, "path": str(pool_dir)}


def _pool_policy(pool_dir: Path, meta: dict):
    from flexaudit.report.policy import parse_policy

    path = pool_dir / POLICY_FILE
    if not path.is_file():
        raise IntegrityError(f"the pool's policy file {path} is missing: restore it")
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if digest != meta["policy_digest"]:
        raise IntegrityError(f"the pool's policy file {path} was changed after the pool was created "
                             f"({digest[:19]}... instead of {meta['policy_digest'][:19]}...)")
    return parse_policy(data, source=str(path))


# ---------------------------------------------------------------------------------------------- admit
@dataclass
class Admission:
    admitted: bool
    name: str
    root_digest: str
    seq: int | None
    gate: object            # GateResult
    already: bool = False
    package_dir: Path | None = None


def _copy_package(src: Path, dest: Path, expected_root: str) -> bool:
    """Copy a package into the pool (content-addressed); returns True if this call created the copy."""
    from flexaudit.digest import root_digest

    if dest.is_dir():
        if root_digest(dest) != expected_root:
            raise IntegrityError(f"the pool's copy {dest} does not match its digest: run `flexaudit pool verify`")
        return False
    try:
        with staged_directory(dest) as tmp:
            for f in sorted(src.iterdir()):
                if f.name.startswith("."):
                    continue
                if not f.is_file():
                    raise IntegrityError(f"package {src} holds a non-file entry {f.name}")
                shutil.copyfile(f, tmp / f.name)
            if root_digest(tmp) != expected_root:
                raise IntegrityError(f"package {src} changed while it was being admitted: admit it again")
    except FileExistsError:  # a concurrent admission of the same package made it first
        if root_digest(dest) != expected_root:
            raise IntegrityError(f"the pool's copy {dest} does not match its digest") from None
        return False
    return True


def admit(pool_dir: str | Path, package_dir: str | Path, audit_dir: str | Path, *, actor: str | None = None,
          now: dt.datetime | None = None, sign_key: str | Path | None = None) -> Admission:
    """Re-run the gate on the audit with the pool's policy (the package re-verified against the report)
    and admit the expert only on pass. A refusal (violation, inconclusive, integrity) is logged as a
    `reject` entry and raised (PolicyViolation exit 1, InputError exit 2, IntegrityError exit 3)."""
    from flexaudit.gate.engine import run_gate
    from flexaudit.report.io import read_report, report_path

    pool_dir, package_dir = Path(pool_dir), Path(package_dir)
    with connect(pool_dir) as conn:
        meta = read_meta(conn)
    policy = _pool_policy(pool_dir, meta)
    report = read_report(audit_dir)
    if meta.get("anchor_root_digest") and report["subject"]["anchor"]["root_digest"] != meta["anchor_root_digest"]:
        raise IntegrityError(f"expert {report['subject']['expert']['name']!r} was audited against another anchor than "
                             "this pool's: it cannot be merged with the pool's experts")
    target = report.get("empirical", {}).get("audit", {}).get("target", {}).get("model")
    if target is not None and target != f"anchor + {report['subject']['expert']['name']}":
        raise InputError(f"{audit_dir} audits the {target}, not anchor + this expert: admit with the expert's own "
                         "audit (flexaudit audit EXPERT_DIR without --model)")
    stamp = utc_now(now)
    result = run_gate(audit_dir, policy, package_dir=package_dir, now=now)
    name, root = result.subject["name"], result.subject["root_digest"]
    common = {"actor": actor, "expert": name, "root_digest": root, "report_digest": result.report["digest"],
              "policy_digest": policy.digest, "decision": result.decision}
    if result.exit_code != 0:
        with connect(pool_dir) as conn, write_transaction(conn):
            append(conn, "reject", stamp, **common, reason=f"{result.summary}")
        error = {1: PolicyViolation, 2: InputError, 3: IntegrityError}[result.exit_code]
        raise error(f"expert {name!r} refused: {result.summary}")
    hexd = root.removeprefix("sha256:")
    dest = pool_dir / "experts" / hexd[:32]
    created = _copy_package(package_dir, dest, root)
    audit_copy = pool_dir / "audits" / hexd[:32]
    atomic_write_bytes(audit_copy / "report.json", report_path(audit_dir).read_bytes())
    atomic_write_json(audit_copy / "gate.json", result.as_dict())
    try:
        with connect(pool_dir) as conn, write_transaction(conn):
            existing = conn.execute("SELECT * FROM members WHERE status = 'admitted' AND (name = ? OR root_digest = ?)",
                                    (name, root)).fetchone()
            if existing is not None:
                if existing["root_digest"] == root:
                    return Admission(True, name, root, existing["admit_seq"], result, already=True, package_dir=dest)
                raise InputError(f"an expert named {name!r} is already admitted ({existing['root_digest'][:19]}...): "
                                 "revoke it first to admit a new version")
            entry = append(conn, "admit", stamp, **common, reason=result.summary)
            conn.execute(
                "INSERT INTO members (name, root_digest, package_dir, report_digest, report_id, policy_digest, decision,"
                " admitted_at, admitted_by, admit_seq, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'admitted')",
                (name, root, str(dest.relative_to(pool_dir)), result.report["digest"], result.report["id"],
                 policy.digest, result.decision, stamp, actor, entry["seq"]))
    except BaseException:
        if created:
            with connect(pool_dir) as conn:
                used = conn.execute("SELECT 1 FROM members WHERE root_digest = ? AND status = 'admitted'", (root,)).fetchone()
            if used is None:
                shutil.rmtree(dest, ignore_errors=True)
        raise
    if sign_key is not None:
        sign_head(pool_dir, sign_key, now=now)
    return Admission(True, name, root, entry["seq"], result, package_dir=dest)


# ---------------------------------------------------------------------------------------------- revoke
def revoke(pool_dir: str | Path, name: str, *, reason: str, opt_out: bool = False, actor: str | None = None,
           now: dt.datetime | None = None) -> dict:
    """Remove an admitted expert (licence expired, owner opted out...), log why, delete the pool's copy."""
    pool_dir = Path(pool_dir)
    if not reason or not reason.strip():
        raise InputError("a revocation needs a reason (--reason TEXT): it is recorded in the pool's log")
    stamp = utc_now(now)
    event = "opt_out" if opt_out else "revoke"
    with connect(pool_dir) as conn, write_transaction(conn):
        row = conn.execute("SELECT * FROM members WHERE status = 'admitted' AND name = ?", (name,)).fetchone()
        if row is None:
            raise InputError(f"no admitted expert named {name!r} in {pool_dir} (see `flexaudit pool list {pool_dir}`)")
        entry = append(conn, event, stamp, actor=actor, expert=name, root_digest=row["root_digest"],
                        report_digest=row["report_digest"], reason=reason.strip())
        conn.execute("UPDATE members SET status = ?, removed_at = ?, removed_by = ?, removal_reason = ?, removal_seq = ? "
                     "WHERE id = ?", ("opted_out" if opt_out else "revoked", stamp, actor, reason.strip(),
                                      entry["seq"], row["id"]))
        still_used = conn.execute("SELECT 1 FROM members WHERE package_dir = ? AND status = 'admitted'",
                                  (row["package_dir"],)).fetchone()
    if still_used is None:  # after commit: the registry never points at a deleted copy
        shutil.rmtree(pool_dir / row["package_dir"], ignore_errors=True)
    return {"name": name, "root_digest": row["root_digest"], "event": event, "seq": entry["seq"]}


# ---------------------------------------------------------------------------------------------- read
def list_members(pool_dir: str | Path, *, include_removed: bool = False) -> list[dict]:
    with connect(Path(pool_dir)) as conn:
        q = "SELECT * FROM members" + ("" if include_removed else " WHERE status = 'admitted'") + " ORDER BY admit_seq"
        return [dict(r) for r in conn.execute(q)]


def pool_members(pool_dir: str | Path, *, verify: bool = True) -> list[Path]:
    """The package directories of the admitted experts, in admission order (what `merge` builds from).
    With verify=True each copy is re-hashed against the digest it was admitted with (IntegrityError)."""
    from flexaudit.digest import root_digest

    pool_dir = Path(pool_dir)
    out = []
    for m in list_members(pool_dir):
        path = pool_dir / m["package_dir"]
        if verify and (not path.is_dir() or root_digest(path) != m["root_digest"]):
            raise IntegrityError(f"the pool's copy of {m['name']!r} ({path}) does not match the admitted digest "
                                 f"{m['root_digest'][:19]}...: run `flexaudit pool verify {pool_dir}`")
        out.append(path)
    return out




# ---------------------------------------------------------------------------------------------- verify
@dataclass
class PoolVerification:
    ok: bool
    entries: int
    head: str | None
    problems: list[str] = field(default_factory=list)
    first_broken_at: int | None = None
    signature: dict | None = None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "problems": list(self.problems),
                "first_broken_at": self.first_broken_at, "signature": self.signature}


def verify_pool(pool_dir: str | Path, *, public_key: str | Path | None = None) -> PoolVerification:
    """Recompute the log's hash chain and cross-check the registry, the package copies and the head.

    Never raises for tampering: the result lists every problem (the CLI maps not ok to exit 3)."""
    from flexaudit.digest import root_digest

    pool_dir = Path(pool_dir)
    with connect(pool_dir) as conn:
        rows = [dict(r) for r in conn.execute("SELECT * FROM log ORDER BY seq")]
        meta = read_meta(conn)
        members = [dict(r) for r in conn.execute("SELECT * FROM members")]
        sigs = [dict(r) for r in conn.execute("SELECT * FROM head_signatures ORDER BY id")]
    chain = check_chain(rows, pool_id=meta.get("pool_id"))
    problems, broken = chain.problems, chain.broken
    head_seq, head_hash = meta.get("head_seq"), meta.get("head_hash")
    if rows and (str(rows[-1]["seq"]) != head_seq or rows[-1]["hash"] != head_hash):
        broken(rows[-1]["seq"], f"the log ends at entry {rows[-1]['seq']} but the recorded head is entry {head_seq} "
                                "(entries were removed from the end, or the head was changed)")
    if not rows:
        broken(1, "the log is empty")
    registry = {m["name"]: m["root_digest"] for m in members if m["status"] == "admitted"}
    if registry != chain.admitted:
        extra = sorted(set(registry.items()) - set(chain.admitted.items()))
        missing = sorted(set(chain.admitted.items()) - set(registry.items()))
        problems.append(f"the registry disagrees with the log (admitted without a log entry: "
                        f"{[n for n, _ in extra] or 'none'}; logged but not admitted: {[n for n, _ in missing] or 'none'})")
    for m in members:
        if m["status"] == "admitted":
            path = pool_dir / m["package_dir"]
            if not path.is_dir():
                problems.append(f"the pool's copy of {m['name']!r} is missing ({path})")
            elif root_digest(path) != m["root_digest"]:
                problems.append(f"the pool's copy of {m['name']!r} was modified: it no longer has its admitted digest")
    policy_path = pool_dir / POLICY_FILE
    if not policy_path.is_file() or "sha256:" + hashlib.sha256(policy_path.read_bytes()).hexdigest() != meta.get("policy_digest"):
        problems.append("the pool's policy.toml is missing or was changed after the pool was created")
    signature = None
    if public_key is not None:
        signature = verify_head_signature(sigs, chain.hashes, public_key, problems)
    elif sigs:
        signature = {"present": len(sigs), "checked": False, "detail": "pass --public-key to check the signed head"}
    return PoolVerification(ok=not problems, entries=len(rows), head=head_hash, problems=problems,
                            first_broken_at=chain.first_broken_at, signature=signature)


# ---------------------------------------------------------------------------------------------- signing




def pool_info(pool_dir: str | Path) -> dict:
    with connect(Path(pool_dir)) as conn:
        return read_meta(conn)
