"""The built-in corpus: determinism, domain separation, personal-data bookkeeping, sizes, JSONL output."""

from __future__ import annotations

import itertools
import json
import re
import sysconfig
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from flexaudit.data import load_documents
from flexaudit.data.builtin import (
    DOMAINS,
    PII_CATEGORIES,
    SYNTHETIC_DEFAULT_SIZE,
    BuiltinRecord,
    build_domain,
    domain_names,
    luhn_valid,
    write_domain,
)
from flexaudit.data.builtin.code import CODEBASE
from flexaudit.data.builtin.stdlib import MIN_KEEP
from flexaudit.errors import InputError

SYNTHETIC = ["clinical", "finance", "support"]
SUBJECT_PREFIX = {"clinical": "patient", "finance": "customer", "support": "shopper"}


@pytest.fixture(scope="module")
def full() -> dict[str, list[BuiltinRecord]]:
    return {name: build_domain(name) for name in domain_names()}


def _iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    digits = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", compact) is not None and int(digits) % 97 == 1


def _long_lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if len(line.strip()) >= 40}


# --- registry and arguments -----------------------------------------------------------------------


def test_domain_names_are_stable_and_registered():
    assert domain_names() == ["public", "code", "clinical", "finance", "support"]
    assert [DOMAINS[n].sensitive for n in domain_names()] == [False, False, True, True, True]
    assert all(DOMAINS[n].name == n and DOMAINS[n].description for n in domain_names())


def test_unknown_domain_is_an_input_error_naming_the_choices():
    with pytest.raises(InputError) as err:
        build_domain("medical")
    assert "'medical'" in err.value.message
    for name in domain_names():
        assert name in err.value.message
    with pytest.raises(InputError):
        write_domain("nope", "unused.jsonl")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_document_count_is_an_input_error(bad):
    with pytest.raises(InputError):
        build_domain("clinical", n_documents=bad)


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_is_deterministic_per_seed(name, full):
    assert build_domain(name, n_documents=150, seed=0) == full[name][:150]
    other = build_domain(name, n_documents=150, seed=1)
    assert other == build_domain(name, n_documents=150, seed=1)
    assert not {r.text for r in other} & {r.text for r in full[name][:150]}
    assert {i.value for r in other for i in r.pii if i.category == "name"} != {
        i.value for r in full[name][:150] for i in r.pii if i.category == "name"
    }


@pytest.mark.parametrize("name", domain_names())
def test_a_small_build_is_a_prefix_of_the_full_build(name, full):
    assert build_domain(name, n_documents=37) == full[name][:37]


@pytest.mark.parametrize("name", ["public", "code"])
def test_stdlib_domains_hold_a_fixed_set_the_seed_only_orders(name, full):
    reseeded = build_domain(name, seed=7)
    assert reseeded == build_domain(name, seed=7)
    assert sorted(r.id for r in reseeded) == sorted(r.id for r in full[name])
    assert [r.id for r in reseeded] != [r.id for r in full[name]]
    assert build_domain(name, n_documents=10**9) == full[name]


def test_synthetic_domains_do_not_share_people(full):
    emails = {n: {i.value.lower() for r in full[n] for i in r.pii if i.category == "email"} for n in SYNTHETIC}
    assert not emails["clinical"] & emails["finance"]
    assert not emails["clinical"] & emails["support"]


# --- sizes and shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", domain_names())
def test_ids_are_unique_and_only_repeated_records_share_a_text(name, full):
    records = full[name]
    assert len({r.id for r in records}) == len(records)
    assert all(r.text.strip() for r in records)
    if name not in SYNTHETIC:
        assert len({r.text for r in records}) == len(records)
        return
    # the duplication profile: a repeated record is filed again right after itself, 1-4 more times
    runs = [len(list(group)) for _, group in itertools.groupby(records, key=lambda r: r.text)]
    assert sum(runs) == len(records) and len({r.text for r in records}) == len(runs)
    copies = sum(n - 1 for n in runs)
    assert 0.06 * len(records) <= copies <= 0.2 * len(records)
    assert max(runs) <= 5 and sum(n > 1 for n in runs) >= 0.04 * len(runs)


