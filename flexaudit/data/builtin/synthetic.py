"""The seeded generator behind the sensitive domains: people, numbers that pass their check digits (cards,
IBANs), dates, money, and the writer that records every personal-data item it writes into a text.

A synthetic domain is a pure function of (domain, n_documents, seed) for a given faker version.

The duplication profile. Real record collections repeat themselves, and memorisation follows duplication
(Carlini et al. 2023, "Quantifying Memorization Across Neural Language Models": extraction grows log-linearly
with the number of copies; Kandpal et al. 2022, "Deduplicating Training Data Mitigates Privacy Risks"). Every
synthetic domain therefore has, seeded and deterministic:
  * a few subjects with many records: 3% of subjects (frequent attenders, customers in arrears, repeat
    buyers) have 12-30 records, the others 1-6 (`record_count`);
  * repeated records: 6% of records are filed again, 1-4 more times under new ids, with identical text (a
    discharge summary copied to the GP and the insurer, a statement re-issued; `REPEATED_RECORDS`);
  * templated letters: each domain has a form letter (an appointment reminder, an arrears letter, an order
    notice) whose fixed wording recurs in every copy, with the subject's personal data in its fields.
Copies follow their original directly, so a shorter build is still a prefix of a longer one."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from flexaudit.data.builtin.registry import SYNTHETIC_DEFAULT_SIZE, Builder, BuiltinRecord, PiiItem, derived_seed


class RecordWriter:
    """Builds a record's text and, alongside, the personal data written into it.

    Templates pass every personal value through `pii()`, so the list cannot drift from the text.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.items: list[PiiItem] = []

    def pii(self, category: str, value: str) -> str:
        item = PiiItem(category, value)
        if item not in self.items:
            self.items.append(item)
        return value

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def record(self, record_id: str, subject: str) -> BuiltinRecord:
        text = "\n".join(self.lines).strip("\n")
        missing = [i.value for i in self.items if i.value not in text]
        assert not missing, f"template lost personal data it declared: {record_id}"
        return BuiltinRecord(id=record_id, text=text, subject=subject, pii=tuple(self.items))


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    sex: str  # "F" or "M"
    dob: dt.date
    phone: str
    email: str
    street: str
    city: str
    region: str  # state or county
    postcode: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def address(self) -> str:
        region = f"{self.region} " if self.region else ""
        return f"{self.street}, {self.city}, {region}{self.postcode}"

    @property
    def title(self) -> str:
        return "Mr" if self.sex == "M" else "Ms"


def _faker(locale: str, seed: int):
    from faker import Faker  # imported here: it takes a tenth of a second and only these domains need it

    fake = Faker(locale)
    fake.seed_instance(seed)
    return fake


def _ascii_slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def make_person(fake, rng: random.Random, *, us: bool) -> Person:
    sex = rng.choice("FM")
    first = fake.first_name_female() if sex == "F" else fake.first_name_male()
    last = fake.last_name()
    # Dates of birth come from our own generator: faker's are relative to today, which would make
    # the corpus change from day to day.
    dob = dt.date(1935, 1, 1) + dt.timedelta(days=rng.randrange(365 * 65))  # adults at every visit
    user = rng.choice([
        f"{_ascii_slug(first)}.{_ascii_slug(last)}",
        f"{_ascii_slug(first)[0]}{_ascii_slug(last)}{rng.randint(1, 99)}",
        f"{_ascii_slug(last)}.{_ascii_slug(first)}{dob.year % 100:02d}",
        f"{_ascii_slug(first)}{rng.randint(10, 9999)}",
    ])
    street = fake.street_address().replace("\n", ", ")
    if us:
        return Person(first, last, sex, dob, fake.phone_number(), f"{user}@{fake.free_email_domain()}",
                       street, fake.city(), fake.state_abbr(include_territories=False), fake.zipcode())
    return Person(first, last, sex, dob, fake.phone_number(), f"{user}@{fake.free_email_domain()}",
                   street, fake.city(), "", fake.postcode())


def fresh_number(rng: random.Random, digits: int, used: set[str]) -> str:
    """A random identifier of `digits` digits that no earlier subject holds. Random rather than
    counted, so no identifier can be derived from another's."""
    while True:
        number = f"{rng.randrange(10**digits):0{digits}d}"
        if number not in used:
            used.add(number)
            return number


