"""The extraction table (issue 14): the dense baseline, and one owner's members attacked in every model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from flexaudit.errors import InputError, IntegrityError
from flexaudit.moe.anchor import load_anchor
from flexaudit.moe.checkpoint import load_flexolmo
from flexaudit.moe.dense import read_dense_baseline, train_dense_baseline
from flexaudit.moe.expert import compose, load_package
from flexaudit.moe.merge import open_model
from flexaudit.report import read_report
from flexaudit.workflows import AuditOptions, run_audit

from ..conftest import invoke, one_error_line

SMALL = AuditOptions(max_documents=24, extraction_documents=6, samples_per_prefix=2, pii_prompts=6, pii_trials=20,
                     attacks=("FA-MIA-LOSS", "FA-EXT-DISC", "FA-EXT-SAMPLED", "FA-EXT-PII", "FA-EXT-PII-INF"))


@pytest.fixture(scope="module")
def dense(tmp_path_factory, tiny_anchor, clinical_expert):
    return train_dense_baseline(clinical_expert, anchor_dir=tiny_anchor, out=tmp_path_factory.mktemp("dense") / "d")


def test_the_dense_baseline_trains_every_parameter_on_the_experts_members_with_its_schedule(
        dense, tiny_anchor, clinical_expert):
    anchor = load_anchor(tiny_anchor)
    model = load_flexolmo(dense.directory)
    before, after = anchor.model.state_dict(), model.state_dict()
    assert set(before) == set(after)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    # embeddings, attention, norms, the FFN and the head all moved; only the router row did not: with one expert
    # its softmax is 1 whatever the row, so a dense model does not use it (and it gets no gradient)
    assert changed == {name for name, _ in anchor.model.named_parameters() if ".gate.rows." not in name}
    manifest = load_package(clinical_expert).manifest
    info = dense.info
    assert info["expert"] == {"name": "clinical", "root_digest": load_package(clinical_expert).root_digest}
    assert info["anchor"]["root_digest"] == anchor.root_digest
    for key in ("steps", "batch_size", "seq_len", "lr", "warmup_steps", "seed"):
        assert info["training"][key] == manifest["training"][key], key
    members = clinical_expert.with_name("clinical.local") / "members.jsonl"
    assert info["training"]["documents"] == len(members.read_text().splitlines())
    assert info["training"]["tokens"] == manifest["training"]["tokens"]  # the same owner tokens, step for step
    assert read_dense_baseline(dense.directory, expert_root_digest=info["expert"]["root_digest"]).info == info


def test_a_changed_or_foreign_dense_baseline_is_refused(dense, finance_expert, tmp_path):
    copy = tmp_path / "dense"
    shutil.copytree(dense.directory, copy)
    with pytest.raises(IntegrityError, match="another version of expert"):
        read_dense_baseline(copy, expert_root_digest=load_package(finance_expert).root_digest)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 0.5}))
    with pytest.raises(IntegrityError, match="was modified"):
        read_dense_baseline(copy)


def test_baseline_command_writes_to_the_owners_side_and_refuses_bad_input(tiny_anchor, finance_expert, tmp_path):
    result = invoke("baseline", "dense", finance_expert, "--anchor", tiny_anchor)
    assert result.exit_code == 0, result.output
    default = finance_expert.with_name("finance.local") / "dense-baseline"
    assert (default / "dense-baseline.json").is_file() and "never share it" in result.stdout
    again = invoke("baseline", "dense", finance_expert, "--anchor", tiny_anchor)
    assert again.exit_code == 2 and "already exists" in one_error_line(again)
    lonely = tmp_path / "finance"
    shutil.copytree(finance_expert, lonely)  # the package without its owner-side files
    missing = invoke("baseline", "dense", lonely, "--anchor", tiny_anchor, "--out", tmp_path / "d")
    assert missing.exit_code == 2 and "member documents are not at" in one_error_line(missing)
    assert not (tmp_path / "d").exists()


def test_a_dp_expert_gets_no_dense_baseline(tiny_anchor, clinical_expert, tmp_path):
    pkg = tmp_path / "dp"
    shutil.copytree(clinical_expert, pkg)
    shutil.copytree(clinical_expert.with_name("clinical.local"), tmp_path / "dp.local")
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["privacy"] = {"guarantee": "dp", "epsilon": 8.0}
    (pkg / "manifest.json").write_text(json.dumps(manifest))  # the manifest is outside the content digest
    with pytest.raises(InputError, match="DP-SGD"):
        train_dense_baseline(pkg, anchor_dir=tiny_anchor, out=tmp_path / "d")


@pytest.fixture(scope="module")
def table(tmp_path_factory, tiny_anchor, clinical_expert, finance_expert, dense):
    out = tmp_path_factory.mktemp("audit-table") / "clinical"
    options = AuditOptions(**{**SMALL.__dict__, "dense_baseline": dense.directory, "pool_experts": (finance_expert,)})
    run_audit(clinical_expert, anchor_dir=tiny_anchor, out=out, options=options)
    return read_report(out)["empirical"]


def test_every_row_attacks_the_same_member_documents(table):
    block = table["extraction_comparison"]
    rows = {r["kind"]: r for r in block["rows"]}
    assert [r["kind"] for r in block["rows"]] == ["anchor", "dense", "expert", "pool", "opt-out"]
    assert rows["pool"]["experts"] == ["public", "finance", "clinical"]
    assert rows["opt-out"]["experts"] == ["public", "finance"] and rows["opt-out"]["label"] == "merged pool without clinical"
    for attack in ("FA-EXT-SAMPLED", "FA-EXT-DISC"):
        digests = {r["documents_digest"][attack] for r in block["rows"]}
        assert len(digests) == 1 and None not in digests, attack
        assert {r["rates"][attack]["n"] for r in block["rows"]} == {block["documents"]}
    assert {r["rates"]["FA-EXT-PII"]["n"] for r in block["rows"]} == {block["personal_data_items"]}
    # personal-data inference: the same trials in every model, and the expert's row is the audit's own result
    assert block["inference_trials"] >= 10
    assert {r["rates"]["FA-EXT-PII-INF"]["n"] for r in block["rows"]} == {block["inference_trials"]}
    inferred = table["extraction"]["attacks"]["FA-EXT-PII-INF"]
    assert rows["expert"]["rates"]["FA-EXT-PII-INF"] == inferred["target"]["inferred"]
    assert inferred["anchor"]["n_trials"] == inferred["target"]["n_trials"] == block["inference_trials"]
    # the anchor and expert rows are the audit's own extraction results, not a second run
    own = table["extraction"]["attacks"]["FA-EXT-SAMPLED"]
    assert rows["expert"]["rates"]["FA-EXT-SAMPLED"] == own["target"]["extracted"]
    assert rows["anchor"]["rates"]["FA-EXT-SAMPLED"] == own["anchor"]["extracted"]
    # the dense fine-tune was attacked itself: its generations are not the anchor's
    assert rows["dense"]["mean_token_match"] != rows["anchor"]["mean_token_match"]


def test_in_a_pool_of_one_the_pool_is_the_expert_and_opting_out_is_exactly_the_anchor(tiny_anchor, clinical_expert,
                                                                                        tmp_path):
    # The table reuses the audit's results for these two rows, which is sound only if they are the same models.
    anchor = load_anchor(tiny_anchor)
    package = load_package(clinical_expert, anchor=anchor)
    ids = torch.randint(2, anchor.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = open_model(clinical_expert, anchor_dir=tiny_anchor)[0](ids)  # what the audit attacks
        assert torch.equal(compose(anchor, [package])(ids), target)  # the pool of one, as merge composes it
        assert not torch.equal(anchor.model(ids), target)
    options = AuditOptions(**{**SMALL.__dict__, "pool_experts": ()})
    run_audit(clinical_expert, anchor_dir=tiny_anchor, out=tmp_path / "a", options=options)
    rows = {r["kind"]: r for r in read_report(tmp_path / "a")["empirical"]["extraction_comparison"]["rows"]}
    assert set(rows) == {"anchor", "expert", "pool", "opt-out"}  # no dense baseline given: no dense row
    assert rows["pool"]["experts"] == ["public", "clinical"] and rows["opt-out"]["experts"] == ["public"]

    def measured(row):
        return row["rates"], row["mean_best_similarity"], row["mean_token_match"]

    assert measured(rows["opt-out"]) == measured(rows["anchor"])
    assert measured(rows["pool"]) == measured(rows["expert"])
    assert measured(rows["expert"]) != measured(rows["anchor"])  # the expert changed what is generated


def test_the_table_needs_the_expert_as_target(tiny_anchor, clinical_expert, tmp_path):
    options = AuditOptions(**{**SMALL.__dict__, "pool_experts": (), "model": tiny_anchor})
    with pytest.raises(InputError, match="extraction table compares models with anchor \+ expert"):
        run_audit(clinical_expert, anchor_dir=tiny_anchor, out=tmp_path / "a", options=options)
    assert not (tmp_path / "a").exists()