LETTERS = {"clinical": "This is a reminder of your appointment with",
           "finance": "To avoid further charges, please pay in at least",
           "support": "will not arrive on the date we promised"}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_each_sensitive_domain_has_a_templated_letter_full_of_its_subjects_data(name, full):
    letters = [r for r in full[name] if LETTERS[name] in r.text]
    assert 0.05 * len(full[name]) <= len(letters) <= 0.3 * len(full[name])
    assert len({r.subject for r in letters}) >= 0.25 * len(letters)  # sent to many subjects, not one
    for r in letters:
        assert {"name", "address"} <= {i.category for i in r.pii}


def test_sizes_are_above_sensible_minimums(full):
    chars = {n: sum(len(r.text) for r in full[n]) for n in domain_names()}
    assert len(full["public"]) >= 800 and chars["public"] >= 1_000_000
    assert sum(r.id.startswith("public/topic/") for r in full["public"]) >= 200  # pydoc_data topics
    assert sum(r.id.startswith("public/docstring/") for r in full["public"]) >= 500
    assert len(full["code"]) >= 1000 and chars["code"] >= 400_000  # at least 100 non-members at a 10% holdout
    for name in SYNTHETIC:
        assert len(full[name]) == SYNTHETIC_DEFAULT_SIZE
        assert chars[name] >= 300 * SYNTHETIC_DEFAULT_SIZE


@pytest.mark.parametrize(("name", "low", "high"), [("public", 200, 1900), ("code", 200, 625)])
def test_stdlib_documents_are_paragraph_or_function_sized(name, low, high, full):
    lengths = sorted(len(r.text) for r in full[name])
    inside = sum(low <= n <= high for n in lengths)
    assert inside >= 0.95 * len(lengths)
    assert lengths[-1] <= high


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_records_are_a_few_hundred_characters(name, full):
    lengths = [len(r.text) for r in full[name]]
    assert min(lengths) >= 250 and max(lengths) <= 1200


# --- stdlib domains -------------------------------------------------------------------------------


def _code_file(record: BuiltinRecord) -> str:
    return re.fullmatch(r"code/(.+):\d+-\d+", record.id).group(1)


def _top(module_path: str) -> str:
    return re.split(r"[/.]", module_path)[0]


def test_public_and_code_draw_on_disjoint_modules(full):
    code_tops = {_top(_code_file(r)) for r in full["code"]}
    doc_tops = {_top(r.id.split("/")[2]) for r in full["public"] if r.id.startswith("public/docstring/")}
    assert code_tops and doc_tops
    assert not code_tops & doc_tops


def test_no_text_is_shared_between_public_and_code(full):
    public_lines = set().union(*(_long_lines(r.text) for r in full["public"]))
    code_lines = set().union(*(_long_lines(r.text) for r in full["code"]))
    assert not public_lines & code_lines
    code_blob = "\n".join(r.text for r in full["code"])
    for record in full["public"][:150]:
        assert record.text not in code_blob


def test_code_chunks_are_verbatim_slices_that_tile_their_files(full):
    root = Path(sysconfig.get_path("stdlib"))
    by_file: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for r in full["code"]:
        a, b = map(int, r.id.rsplit(":", 1)[1].split("-"))
        by_file[_code_file(r)].append((a, b, r.text))
    blob = "\n".join(r.text for r in full["code"])
    for rel, chunks in sorted(by_file.items()):
        chunks.sort()
        lines = (root / rel).read_text(encoding="utf-8").split("\n")
        for a, b, text in chunks:
            assert text.rstrip("\n") == "\n".join(lines[a - 1:b]).rstrip("\n"), (rel, a, b)
        # What lies between chunks (and after the last) was left out for a reason: a fragment too small to
        # keep (a stray two-line tail), or copies of chunks kept elsewhere (one text never gets two ids).
        ends = [0] + [b for _, b, _ in chunks]
        starts = [a - 1 for a, _, _ in chunks] + [len(lines)]
        for end, start in zip(ends, starts):
            assert start >= end, (rel, start + 1)  # chunks never overlap
            gap = "\n".join(lines[end:start]).strip()
            assert len(gap) < MIN_KEEP or all(line in blob for line in gap.split("\n")), (rel, end + 1, start)