def _luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled positions, counting from the digit left of the check digit
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when the digits of `number` (spaces and dashes ignored) pass the Luhn checksum."""
    digits = re.sub(r"[ -]", "", number)
    return digits.isdigit() and len(digits) > 1 and _luhn_check_digit(digits[:-1]) == digits[-1]


def make_card_number(rng: random.Random) -> str:
    prefix = rng.choice(["4", "4", "51", "52", "53", "54", "55"])  # Visa or Mastercard ranges
    body = prefix + "".join(rng.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + _luhn_check_digit(body)


def iban_gb(bank_code: str, sort_code: str, account: str) -> str:
    bban = bank_code + sort_code + account
    # ISO 13616: move the country code and "00" to the end, letters to numbers, check = 98 - mod 97.
    numeric = "".join(str(int(c, 36)) for c in bban + "GB00")
    return f"GB{98 - int(numeric) % 97:02d}{bban}"


def _iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    numeric = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(numeric) % 97 == 1


def grouped(digits: str, size: int = 4) -> str:
    return " ".join(digits[i:i + size] for i in range(0, len(digits), size))


def date_between(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def fmt_date(rng: random.Random, day: dt.date, *, us: bool) -> str:
    styles = ["%m/%d/%Y", "%Y-%m-%d", "%B %d, %Y"] if us else ["%d/%m/%Y", "%d %B %Y", "%Y-%m-%d"]
    return day.strftime(rng.choice(styles))


def money(amount: float, symbol: str) -> str:
    return f"{symbol}{amount:,.2f}"


def staff(fake, rng: random.Random, count: int, suffixes: Sequence[str]) -> list[str]:
    return [f"{fake.first_name()} {fake.last_name()}{rng.choice(suffixes)}" for _ in range(count)]


def _build_synthetic(
    domain: str,
    n_documents: int | None,
    seed: int,
    locale: str,
    setup: Callable,
    subject_records: Callable,
    subject_prefix: str,
) -> list[BuiltinRecord]:
    """Subjects are generated one after another from a single stream (`record_count` records each), each
    record followed by its repeated copies (drawn from a second stream, so copying never changes what is
    written), until `n_documents` records exist; a shorter build is therefore a prefix of a longer one."""
    target = SYNTHETIC_DEFAULT_SIZE if n_documents is None else n_documents
    stream = derived_seed(domain, seed)
    fake, rng = _faker(locale, stream), random.Random(stream)
    copies_rng = random.Random(derived_seed(f"{domain}/copies", seed))
    world = setup(fake, rng)
    records: list[BuiltinRecord] = []
    for index in itertools.count():
        subject = f"{subject_prefix}-{index:06d}"
        for writer in subject_records(fake, rng, world):
            original = writer.record(f"{domain}-{len(records):06d}", subject)
            copies = copies_rng.randint(*REPEAT_COPIES) if copies_rng.random() < REPEATED_RECORDS else 0
            for k in range(1 + copies):
                records.append(original if k == 0 else replace(original, id=f"{domain}-{len(records):06d}"))
                if len(records) == target:
                    return records
    raise AssertionError("unreachable")


HEAVY_SUBJECTS = 0.03  # share of subjects with many records
HEAVY_RECORDS = (12, 30)
REPEATED_RECORDS = 0.06  # share of records filed again under other ids
REPEAT_COPIES = (1, 4)


def record_count(rng: random.Random) -> int:
    """Records of one subject: most people have a couple (1-6, mean about 3), a few have many (12-30)."""
    if rng.random() < HEAVY_SUBJECTS:
        return rng.randint(*HEAVY_RECORDS)
    return rng.choices([1, 2, 3, 4, 5, 6], weights=[14, 22, 22, 18, 14, 10])[0]


def synthetic_builder(domain: str, locale: str, setup: Callable, subject_records: Callable, prefix: str) -> Builder:
    def build(n_documents: int | None, seed: int) -> list[BuiltinRecord]:
        return _build_synthetic(domain, n_documents, seed, locale, setup, subject_records, prefix)
    return build
