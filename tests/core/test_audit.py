"""The audit command end to end on a tiny expert: a valid report, the anchor beside every figure, no text."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from flexaudit.cli import app
from flexaudit.report import read_report
from flexaudit.workflows import AuditOptions, run_audit

from ..conftest import invoke, one_error_line

runner = CliRunner()
SMALL = AuditOptions(max_documents=24, extraction_documents=6, samples_per_prefix=2, pii_prompts=6)


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_anchor, clinical_expert):
    out = tmp_path_factory.mktemp("audit") / "clinical"
    result = run_audit(clinical_expert, anchor_dir=tiny_anchor, out=out, options=SMALL)
    return out, result


def test_report_holds_every_attack_with_the_anchor_beside_it(audited):
    out, result = audited
    report = read_report(out)  # validates against the shipped schema
    membership = report["empirical"]["membership"]["attacks"]
    for attack in ("FA-MIA-LOSS", "FA-MIA-ZLIB", "FA-MIA-MINK", "FA-MIA-MINKPP", "FA-MIA-REF", "FA-MIA-RMIA"):
        assert membership[attack]["target"]["status"] == "ok", attack
        assert 0.0 <= membership[attack]["target"]["auc"] <= 1.0
    assert membership["FA-MIA-LOSS"]["anchor"]["status"] == "ok"
    extraction = report["empirical"]["extraction"]["attacks"]
    for attack in ("FA-EXT-DISC", "FA-EXT-SAMPLED", "FA-EXT-PROB"):
        assert extraction[attack]["target"]["n_documents"] == 6 and extraction[attack]["anchor"] is not None
    assert extraction["FA-EXT-CANARY"]["target"]["status"] == "not_run"  # trained without canaries: said so
    assert report["subject"]["expert"]["name"] == "clinical"
    assert (out / "figures").is_dir() and any((out / "figures").glob("*.svg"))


def test_report_never_holds_training_text(audited, clinical_expert):
    out, _ = audited
    raw = (out / "report.json").read_text()
    members = clinical_expert.with_name("clinical.local") / "members.jsonl"
    for line in members.read_text().splitlines()[:30]:
        text = json.loads(line)["text"]
        assert text[:30] not in raw
        for token in text.split():
            if "@" in token:  # e-mail addresses are personal data
                assert token.strip(".,") not in raw


def test_cli_exit_codes(audited, tiny_anchor, clinical_expert, tmp_path):
    out, _ = audited
    again = runner.invoke(app, ["audit", str(clinical_expert), "--anchor", str(tiny_anchor), "--out", str(out)])
    assert again.exit_code == 2 and "already holds a report" in again.stderr
    pkg = tmp_path / "pkg"
    shutil.copytree(clinical_expert, pkg)
    tensors = load_file(pkg / "expert.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] * 0.5
    save_file(tensors, str(pkg / "expert.safetensors"))
    tampered = runner.invoke(app, ["audit", str(pkg), "--anchor", str(tiny_anchor), "--out", str(tmp_path / "a")])
    assert tampered.exit_code == 3 and "does not match its manifest" in tampered.stderr
    pkg2 = tmp_path / "pkg2"
    shutil.copytree(clinical_expert, pkg2)
    missing = runner.invoke(app, ["audit", str(pkg2), "--anchor", str(tiny_anchor), "--out", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "members" in missing.stderr
    unknown = runner.invoke(app, ["audit", str(clinical_expert), "--anchor", str(tiny_anchor), "--out",
                                  str(tmp_path / "c"), "--attacks", "FA-MIA-NOPE"])
    assert unknown.exit_code == 2 and "unknown attack" in unknown.stderr


def test_report_renders(audited, tmp_path):
    out, _ = audited
    result = runner.invoke(app, ["report", str(out), "--format", "html,md", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert "clinical" in html and "data:image/svg+xml;base64," in html  # figures embedded


def test_opt_out_verification_puts_the_leakage_back_at_the_anchor(audited, tiny_anchor, clinical_expert, tmp_path):
    """Auditing the merged pool with the expert switched off attacks exactly the anchor's model: every
    membership score equals the anchor's, while the pool with the expert in does not."""
    from flexaudit.moe.merge import merge

    pool = merge(tiny_anchor, [clinical_expert], tmp_path / "pool").directory
    out_off = tmp_path / "off"
    result = runner.invoke(app, ["audit", str(clinical_expert), "--anchor", str(tiny_anchor), "--out", str(out_off),
                                 "--model", str(pool), "--exclude", "clinical", "--max-documents", "24",
                                 "--extraction-documents", "6", "--attacks", "FA-MIA-LOSS,FA-EXT-DISC"])
    assert result.exit_code == 0, result.output
    off = read_report(out_off)
    assert off["empirical"]["audit"]["target"] == {
        "model": "merged pool without clinical", "excluded": ["clinical"],
        "merged_pool_digest": json.loads((pool / "flexaudit.json").read_text())["weights_root_digest"]}
    loss = off["empirical"]["membership"]["attacks"]["FA-MIA-LOSS"]
    assert loss["target"]["member_scores"] == pytest.approx(loss["anchor"]["member_scores"], abs=1e-5)
    disc = off["empirical"]["extraction"]["attacks"]["FA-EXT-DISC"]
    assert disc["target"]["mean_token_match"] == pytest.approx(disc["anchor"]["mean_token_match"])
    rendered = runner.invoke(app, ["report", str(out_off), "--format", "md"])
    assert rendered.exit_code == 0, rendered.output
    assert "opt-out verification: clinical switched off" in (out_off / "report.md").read_text()

    on = run_audit(clinical_expert, anchor_dir=tiny_anchor, out=tmp_path / "on",
                   options=AuditOptions(max_documents=24, attacks=("FA-MIA-LOSS",), model=pool)).report
    scores = on["empirical"]["membership"]["attacks"]["FA-MIA-LOSS"]
    assert scores["target"]["member_scores"] != pytest.approx(scores["anchor"]["member_scores"], abs=1e-3)

    # an opt-out audit is not the expert's own audit: the pool will not admit on it
    from flexaudit.errors import InputError
    from flexaudit.pool import admit, init_pool

    init_pool(tmp_path / "registry", anchor_dir=tiny_anchor)
    with pytest.raises(InputError, match="not anchor \\+ this expert"):
        admit(tmp_path / "registry", clinical_expert, audit_dir=out_off)