def test_code_is_one_codebase_the_public_domain_never_draws_on(full):
    assert {_top(_code_file(r)) for r in full["code"]} == {CODEBASE}
    assert not any(r.id.startswith(f"public/docstring/{CODEBASE}") for r in full["public"])


def test_code_without_its_codebase_says_which_package_is_missing(monkeypatch):
    from flexaudit.data.builtin import code

    monkeypatch.setattr(code, "CODEBASE", "no_such_package")
    code._code_corpus.cache_clear()
    try:
        with pytest.raises(InputError, match="no sources of the no_such_package package at .*train on your own data"):
            build_domain("code", n_documents=5)
    finally:
        code._code_corpus.cache_clear()


def test_code_skips_tests_generated_data_and_installed_packages(full):
    files = {_code_file(r) for r in full["code"]}
    for f in files:
        parts = f.split("/")
        assert not {"test", "tests", "idle_test", "site-packages"} & set(parts)
        assert not parts[-1].startswith("test_")
        assert parts[0] not in {"pydoc_data", "encodings"} and not parts[0].startswith("_sysconfigdata")


def test_code_chunks_start_at_definitions_or_comments(full):
    starts = Counter(r.text.lstrip().split(None, 1)[0] for r in full["code"])
    assert starts["def"] + starts["class"] + starts["@"] + starts["async"] + sum(
        c for w, c in starts.items() if w.startswith(("#", "@", '"""'))
    ) >= 0.5 * len(full["code"])


def test_public_is_prose_not_code(full):
    def letter_share(text: str) -> float:
        return sum(c.isalpha() for c in text) / max(1, sum(not c.isspace() for c in text))

    shares = [letter_share(r.text) for r in full["public"]]
    # Tables, grammar blocks and the odd ASCII diagram are documentation too; whole docstrings
    # that are mostly examples or data are left out.
    assert sum(s >= 0.6 for s in shares) >= 0.95 * len(shares)
    docstrings = [letter_share(r.text) for r in full["public"] if r.id.startswith("public/docstring/")]
    assert min(docstrings) >= 0.3


# --- synthetic domains ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_personal_data_item_occurs_verbatim(name, full):
    for r in full[name]:
        assert r.pii, r.id
        assert any(i.category == "name" for i in r.pii)
        for item in r.pii:
            assert item.category in PII_CATEGORIES
            assert item.value and item.value in r.text, (r.id, item)
        assert len(set(r.pii)) == len(r.pii)


def test_card_numbers_pass_luhn_and_ibans_their_check_digits(full):
    cards = [i.value for r in full["finance"] for i in r.pii if i.category == "card_number"]
    ibans = [i.value for r in full["finance"] for i in r.pii if i.category == "iban"]
    assert len(cards) >= 50 and len(ibans) >= 50
    assert all(luhn_valid(c) for c in cards)
    assert all(len(re.sub(r"\D", "", c)) == 16 for c in cards)
    assert all(_iban_ok(i) for i in ibans)


