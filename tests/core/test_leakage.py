"""The audit's claims on real flexaudit experts (issue 4, "done means"):

  * an expert deliberately overfit on a small set: LOSS and reference AUC above 0.9 and discoverable
    extraction and personal-data inference clearly above the anchor's, while the anchor alone on the same split
    has AUC 0.5 +- 0.05;
  * canaries: a non-DP expert with repeated canaries gives a clearly positive one-run epsilon lower bound,
    and a DP expert's lower bound never exceeds its accounted epsilon.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from attacks.metrics import rate

from flexaudit.moe.expert import ExpertOptions
from flexaudit.privacy.expert_training import DPOptions, train_expert
from flexaudit.workflows import AuditOptions, run_audit

# one worker runs the module: both tests share its anchor, the slowest fixture of the suite
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("leakage")]


@pytest.fixture(scope="module")
def anchor(tmp_path_factory):
    """A tiny anchor with a 4x wider FFN, trained longer than the tests' usual one: an FFN-only expert
    memorises only what the frozen attention lets it tell apart, and the default tiny anchor (150 steps,
    74k expert parameters) cannot overfit even 100 records (measured: LOSS AUC 0.56-0.75)."""
    from flexaudit.data.builtin import write_domain
    from flexaudit.moe import anchor as anchors

    torch.manual_seed(0)  # independent of the tests that ran before in this worker
    root = tmp_path_factory.mktemp("leak-anchor")
    write_domain("public", root / "public.jsonl", n_documents=600)
    wide = dataclasses.replace(anchors.PRESETS["tiny"], intermediate_size=768)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(anchors.PRESETS, "tiny-wide", wide)
        anchors.train_anchor([root / "public.jsonl"], root / "anchor", preset="tiny-wide", steps=1000)
    return root / "anchor"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """550 distinct short customer records (the first 90 characters of each synthetic bank document: bank,
    name, address), so that a small expert can memorise its members. The built-in domain's duplication profile
    (repeated records, customers with up to 30 records) is left out: cut to 90 characters, a frequent
    customer's records are one text, and this test measures memorisation of distinct records. At most 3
    records per customer, from seed 2: the split is by customer, so the anchor's own AUC on it varies with
    the draw of customers (measured 0.41-0.44 on seed 0's data with at most 6, 3 or 2 records per customer,
    0.47 on seeds 1 and 2), and the test asserts that the anchor is at chance on the split it uses."""
    from flexaudit.data.builtin import write_domain

    root = tmp_path_factory.mktemp("leak-data")
    write_domain("finance", root / "full.jsonl", n_documents=1000, seed=2)
    seen: set[str] = set()
    per_subject: dict[str, int] = {}
    with (root / "full.jsonl").open() as full, (root / "finance.jsonl").open("w") as short:
        for line in full:
            row = json.loads(line)
            text, subject = row["text"][:90], row["subject"]
            if text in seen or per_subject.get(subject, 0) == 3:
                continue
            seen.add(text)
            per_subject[subject] = per_subject.get(subject, 0) + 1
            short.write(json.dumps({"id": row["id"], "text": text, "subject": subject}) + "\n")
            if len(seen) == 550:
                break
    return root / "finance.jsonl"


def _audit(expert, anchor, out, **options):
    # 200 references per canary instead of 1,000: the exposure scoring was 35 of each audit's 43 s, and the
    # one-run epsilon bound reads the canaries' z-scores among their references, which 200 estimate well
    defaults = dict(max_documents=400, extraction_documents=60, samples_per_prefix=2, pii_prompts=20,
                    canary_references=200)
    return run_audit(expert, anchor_dir=anchor, out=out, options=AuditOptions(**{**defaults, **options})).report


def _auc(report, attack, side):
    return report["empirical"]["membership"]["attacks"][attack][side]["auc"]


@pytest.fixture(scope="module")
def leaky(tmp_path_factory, anchor, records):
    """~140 member records, 400 held out; ~40 passes over the members at a high learning rate; 24 canaries
    repeated 8 times. 600 steps at 2e-2 overfit about as far as 1,500 at 5e-3 in 40% of the time (measured with
    three owner keys: LOSS AUC 0.96, REF 0.880-0.885, 18 of 56 members half reproduced; 1,500 steps: 0.97, 0.90,
    19; 400 steps at 3e-2: REF 0.864), and a shorter-trained anchor does not (REF 0.868 on 700 or 800 steps)."""
    torch.manual_seed(0)  # independent of the tests that ran before in this worker
    out = tmp_path_factory.mktemp("leaky") / "leaky"
    train_expert(anchor_dir=anchor, data=records, name="leaky", out=out,
                 options=ExpertOptions(steps=600, batch_size=16, lr=2e-2, holdout_fraction=0.73, canaries=24,
                                       canary_repeats=8), subject_field="subject")
    return out


def test_overfit_expert_leaks_and_the_anchor_does_not(leaky, anchor, tmp_path):
    report = _audit(leaky, anchor, tmp_path / "audit",
                    attacks=("FA-MIA-LOSS", "FA-MIA-REF", "FA-EXT-DISC", "FA-EXT-CANARY", "FA-EXT-PII-INF"))
    # its members' personal data (dates and card numbers in these records) picked out among non-members' values of
    # the same format: measured 0.70 [0.60, 0.79] against the anchor's 0.09 [0.04, 0.17] (96 occurrences, chance 0.1)
    inferred = report["empirical"]["extraction"]["attacks"]["FA-EXT-PII-INF"]
    assert inferred["target"]["inferred"]["ci"]["low"] > inferred["anchor"]["inferred"]["ci"]["high"]
    assert inferred["anchor"]["inferred"]["value"] < 2 * inferred["anchor"]["chance"]  # the anchor guesses
    assert report["empirical"]["audit"]["members"] >= 100 and report["empirical"]["audit"]["nonmembers"] >= 300
    assert _auc(report, "FA-MIA-LOSS", "target") > 0.9
    # The reference attack subtracts the anchor's loss, which carries part of the LOSS signal's chance
    # structure on this split; measured 0.880-0.885 (see the fixture), so the margin is 0.85.
    assert _auc(report, "FA-MIA-REF", "target") > 0.85
    assert abs(_auc(report, "FA-MIA-LOSS", "anchor") - 0.5) <= 0.05
    disc = report["empirical"]["extraction"]["attacks"]["FA-EXT-DISC"]
    assert disc["target"]["mean_token_match"] > disc["anchor"]["mean_token_match"] + 0.1
    # Whole 32-token suffixes are rarely reproduced at this size: 0, 1 and 0 of 56 members with three fixed owner
    # keys, 0 with one test session's key (the key draws the canaries, so the training data differs per session),
    # so their count against the anchor's 0 is a coin toss. Near-verbatim reproduction is not: members with at
    # least half of their suffix reproduced, measured 18 of 56 with three keys against the anchor's 0; the
    # intervals must be apart.
    half = {side: rate(k=sum((d["token_match"] or 0) >= 0.5 for d in disc[side]["per_document"]),
                       n=disc[side]["n_documents"]) for side in ("target", "anchor")}
    assert half["target"].ci.low > half["anchor"].ci.high
    canary = report["empirical"]["extraction"]["attacks"]["FA-EXT-CANARY"]["target"]
    assert canary["epsilon_one_run"]["epsilon"] > 0.5  # repeated canaries: clearly positive
    assert canary["max_estimable_bits"] == pytest.approx(math.log2(201))  # the audit's canary_references


def test_dp_expert_bound_never_exceeds_its_epsilon(anchor, records, tmp_path):
    out = tmp_path / "private"
    trained = train_expert(anchor_dir=anchor, data=records, name="private", out=out,
                           options=ExpertOptions(steps=60, batch_size=16, lr=5e-3, holdout_fraction=0.73, canaries=24,
                                                 canary_repeats=8, dp=DPOptions(target_epsilon=8.0, unit="subject")),
                           subject_field="subject")
    accounted = trained.manifest["privacy"]["epsilon"]
    assert accounted <= 8.0
    report = _audit(out, anchor, tmp_path / "audit", attacks=("FA-MIA-LOSS", "FA-EXT-CANARY"))
    canary = report["empirical"]["extraction"]["attacks"]["FA-EXT-CANARY"]["target"]
    assert canary["epsilon_one_run"]["epsilon"] <= accounted
    for bound in report["empirical"].get("epsilon_lower_bounds", []):
        assert bound["epsilon"] <= accounted
    assert json.loads((out / "manifest.json").read_text())["canaries"]["planted"] >= 1
