"""report.json from real attack-library results on tiny models (not fake numbers): the shapes the audit
command will pass are accepted, validated, judged and rendered, and no member text reaches the report."""

from __future__ import annotations

import json

import pytest
import torch

from attacks import (blind_baseline, canary_exposure, discoverable_extraction, load_causal_lm, make_canaries,
                     pii_leakage, probabilistic_extraction, run_membership, sampled_extraction, score_texts)
from attacks import metrics
from attacks import testing as tiny
from flexaudit.gate import evaluate, load_policy
from flexaudit.report import build_report, read_report, write_report
from flexaudit.report.render import render_text
from flexaudit.report.testing import FAKE_ANCHOR, make_package


@pytest.fixture(scope="module")
def real_results(tmp_path_factory):
    torch.set_num_threads(1)
    members = tiny.synthetic_texts(10, seed=1, words=12)
    nonmembers = tiny.synthetic_texts(10, seed=2, words=12)
    canaries = make_canaries(6, seed=11, include_prob=0.5)
    tok = tiny.train_tokenizer(tiny.synthetic_texts(150, seed=3, words=12) + members + nonmembers
                               + [c.text for c in canaries], vocab_size=400)
    base = tmp_path_factory.mktemp("tiny-models")
    anchor_dir = tiny.save(tiny.tiny_flexolmo(tok, seed=0), tok, base / "anchor")
    model = tiny.tiny_flexolmo(tok, seed=0)
    tiny.overfit(model, tok, members + [c.text for c in canaries if c.included], steps=200, lr=1e-2)
    target_dir = tiny.save(model, tok, base / "target")
    target, anchor = load_causal_lm(target_dir), load_causal_lm(anchor_dir)
    texts = members + nonmembers
    labels = [True] * len(members) + [False] * len(nonmembers)
    t_cache, a_cache = score_texts(target, texts), score_texts(anchor, texts)
    items = [{"category": "code", "value": t.split()[-1].rstrip(".")} for t in members]

    def extraction(lm):
        return [discoverable_extraction(lm, members, prefix_len=8, suffix_len=8),
                sampled_extraction(lm, members, prefix_len=8, window_len=16, n_samples=2),
                probabilistic_extraction(lm, members, prefix_len=8, suffix_len=8),
                canary_exposure(lm, canaries, n_reference=30),
                pii_leakage(lm, items, prompts=[" ".join(t.split()[:6]) for t in members], max_new_tokens=12)]

    mem_t = run_membership(t_cache, a_cache, is_member=labels, n_bootstrap=100)
    split = metrics.epsilon_lower_bound_split(mem_t["FA-MIA-LOSS"].member_scores, mem_t["FA-MIA-LOSS"].nonmember_scores)
    return {"membership": {"target": mem_t, "anchor": run_membership(a_cache, None, is_member=labels, n_bootstrap=100)},
            "extraction": {"target": extraction(target), "anchor": [r for r in extraction(anchor)]},
            "hygiene": blind_baseline(members, nonmembers, n_bootstrap=100),
            "epsilon_lower_bounds": [{**split.as_dict(), "source": "FA-MIA-LOSS"}],
            "texts": texts, "canaries": canaries}


def test_real_results_make_a_valid_report(tmp_path, real_results):
    pkg = make_package(tmp_path / "pkg", name="tiny")
    kwargs = {k: v for k, v in real_results.items() if k not in ("texts", "canaries")}
    report = build_report(pkg, anchor_digest=FAKE_ANCHOR, audit={"seed": 0}, **kwargs)
    write_report(tmp_path / "audit", report, figures=True)
    back = read_report(tmp_path / "audit")
    attacks = back["empirical"]["membership"]["attacks"]
    assert attacks["FA-MIA-LOSS"]["target"]["auc"] > 0.8  # the target memorised its members
    assert attacks["FA-MIA-LOSS"]["anchor"]["status"] == "ok" and attacks["FA-MIA-REF"]["anchor"]["status"] == "not_run"
    assert attacks["FA-MIA-LIRA"]["target"]["status"] == "not_run"
    ext = back["empirical"]["extraction"]["attacks"]
    assert set(ext) == {"FA-EXT-DISC", "FA-EXT-SAMPLED", "FA-EXT-PROB", "FA-EXT-CANARY", "FA-EXT-PII"}
    assert ext["FA-EXT-DISC"]["target"]["exact"]["value"] >= ext["FA-EXT-DISC"]["anchor"]["exact"]["value"]
    assert {p.name for p in (tmp_path / "audit" / "figures").iterdir()} == {"roc.svg", "scores.svg", "extraction.svg"}
    findings = {f.rule_id: f for f in evaluate(back, load_policy())}
    assert findings["PRIV-MIA-AUC"].attack_id and findings["PRIV-MIA-AUC"].upper_bound is not None
    html = render_text(back, "html")
    assert "FA-EXT-CANARY" in html and "data:image/svg+xml;base64," in html
    blob = json.dumps(back) + html
    for text in real_results["texts"]:
        assert text not in blob
    for canary in real_results["canaries"]:
        assert canary.secret not in json.dumps(back)