def test_luhn_check_itself():
    assert luhn_valid("4111 1111 1111 1111") and luhn_valid("79927398713")
    assert not luhn_valid("4111 1111 1111 1112") and not luhn_valid("12ab") and not luhn_valid("")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_subjects_have_several_records(name, full):
    per_subject = Counter(r.subject for r in full[name])
    assert all(re.fullmatch(rf"{SUBJECT_PREFIX[name]}-\d{{6}}", s) for s in per_subject)
    assert sum(n >= 2 for n in per_subject.values()) >= 0.6 * len(per_subject)
    # a few subjects with many records (12-30, their repeated copies aside), holding a good share of the records
    distinct = Counter(r.subject for r in {r.text: r for r in full[name]}.values())
    heavy = [s for s, n in distinct.items() if n >= 12]
    assert max(distinct.values()) <= 30 and 0.01 * len(distinct) <= len(heavy) <= 0.06 * len(distinct)
    assert sum(per_subject[s] for s in heavy) >= 0.1 * len(full[name])
    assert sorted(n for s, n in distinct.items() if s not in heavy)[-1] <= 6
    # records of one subject sit together, so a prefix never splits more than the last subject
    order = [r.subject for r in full[name]]
    assert order == sorted(order)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_a_subjects_records_describe_one_person(name, full):
    emails: dict[str, set[str]] = defaultdict(set)
    owners: dict[str, set[str]] = defaultdict(set)
    for r in full[name]:
        for item in r.pii:
            if item.category == "email":
                emails[r.subject].add(item.value)
                owners[item.value].add(r.subject)
    assert all(len(v) == 1 for v in emails.values())
    assert sum(len(v) > 1 for v in owners.values()) <= 0.01 * len(owners)


def test_identifiers_are_unique_across_subjects(full):
    for name, category in [("clinical", "mrn"), ("finance", "account_number"), ("support", "order_number")]:
        owners: dict[str, set[str]] = defaultdict(set)
        for r in full[name]:
            for item in r.pii:
                if item.category == category:
                    owners[item.value].add(r.subject)
        assert owners and all(len(s) == 1 for s in owners.values()), name


def test_clinical_notes_carry_icd10_codes_medications_and_vitals(full):
    notes = full["clinical"]
    icd = re.compile(r"\b[A-TV-Z]\d{2}(?:\.\d{1,4}[A-Z]?)?\b")
    notes = [r for r in notes if LETTERS["clinical"] not in r.text]  # reminder letters carry no diagnosis
    assert sum(bool(icd.search(r.text)) for r in notes) >= 0.95 * len(notes)
    assert sum(" mg " in r.text or " mcg " in r.text for r in notes) >= 0.5 * len(notes)
    assert sum("mmHg" in r.text for r in notes) >= 0.3 * len(notes)
    categories = Counter(i.category for r in notes for i in r.pii)
    assert {"name", "date_of_birth", "mrn", "phone", "email", "address"} <= set(categories)


def test_domains_read_differently(full):
    def share(name: str, pattern: str) -> float:
        return sum(bool(re.search(pattern, r.text)) for r in full[name]) / len(full[name])

    assert share("finance", "£") > 0.7 and share("clinical", "£") == 0 and share("support", "£") == 0
    assert share("support", r"^Ticket #\d{6}") == 1 and share("clinical", "Ticket #") == 0
    assert share("clinical", r"\bMRN\b") > 0.7 and share("finance", r"\bMRN\b") == 0
    templates = Counter(r.text.splitlines()[0].split(" - ")[0] for r in full["clinical"])
    assert len(templates) >= 6


# --- JSONL output ---------------------------------------------------------------------------------


def test_write_domain_round_trips_through_load_documents(tmp_path):
    path = tmp_path / "out" / "clinical.jsonl"
    records = build_domain("clinical", n_documents=40, seed=3)
    assert write_domain("clinical", path, n_documents=40, seed=3) == 40
    assert load_documents(path, subject_field="subject") == [r.document() for r in records]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["pii"] for row in rows] == [[i.as_dict() for i in r.pii] for r in records]
    assert set(rows[0]) == {"id", "text", "subject", "pii"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["clinical.jsonl"]  # no temporary left over


def test_write_domain_without_subjects(tmp_path):
    path = tmp_path / "public.jsonl"
    assert write_domain("public", path, n_documents=25) == 25
    docs = load_documents(path)
    assert docs == [r.document() for r in build_domain("public", n_documents=25)]
    assert all(d.subject is None for d in docs)
    assert "subject" not in json.loads(path.read_text(encoding="utf-8").splitlines()[0])
