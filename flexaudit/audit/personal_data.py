"""Finding personal-data items in text, for the personal-data leakage audit.

Pattern-based and deliberately conservative: a category is reported only where its pattern is specific
(e-mail addresses, phone numbers, IBANs with a valid checksum, payment-card numbers with a valid Luhn
digit, dates). Names and street addresses cannot be found reliably by patterns and are not searched for;
the report says so. Values found are used in memory and never written anywhere.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
PHONE = re.compile(r"(?<![\w-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,5}\)[ .-]?|\d{3}[ .-])\d{3,4}[ .-]?\d{3,4}(?:x\d{1,5})?(?![\w-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
DATE = re.compile(
    r"\b(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}|\d{1,2} (?:January|February|March|April|May|June|July|August|"
    r"September|October|November|December) \d{4})\b"
)

CATEGORIES = ("email", "phone", "iban", "card_number", "date")
NOT_SEARCHED = ("name", "address")


CONTEXT_CHARS = 200  # the text before an item that prompts for it (the leakage prompts, the inference trials)
MIN_CONTEXT = 24  # an item nearer the start of its text has too little before it to prompt with


@dataclass(frozen=True)
class Found:
    category: str
    value: str
    start: int  # character offset in the text

    def context(self, text: str, chars: int = CONTEXT_CHARS) -> str | None:
        """The text before this item in `text`, up to `chars` characters; None within the first MIN_CONTEXT."""
        return text[max(0, self.start - chars): self.start] if self.start >= MIN_CONTEXT else None


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(digits) % 97 == 1


def find_personal_data(text: str) -> list[Found]:
    """Every personal-data item in `text` that a specific pattern recognises, in order of appearance."""
    found: list[Found] = []
    taken: list[range] = []

    def add(category: str, match: re.Match, ok: bool = True) -> None:
        span = range(match.start(), match.end())
        if ok and not any(span.start < t.stop and t.start < span.stop for t in taken):
            taken.append(span)
            found.append(Found(category, match.group(0), match.start()))

    for m in EMAIL.finditer(text):
        add("email", m)
    for m in IBAN.finditer(text):
        add("iban", m, _iban_ok(m.group(0)))
    for m in CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(0))
        add("card_number", m, 13 <= len(digits) <= 19 and _luhn(digits))
    for m in DATE.finditer(text):
        add("date", m)
    for m in PHONE.finditer(text):
        add("phone", m, sum(c.isdigit() for c in m.group(0)) >= 7)
    return sorted(found, key=lambda f: f.start)


def value_shape(value: str) -> str:
    """The format of a value, its characters abstracted: 'GB84 HAVL 6287' -> 'A00 A 0000'."""
    return re.sub(r"\d", "0", re.sub(r"[A-Za-z]+", "A", value))


def inference_trials(members: list[str], nonmembers: list[str], *, limit: int, candidates: int, seed: int,
                     context_chars: int = CONTEXT_CHARS) -> list[dict]:
    """Trials of the personal-data inference game (attacks.pii_inference) on the members' items: the text before
    each item (`Found.context`: up to `context_chars` characters; items with no context are left out), its value, and up to `candidates` other values of the same category and format found in the
    non-members. Candidates come from the non-members so that they are as plausible in the domain as the true
    value but were never trained on: a model that learned only the domain's formats (a bank's sort codes, a
    hospital's date style) has no reason to prefer the true one. Items without such a candidate are left out;
    at most `limit` trials, sampled with `seed`."""
    pool: dict[tuple[str, str], set[str]] = {}
    for text in nonmembers:
        for f in find_personal_data(text):
            pool.setdefault((f.category, value_shape(f.value)), set()).add(f.value)
    rng = random.Random(seed)
    trials = []
    for text in members:
        for f in find_personal_data(text):
            others = sorted(pool.get((f.category, value_shape(f.value)), set()) - {f.value})
            prompt = f.context(text, context_chars)
            if prompt is not None and others:
                trials.append({"category": f.category, "value": f.value, "prompt": prompt,
                               "candidates": rng.sample(others, min(candidates, len(others)))})
    return trials if len(trials) <= limit else rng.sample(trials, limit)
