"""The built-in corpus's registry: record types, the domain table, and building or writing a domain.

Each domain module (public, code, clinical, finance, support) registers one DomainSpec when it is imported;
`flexaudit.data.builtin` imports them in that order, so `domain_names()` lists public first.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Sequence

from flexaudit.data.documents import Document
from flexaudit.errors import InputError
from flexaudit.fsutil import atomic_write_text

SYNTHETIC_DEFAULT_SIZE = 2000

PII_CATEGORIES = (
    "name",
    "date_of_birth",
    "mrn",
    "phone",
    "email",
    "address",
    "iban",
    "card_number",
    "account_number",
    "order_number",
)


@dataclass(frozen=True)
class PiiItem:
    """One piece of personal data about the record's subject, exactly as it is written in the text."""

    category: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"category": self.category, "value": self.value}


@dataclass(frozen=True)
class BuiltinRecord:
    id: str
    text: str
    subject: str | None = None  # the data subject; None for the public and code domains
    pii: tuple[PiiItem, ...] = ()

    def document(self) -> Document:
        return Document(id=self.id, text=self.text, subject=self.subject)

    def as_json(self) -> dict:
        row: dict = {"id": self.id, "text": self.text}
        if self.subject is not None:
            row["subject"] = self.subject
        row["pii"] = [item.as_dict() for item in self.pii]
        return row


Builder = Callable[[int | None, int], list[BuiltinRecord]]  # (n_documents or None for all, seed)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    description: str
    sensitive: bool  # holds personal data: the domains the audits are about
    builder: Builder


def domain_names() -> list[str]:
    """All built-in domains, public first, then code, then the sensitive ones."""
    return list(DOMAINS)


def build_domain(name: str, *, n_documents: int | None = None, seed: int = 0) -> list[BuiltinRecord]:
    """Build one domain. n_documents=None gives its full size (synthetic domains: 2000 records);
    a smaller count gives a prefix of that build, and a count beyond what a stdlib domain holds
    gives all of it."""
    spec = _spec(name)
    if n_documents is not None and (
        isinstance(n_documents, bool) or not isinstance(n_documents, int) or n_documents < 1
    ):
        raise InputError(f"n_documents must be a positive whole number, got {n_documents!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be a whole number, got {seed!r}")
    return spec.builder(n_documents, seed)


def write_domain(name: str, path: str | os.PathLike, *, n_documents: int | None = None, seed: int = 0) -> int:
    """Write a domain as JSONL (id, text, subject when there is one, pii) atomically; returns the count.

    Load it back with `load_documents(path, subject_field="subject")` for the synthetic domains.
    """
    records = build_domain(name, n_documents=n_documents, seed=seed)
    lines = [json.dumps(r.as_json(), ensure_ascii=False) for r in records]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(records)


def _spec(name: str) -> DomainSpec:
    try:
        return DOMAINS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown built-in domain {name!r}: choose one of {', '.join(DOMAINS)}") from None


def seeded_order(records: Sequence[BuiltinRecord], n_documents: int | None, seed: int) -> list[BuiltinRecord]:
    """A seeded order keyed on ids, so that any prefix is a spread-out sample of the whole domain."""
    def key(r: BuiltinRecord) -> str:
        return hashlib.sha256(f"{seed}:{r.id}".encode("utf-8")).hexdigest()

    ordered = sorted(records, key=key)
    return ordered if n_documents is None else ordered[:n_documents]


def derived_seed(domain: str, seed: int) -> int:
    # Separate streams per domain: clinical and finance built with the same seed share nothing.
    return int.from_bytes(hashlib.sha256(f"flexaudit-builtin:{domain}:{seed}".encode()).digest()[:8], "big")


DOMAINS: dict[str, DomainSpec] = {}  # filled by the domain modules as flexaudit.data.builtin imports them


def register(spec: DomainSpec) -> DomainSpec:
    """Add a domain. The table stays in the order `domain_names` promises, whatever the import order: public
    first, then the other non-sensitive domains, then the sensitive ones, each group by name."""
    if spec.name in DOMAINS:
        raise ValueError(f"built-in domain {spec.name!r} is registered twice")
    ordered = sorted([*DOMAINS.values(), spec], key=lambda d: (d.sensitive, d.name != "public", d.name))
    DOMAINS.clear()
    DOMAINS.update((d.name, d) for d in ordered)
    return spec
