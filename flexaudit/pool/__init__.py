"""The expert pool: the registry of admitted experts, its hash-chained log, and the signed head.

    from flexaudit.pool import init_pool, admit, revoke, verify_pool, pool_members
    init_pool(pool_dir, policy_path=None, anchor_dir=None)  # the pool's admission policy is fixed here
    admit(pool_dir, package_dir, audit_dir)                 # re-runs the gate; admits only on pass
    pool_members(pool_dir)                                  # admitted package copies, for merge

Layout: `registry` (admission, revocation, verification), `log` (the hash chain), `signing` (the signed
head), `db` (the SQLite file they share).
"""

from flexaudit.pool.log import GENESIS, canonical, chain_hash, read_log
from flexaudit.pool.registry import (
                                     POLICY_FILE,
                                     Admission,
                                     PoolVerification,
                                     admit,
                                     init_pool,
                                     list_members,
                                     pool_info,
                                     pool_members,
                                     revoke,
                                     verify_pool,
)
from flexaudit.pool.signing import sign_head

__all__ = ["init_pool", "admit", "revoke", "list_members", "pool_members", "read_log", "verify_pool", "sign_head",
           "pool_info", "Admission", "PoolVerification", "POLICY_FILE", "GENESIS", "canonical", "chain_hash"]
