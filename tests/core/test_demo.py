"""The demo's orchestration, apart from its models: the owners' audits side by side, admitted in turn."""

from __future__ import annotations

import pytest

from flexaudit import demo
from flexaudit.errors import PolicyViolation
from flexaudit.jobs import Jobs


@pytest.mark.parametrize("refused, again", [(set(), []), ({"b"}, ["c", "d"]), ({"a", "d"}, ["b", "c", "d"])])
def test_each_audit_compares_the_pool_it_joins_even_when_an_earlier_owner_is_refused(monkeypatch, tmp_path, refused,
                                                                                      again):
    import flexaudit.pool as pool

    offered = ["a", "b", "c", "d"]
    experts = {name: tmp_path / name for name in [*offered, demo.DP_EXPERT]}
    audited: list[tuple[str, tuple | None]] = []
    admitted: list[str] = []

    def audit_one(workdir, plan, name, package, anchor_dir, policy_path, placement, progress, *, dense, pool_experts):
        audited.append((name, pool_experts))
        return {name: {"pool": pool_experts}}

    def admit(registry, package, audit_dir):
        if package.name in refused:
            raise PolicyViolation(f"expert {package.name!r} refused")
        admitted.append(package.name)

    monkeypatch.setattr(demo, "_audit_one", audit_one)
    monkeypatch.setattr(pool, "init_pool", lambda *a, **k: None)
    monkeypatch.setattr(pool, "admit", admit)
    monkeypatch.setattr(pool, "pool_members", lambda registry: [experts[n] for n in admitted])
    with Jobs(1) as work:
        for name in experts:  # the training jobs, named as the experts (the audits of the pool wait on them)
            work.submit(name, dict)
        audit = demo._submit_audits(work, tmp_path, None, tmp_path / "anchor", experts, offered, {}, None, None)
        assert len(audited) == len(offered) + 1  # every first audit (inline jobs run when submitted)
        audits, record = demo._admit(work, tmp_path, tmp_path / "registry", experts, offered, audit, demo.NULL_PROGRESS)
        assert demo.DP_EXPERT not in audits  # the pool does not wait for it
        audits |= work.result(f"audit {demo.DP_EXPERT}")
    assert record["admitted"] == [n for n in offered if n not in refused]
    assert set(record["refused"]) == refused
    for i, name in enumerate(offered):  # the report kept is against the experts admitted before it
        joined = tuple(experts[n] for n in offered[:i] if n not in refused)
        assert audits[name]["pool"] == joined
    assert [name for name, _ in audited[len(offered) + 1:]] == again  # audited again only where the guess was wrong
    assert audits[demo.DP_EXPERT]["pool"] is None  # shown, never offered


def test_the_workers_preload_modules_that_exist():
    # the fork server skips a module it cannot import, so a misspelt name would only make the demo slower, silently
    import importlib.util

    assert "opacus" in demo.PRELOAD and "flexaudit.demo" in demo.PRELOAD
    assert [name for name in demo.PRELOAD if importlib.util.find_spec(name) is None] == []


def test_every_gate_decision_but_pass_is_shown_with_its_reasons(capsys, tmp_path):
    """The DP expert is audited but never offered, so no pool refusal explains its decision: an inconclusive
    gate (measured in --quick: the blind baseline 0.656 > 0.6 on 40 texts) is printed with the controls behind it,
    as the refused expert's are, and the page lists them."""
    from flexaudit.cli.render import print_demo

    def gate(decision, exit_code, failing=(), undecided=()):
        return {"decision": decision, "exit_code": exit_code, "summary": "",
                "failing": [{"rule_id": r, "message": m} for r, m in failing],
                "undecided": [{"rule_id": r, "message": m} for r, m in undecided]}

    audits = {
        "clinical": {"figures": {}, "gate": gate("pass", 0)},
        "clinical-dp": {"figures": {}, "gate": gate("inconclusive", 2, undecided=[("PRIV-HYG-BLIND", "value 0.656 > max 0.6")])},
        "finance-leaky": {"figures": {}, "gate": gate("fail", 1, failing=[("PRIV-MIA-AUC", "upper bound 0.904 > max 0.8")],
                                                      undecided=[("PRIV-EXT-PII", "only 12 samples")])},
    }
    result = demo.DemoResult(workdir=tmp_path, plan=demo.DemoPlan.quick(), domains=["public"],
                             rows=[demo.Row("anchor", "anchor", {"public": 10.0})], artifacts={}, checks=[],
                             audits=audits, pool={"admitted": ["clinical"],
                                                  "refused": {"finance-leaky": {"exit_code": 1, "reason": "FAIL"}}},
                             seconds={"total": 1.0})
    print_demo(result)
    shown = capsys.readouterr().out
    assert "clinical-dp, not offered to the pool: gate inconclusive (exit 2)" in shown
    assert "    PRIV-HYG-BLIND (undecided): value 0.656 > max 0.6" in shown
    assert "    PRIV-MIA-AUC: upper bound 0.904 > max 0.8" in shown and "PRIV-EXT-PII (undecided): only 12" in shown
    assert "clinical, not offered" not in shown and "finance-leaky, not offered" not in shown
    assert demo._reasons(audits["clinical-dp"]["gate"]) == "PRIV-HYG-BLIND (undecided)"
    assert demo._reasons(audits["finance-leaky"]["gate"]) == "PRIV-MIA-AUC; PRIV-EXT-PII (undecided)"
    assert demo._reasons(audits["clinical"]["gate"]) == "-"