def test_exclude_without_a_pool_is_refused(tiny_anchor, clinical_expert, tmp_path):
    result = runner.invoke(app, ["audit", str(clinical_expert), "--anchor", str(tiny_anchor), "--out",
                                 str(tmp_path / "a"), "--exclude", "clinical"])
    assert result.exit_code == 2 and "--exclude needs --model" in result.stderr
    result = runner.invoke(app, ["audit", str(clinical_expert), "--anchor", str(tiny_anchor), "--out",
                                 str(tmp_path / "b"), "--model", str(tiny_anchor)])
    assert result.exit_code == 2 and "not a merged pool" in result.stderr


def test_unusable_audit_texts_are_skipped_counted_and_shown(tiny_anchor, clinical_expert, tmp_path):
    """Issue 15: one-token texts are left out of membership inference and documents without an extraction window
    make that attack 'not run' with the counts; the audit goes on and the report shows every count."""
    from flexaudit.report import render_report

    short = ["Patient reports mild headache today.", "Follow-up visit in two weeks.", "Blood pressure normal.",
             "Prescribed rest and fluids.", "No known allergies recorded.", "Discharged home in good health.",
             "Seen by the night nurse.", "Temperature slightly raised.", "Advised to return if worse.",
             "Lab results are pending.", "Referred to cardiology.", "Wound healing well."]
    for name, texts in (("members", short[:6] + ["x"]), ("nonmembers", short[6:] + ["y"])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "audit"
    report = run_audit(clinical_expert, anchor_dir=tiny_anchor, out=out, members=tmp_path / "members.jsonl",
                       nonmembers=tmp_path / "nonmembers.jsonl",
                       options=AuditOptions(attacks=("FA-MIA-LOSS", "FA-EXT-DISC"), extraction_documents=7)).report
    membership = report["empirical"]["membership"]
    assert (membership["n_members"], membership["n_nonmembers"]) == (6, 6)
    assert membership["n_skipped"] == 2 and membership["skipped"] == {"fewer than 2 tokens": 2}
    disc = report["empirical"]["extraction"]["attacks"]["FA-EXT-DISC"]
    assert disc["target"]["status"] == "not_run" and "all 7 documents are unusable" in disc["target"]["reason"]
    assert disc["target"]["n_skipped"] == 7 and sum(disc["target"]["skipped"].values()) == 7
    assert read_report(out) == report  # valid against the shipped schema
    render_report(out, ("html", "md"))
    for kind in ("html", "md"):
        assert "2 texts skipped as unusable (2 fewer than 2 tokens)" in (out / f"report.{kind}").read_text(), kind


@pytest.mark.parametrize("longest, context, budget", [(0, 64, 32), (28, 64, 32), (40, 256, 44), (200, 256, 128),
                                                      (10, 32, 16)])
def test_personal_data_prompts_leave_room_for_the_longest_value(longest, context, budget):
    """A budget shorter than a value can never reproduce it (an IBAN is 22-24 tokens of the demo's vocabulary)."""
    from flexaudit.audit.run import _pii_new_tokens

    def characters(text, add_special_tokens=True):  # one token per character
        return {"input_ids": list(text.encode())}

    items = [{"category": "iban", "value": "x" * longest}] if longest else []
    assert _pii_new_tokens(characters, items, context) == budget


def test_inference_trials_draw_candidates_of_the_same_kind_from_the_non_members():
    from flexaudit.audit.personal_data import inference_trials, value_shape

    members = ["Statement for the customer, IBAN GB84 HAVL 6287 0967 1645 53, due 01/02/2020.",
               "IBAN GB33 BUKB 2020 1555 5555 55 at the very start, no context before it",
               "A note without personal data."]
    nonmembers = ["Account: IBAN GB29 NWBK 6016 1331 9268 19, opened 12 March 2019.",
                  "Account: IBAN GB94 BARC 1020 1530 0934 59 and the compact GB94BARC10201530093459.",
                  "Account: IBAN GB84 HAVL 6287 0967 1645 53 (a member's value seen again)", "Call 01/03/2021."]
    trials = inference_trials(members, nonmembers, limit=10, candidates=9, seed=0)
    by_value = {t["value"]: t for t in trials}
    # the first member's IBAN and date have candidates; the second's IBAN has no text before it
    assert set(by_value) == {"GB84 HAVL 6287 0967 1645 53", "01/02/2020"}
    iban = by_value["GB84 HAVL 6287 0967 1645 53"]
    assert sorted(iban["candidates"]) == ["GB29 NWBK 6016 1331 9268 19", "GB94 BARC 1020 1530 0934 59"]
    assert iban["prompt"].endswith("IBAN ") and iban["category"] == "iban"
    assert by_value["01/02/2020"]["candidates"] == ["01/03/2021"]  # the same format, not '12 March 2019'
    assert all(value_shape(c) == value_shape(t["value"]) for t in trials for c in t["candidates"])
    assert len(inference_trials(members, nonmembers, limit=1, candidates=1, seed=0)) == 1
    assert all(len(t["candidates"]) == 1 for t in inference_trials(members, nonmembers, limit=9, candidates=1, seed=0))


def test_canary_references_must_be_positive(tiny_anchor, clinical_expert, tmp_path):
    result = invoke("audit", clinical_expert, "--anchor", tiny_anchor, "--out", tmp_path / "a", "--canary-references", 0)
    assert result.exit_code == 2 and "--canary-references must be at least 1" in one_error_line(result)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("flag,value", [("--max-documents", "0"), ("--extraction-documents", "-1"),
                                        ("--batch-tokens", "0"), ("--canary-references", "0")])
def test_counts_no_audit_could_use_are_one_line_before_anything_is_loaded(tiny_anchor, clinical_expert, tmp_path,
                                                                          flag, value):
    result = invoke("audit", clinical_expert, "--anchor", tiny_anchor, "--out", tmp_path / "a", flag, value)
    assert result.exit_code == 2 and f"{flag} must be at least 1, got {value}" in one_error_line(result)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("changes,fragment", [
    ({"samples_per_prefix": 0}, "AuditOptions.samples_per_prefix must be at least 1"),
    ({"pii_prompts": -1}, "AuditOptions.pii_prompts must be at least 0"),
    ({"suffix_len": 0}, "AuditOptions.suffix_len must be at least 1"),
    ({"sampled_window": 32}, "AuditOptions.sampled_window (32 tokens) must be longer than the prefix (32)"),
    ({"trace_min_match": 0.0}, "AuditOptions.trace_min_match must be in (0, 1]"),
])
def test_audit_options_no_run_could_use_are_refused(changes, fragment):
    import re

    from flexaudit.errors import InputError

    with pytest.raises(InputError, match=re.escape(fragment)):
        AuditOptions(**changes)
