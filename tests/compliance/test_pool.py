"""The expert pool: admission through the gate, revocation, the hash-chained log and its verification,
concurrency, signed heads, and merging the admitted experts."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading

import pytest

from flexaudit import pool
from flexaudit.errors import IntegrityError, PolicyViolation

from ..conftest import invoke, one_error_line


@pytest.fixture
def pool_dir(tmp_path):
    pool.init_pool(tmp_path / "pool", actor="officer")
    return tmp_path / "pool"


def _db(pool_dir):
    conn = sqlite3.connect(pool_dir / "pool.db", isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS log_append_only_update")  # an attacker with file access bypasses them
    conn.execute("DROP TRIGGER IF EXISTS log_append_only_delete")
    return conn


def test_admit_list_revoke_and_log(pool_dir, make_audit):
    clean, leaky = make_audit("clinical"), make_audit("leaky", leaky=True)
    a = pool.admit(pool_dir, clean.package, clean.audit, actor="ci")
    assert a.admitted and a.seq == 2 and not a.already
    again = pool.admit(pool_dir, clean.package, clean.audit)
    assert again.already and again.seq == 2  # idempotent, no new log entry
    with pytest.raises(PolicyViolation, match="refused: FAIL"):
        pool.admit(pool_dir, leaky.package, leaky.audit)
    members = pool.pool_members(pool_dir)
    assert len(members) == 1 and (members[0] / "expert.safetensors").is_file()
    assert members[0].parent.parent == pool_dir  # a copy inside the pool, not the owner's directory
    pool.revoke(pool_dir, "clinical", reason="owner opted out", opt_out=True, actor="owner")
    assert pool.pool_members(pool_dir) == [] and not members[0].exists()
    events = [(e["event"], e.get("expert")) for e in pool.read_log(pool_dir)]
    assert events == [("init", None), ("admit", "clinical"), ("reject", "leaky"), ("opt_out", "clinical")]
    removed = pool.list_members(pool_dir, include_removed=True)
    assert removed[0]["status"] == "opted_out" and removed[0]["removal_reason"] == "owner opted out"
    assert pool.verify_pool(pool_dir).ok


def test_log_is_append_only_for_any_client(pool_dir):
    conn = sqlite3.connect(pool_dir / "pool.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE log SET entry = '{}' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM log")


@pytest.fixture
def busy_pool(pool_dir, make_audit):
    for name in ("alpha", "beta", "gamma"):
        a = make_audit(name, seed=len(name))
        pool.admit(pool_dir, a.package, a.audit)
    pool.revoke(pool_dir, "beta", reason="licence expired")
    assert pool.verify_pool(pool_dir).ok
    return pool_dir


def test_verify_detects_an_edited_entry(busy_pool):
    conn = _db(busy_pool)
    conn.execute("UPDATE log SET entry = replace(entry, 'licence expired', 'routine') WHERE seq = 5")
    v = pool.verify_pool(busy_pool)
    assert not v.ok and v.first_broken_at == 5 and "edited" in v.problems[0]
    result = invoke("pool", "verify", busy_pool)
    assert result.exit_code == 3 and "first broken entry: 5" in one_error_line(result)


def test_verify_detects_a_deleted_entry(busy_pool):
    _db(busy_pool).execute("DELETE FROM log WHERE seq = 3")
    v = pool.verify_pool(busy_pool)
    assert not v.ok and v.first_broken_at == 3 and any("missing" in p for p in v.problems)


def test_verify_detects_reordered_entries(busy_pool):
    conn = _db(busy_pool)
    rows = {r[0]: r[1:] for r in conn.execute("SELECT seq, entry, prev_hash, hash FROM log WHERE seq IN (2, 3)")}
    for seq, other in ((2, 3), (3, 2)):
        conn.execute("UPDATE log SET entry = ?, prev_hash = ?, hash = ? WHERE seq = ?", (*rows[other], seq))
    v = pool.verify_pool(busy_pool)
    assert not v.ok and v.first_broken_at == 2 and any("reordered" in p for p in v.problems)


def test_verify_detects_a_truncated_tail_and_a_forged_member(busy_pool):
    conn = _db(busy_pool)
    conn.execute("DELETE FROM log WHERE seq = 5")
    v = pool.verify_pool(busy_pool)
    assert not v.ok and any("recorded head" in p for p in v.problems)
    conn = _db(busy_pool)
    conn.execute("INSERT INTO members (name, root_digest, package_dir, report_digest, report_id, policy_digest, decision,"
                 " admitted_at, admit_seq, status) VALUES ('sneaky', 'sha256:00', 'experts/x', 'r', 'i', 'p', 'pass', 't', 9,"
                 " 'admitted')")
    assert any("registry disagrees with the log" in p for p in pool.verify_pool(busy_pool).problems)


def test_verify_detects_a_modified_pool_copy(busy_pool):
    [first, _] = pool.pool_members(busy_pool)
    (first / "manifest.json").write_text((first / "manifest.json").read_text().replace('"clinical"', '"x"') + " ")
    assert any("was modified" in p for p in pool.verify_pool(busy_pool).problems)
    with pytest.raises(IntegrityError, match="does not match the admitted digest"):
        pool.pool_members(busy_pool)


def test_changed_policy_file_is_refused(pool_dir, make_audit):
    (pool_dir / "policy.toml").write_text((pool_dir / "policy.toml").read_text().replace("max = 0.10", "max = 0.99"))
    a = make_audit("clinical")
    with pytest.raises(IntegrityError, match="policy file"):
        pool.admit(pool_dir, a.package, a.audit)


def test_concurrent_admissions_from_threads(pool_dir, make_audit):
    audits = [make_audit(f"expert-{i}", seed=i) for i in range(6)]
    errors = []

    def go(a):
        try:
            pool.admit(pool_dir, a.package, a.audit)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(a,)) for a in audits + audits[:2]]  # two duplicates too
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    v = pool.verify_pool(pool_dir)
    assert v.ok and v.entries == 7  # init + six admissions, no duplicate entries
    assert sorted(m["name"] for m in pool.list_members(pool_dir)) == [f"expert-{i}" for i in range(6)]


def _admit_in_process(args):
    pool_dir, package, audit = args
    from flexaudit import pool as p

    return p.admit(pool_dir, package, audit).seq


def test_concurrent_admissions_from_processes(pool_dir, make_audit):
    audits = [make_audit(f"proc-{i}", seed=10 + i) for i in range(3)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as workers:
        seqs = workers.map(_admit_in_process, [(pool_dir, a.package, a.audit) for a in audits])
    assert sorted(seqs) == [2, 3, 4]
    assert pool.verify_pool(pool_dir).ok


def test_signed_head(pool_dir, make_audit, tmp_path):
    from flexaudit.signing import generate_keypair

    key, pub = generate_keypair(tmp_path / "officer")
    other_key, other_pub = generate_keypair(tmp_path / "other")
    a = make_audit("clinical")
    pool.admit(pool_dir, a.package, a.audit, sign_key=key)
    v = pool.verify_pool(pool_dir, public_key=pub)
    assert v.ok and v.signature["valid"] and v.signature["seq"] == 2
    assert not pool.verify_pool(pool_dir, public_key=other_pub).ok  # signed by someone else
    # an attacker who rewrites the whole chain consistently still cannot match the signed head
    conn = _db(pool_dir)
    entries = [json.loads(r[0]) for r in conn.execute("SELECT entry FROM log ORDER BY seq")]
    entries[1]["actor"] = "forged"
    conn.execute("DELETE FROM log")
    prev = pool.GENESIS
    for e in entries:
        h = pool.chain_hash(prev, e)
        conn.execute("INSERT INTO log VALUES (?, ?, ?, ?)", (e["seq"], pool.canonical(e).decode(), prev, h))
        prev = h
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
    assert pool.verify_pool(pool_dir).ok  # the chain alone is consistent again...
    v = pool.verify_pool(pool_dir, public_key=pub)
    assert not v.ok and any("not in the log any more" in p for p in v.problems)  # ...the signed head is not


def test_pool_cli(tmp_path, make_audit):
    clean, leaky = make_audit("clinical"), make_audit("leaky", leaky=True)
    p = tmp_path / "cli-pool"
    assert invoke("pool", "init", p).exit_code == 0
    assert invoke("pool", "init", p).exit_code == 2
    r = invoke("pool", "admit", p, clean.package, "--audit", clean.audit)
    assert r.exit_code == 0 and "admitted 'clinical'" in r.stdout
    r = invoke("pool", "admit", p, leaky.package, "--audit", leaky.audit)
    assert r.exit_code == 1 and "refused" in one_error_line(r)
    assert "clinical" in invoke("pool", "list", p).stdout
    r = invoke("pool", "revoke", p, "nobody", "--reason", "x")
    assert r.exit_code == 2 and "no admitted expert named 'nobody'" in one_error_line(r)
    assert invoke("pool", "revoke", p, "clinical", "--reason", "licence expired").exit_code == 0
    assert "licence expired" in invoke("pool", "log", p).stdout
    assert invoke("pool", "verify", p).exit_code == 0
    r = invoke("pool", "list", tmp_path / "not-a-pool")
    assert r.exit_code == 2 and "is not a pool" in one_error_line(r)


def test_merge_builds_from_admitted_experts_only(tmp_path, tiny_anchor, clinical_expert, finance_expert, clean_results):
    """Real tiny experts: admit both, revoke one, the merged model holds only the other."""
    from flexaudit.moe.anchor import load_anchor
    from flexaudit.report import write_report
    from flexaudit.report.testing import fake_report

    anchor_digest = load_anchor(tiny_anchor).root_digest
    p = tmp_path / "pool"
    assert invoke("pool", "init", p, "--anchor", tiny_anchor).exit_code == 0
    for pkg in (clinical_expert, finance_expert):
        write_report(tmp_path / f"audit-{pkg.name}", fake_report(pkg, results=clean_results, anchor_digest=anchor_digest))
        r = invoke("pool", "admit", p, pkg, "--audit", tmp_path / f"audit-{pkg.name}")
        assert r.exit_code == 0, r.output
    assert invoke("pool", "revoke", p, "finance", "--reason", "owner opted out", "--opt-out").exit_code == 0
    r = invoke("merge", "--pool", p, "--anchor", tiny_anchor, "--out", tmp_path / "merged")
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "merged" / "flexaudit.json").read_text())
    assert [e["name"] for e in info["experts"]] == ["public", "clinical"]
