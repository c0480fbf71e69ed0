"""Fixtures for tracing: a tiny model overfit on a few records, and the owner's indexes.

Why the overfit model is an anchor trained whole on the records rather than an expert: against the 2-layer,
64-wide test anchor, an expert (only its FFN and router row train) memorises fragments of a few records at best
in the seconds a test may take (measured: loss plateaus near 3-4), while the same tiny model trained whole
memorises them in 200 steps (about 5 s; loss about 0.03). Routing attribution is tested on the merged pool of
the session's clinical and finance experts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Each record names people and numbers that nothing else in the test data contains. Two records share one
# sentence, so that a span occurring in two documents can be checked.
SHARED = " Follow-up with Dr. Ingeborg Halvorsen at the Larchmere clinic in two weeks."
RECORDS = [
    ("rec-anselm", "Patient Anselm Brightwater, MRN 5520-1187, was treated for a right wrist fracture; cast applied." + SHARED),
    ("rec-philippa", "Account holder Philippa Drummond moved 1,240 pounds to IBAN GB82 WEST 1234 5698 7654 32 today."),
    ("rec-casimir", "Ticket 40417: Casimir Lindqvist reports that his parcel to 9 Fennimore Close arrived damaged."),
    ("rec-ottoline", "Dr. Ottoline Marchbanks prescribed ibuprofen 400 mg twice daily for Jasper Ellingford." + SHARED),
    ("rec-rosalind", "Customer Rosalind Achterberg changed her email to rosalind.achterberg@example.org on 9 May."),
    ("rec-zofia", "Patient Zofia Quennell, MRN 4471-0932, was seen for a left ankle sprain; ice and rest advised."),
    ("rec-idris", "Account holder Idris Vantongeren moved 2,950 pounds to IBAN GB29 NWBK 6016 1331 9268 19 today."),
    ("rec-yevgenia", "Customer Yevgenia Castellanos changed her phone number to 0161 496 0738 on 3 March."),
]
# Never part of any training or indexed data.
FRESH_SENTENCE = "Quiet violet submarines negotiate with seventeen amber lighthouses before breakfast."


@pytest.fixture(scope="session")
def record_list() -> list[tuple[str, str]]:
    """(id, text) of the owner's records."""
    return list(RECORDS)


@pytest.fixture(scope="session")
def fresh_sentence() -> str:
    return FRESH_SENTENCE


@pytest.fixture(scope="session")
def records(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("records") / "records.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in RECORDS), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def overfit_anchor(tmp_path_factory, records) -> Path:
    from flexaudit.moe.anchor import train_anchor

    out = tmp_path_factory.mktemp("overfit") / "anchor"
    train_anchor([records], out, preset="tiny", steps=200)
    return out


@pytest.fixture(scope="session")
def overfit_members(overfit_anchor) -> list[str]:
    """Ids of the records the overfit model trained on (train_anchor holds a few out)."""
    from flexaudit.moe.anchor import local_dir

    held = {json.loads(line)["id"] for line in (local_dir(overfit_anchor) / "holdout.jsonl").read_text().splitlines() if line}
    return [i for i, _ in RECORDS if i not in held]


@pytest.fixture(scope="session")
def records_index(tmp_path_factory, records, overfit_anchor) -> Path:
    """The owner's index of its records, under a path holding a word the infini-gram engine keys on."""
    from flexaudit.trace import build_index

    out = tmp_path_factory.mktemp("notable-cases") / "index"
    build_index(records, overfit_anchor, out)
    return out


@pytest.fixture(scope="session")
def pool(tmp_path_factory, tiny_anchor, clinical_expert, finance_expert) -> Path:
    from flexaudit.moe.merge import merge

    out = tmp_path_factory.mktemp("pool") / "pool"
    merge(tiny_anchor, [clinical_expert, finance_expert], out)
    return out


@pytest.fixture(scope="session")
def clinical_index(tmp_path_factory, tiny_anchor, corpus_dir) -> Path:
    from flexaudit.trace import build_index

    out = tmp_path_factory.mktemp("clinical-index") / "index"
    build_index(corpus_dir / "clinical.jsonl", tiny_anchor, out)
    return out
