"""The built-in corpus: demo and test data made on the spot, with nothing downloaded.

Every domain is built from what any Python install and flexaudit's declared dependencies already hold,
so `flexaudit demo` and the tests run offline and on any machine:

public
    Prose from the standard library's documentation: the language-reference topics that ship in
    `pydoc_data.topics`, cut into paragraph-sized documents, plus the prose docstrings of part of the
    standard library (read from source files with `ast`; no module is ever imported). This is the
    public anchor model's pretraining data, so it takes everything it can (about 1.6 MB on 3.11).
code
    Standard-library source code in function- or class-level chunks, copied verbatim (comments and
    docstrings included). Modules are split between `public` and `code` by a fixed hash of their
    top-level name, so the two domains never draw on the same module, and any public paragraph that
    shares a line with the code domain (a docstring copied between modules) is dropped.
clinical, finance, support
    Synthetic sensitive records written by a seeded `faker` generator: clinical notes, bank records
    and customer-support tickets. Each record belongs to one data subject (`patient-000123`), each
    subject has several records, and each record lists the personal-data items it contains, which
    are the secrets that extraction and membership attacks look for.

Determinism: a domain is a pure function of (name, n_documents, seed) for a given Python version
(the stdlib domains follow the installed standard library) and a given faker version (the
synthetic ones follow its name and address lists). `n_documents=k` returns the first k documents of
the full build, so a small build is a prefix of a larger one. The public and code domains hold a
fixed set of documents; the seed only orders them.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import hashlib
import itertools
import json
import os
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

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


# --------------------------------------------------------------------------------------------------
# Public types and API
# --------------------------------------------------------------------------------------------------


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


def _ordered(records: Sequence[BuiltinRecord], n_documents: int | None, seed: int) -> list[BuiltinRecord]:
    """A seeded order keyed on ids, so that any prefix is a spread-out sample of the whole domain."""
    def key(r: BuiltinRecord) -> str:
        return hashlib.sha256(f"{seed}:{r.id}".encode("utf-8")).hexdigest()

    ordered = sorted(records, key=key)
    return ordered if n_documents is None else ordered[:n_documents]


def _derived_seed(domain: str, seed: int) -> int:
    # Separate streams per domain: clinical and finance built with the same seed share nothing.
    return int.from_bytes(hashlib.sha256(f"flexaudit-builtin:{domain}:{seed}".encode()).digest()[:8], "big")


# --------------------------------------------------------------------------------------------------
# Standard-library domains: public (documentation prose) and code
# --------------------------------------------------------------------------------------------------

PUBLIC_MIN, PUBLIC_MAX = 300, 1500  # characters per public document
CODE_MIN, CODE_MAX = 300, 2000  # characters per code chunk
_SLACK = 1.25  # a short leftover may be folded into a neighbour up to this factor over the maximum
_MIN_KEEP = 120  # fragments shorter than this (a two-line __main__.py) carry nothing worth training on
_SHARED_LINE = 40  # lines at least this long that both domains hold count as overlap

# Machine-specific (_sysconfigdata), generated data (pydoc_data is the public domain's other source,
# encodings are code-page tables) or jokes; never part of either domain.
_SKIP_TOP = {"site-packages", "lib-dynload", "__pycache__", "pydoc_data", "encodings", "ensurepip",
             "__phello__", "this", "antigravity"}
_SKIP_DIR = {"test", "tests", "idle_test", "__pycache__"}


def _stdlib_root() -> Path:
    return Path(sysconfig.get_path("stdlib"))


def _is_code_module(top: str) -> bool:
    """Which domain a top-level module or package feeds: a third to code, the rest to public prose.

    A hash of the name, not a list, so the rule holds for any Python version's standard library.
    """
    return int(hashlib.sha256(top.encode("utf-8")).hexdigest(), 16) % 3 == 0


def _skip_dir(parts: tuple[str, ...]) -> bool:
    """`parts`: a folder's path relative to the stdlib root."""
    return parts[0] in _SKIP_TOP or parts[0].startswith("config-") or bool(_SKIP_DIR.intersection(parts))


def _skip_file(parts: tuple[str, ...]) -> bool:
    name = parts[-1]
    top_level = len(parts) == 1 and (name.removesuffix(".py") in _SKIP_TOP or name.startswith("_sysconfigdata"))
    return top_level or name.startswith("test_") or not name.endswith(".py")


def _stdlib_sources() -> list[tuple[str, str]]:
    """(path relative to the stdlib root, source) for every usable module, in sorted path order."""
    root = _stdlib_root()
    found = []
    for folder, subdirs, files in os.walk(root):
        # Pruned while walking: the test suite alone is most of the files in the standard library.
        here = Path(folder).relative_to(root).parts
        subdirs[:] = [d for d in subdirs if not _skip_dir(here + (d,))]
        found.extend(here + (f,) for f in files if not _skip_file(here + (f,)))
    sources = []
    for parts in sorted(found):
        try:
            sources.append(("/".join(parts), root.joinpath(*parts).read_bytes().decode("utf-8").replace("\r\n", "\n")))
        except (OSError, UnicodeDecodeError):
            continue
    return sources


def _module_name(rel: str) -> str:
    name = rel.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


@functools.lru_cache(maxsize=1)
def _stdlib_split() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """((rel, source) of the public modules, (rel, source) of the code modules)."""
    public, code = [], []
    for rel, source in _stdlib_sources():
        (code if _is_code_module(rel.split("/")[0].removesuffix(".py")) else public).append((rel, source))
    return tuple(public), tuple(code)


def _parsed(modules: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str, ast.Module]]:
    for rel, source in modules:
        try:
            yield rel, source, ast.parse(source)
        except (SyntaxError, ValueError):  # a file written for another Python version
            continue


# Parsing is most of the cost (about a second for public, half that for code, on one idle core),
# so each stdlib domain is built at most once per process and only when asked for.
@functools.lru_cache(maxsize=1)
def _code_corpus() -> tuple[BuiltinRecord, ...]:
    return tuple(_dedupe(r for rel, source, tree in _parsed(_stdlib_split()[1])
                         for r in _code_records(rel, source, tree)))


@functools.lru_cache(maxsize=1)
def _public_corpus() -> tuple[BuiltinRecord, ...]:
    # The code modules' lines, read from the raw sources: the code chunks tile those files, so this
    # is the same set without parsing them.
    code_lines = {line for _, source in _stdlib_split()[1] for line in _long_lines(source)}
    return tuple(_dedupe(_topic_records(code_lines) + [
        r for rel, _, tree in _parsed(_stdlib_split()[0])
        for r in _docstring_records(_module_name(rel), tree, code_lines)
    ]))


def _dedupe(records: Iterable[BuiltinRecord]) -> list[BuiltinRecord]:
    # Identical texts (two empty-ish __init__ files, a docstring copied verbatim) would put one text
    # on both sides of a member/holdout split under two ids.
    seen: set[str] = set()
    kept = []
    for r in records:
        if r.text not in seen:
            seen.add(r.text)
            kept.append(r)
    return kept


def _long_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        line = line.strip()
        if len(line) >= _SHARED_LINE:
            yield line


def _shares_line(text: str, code_lines: set[str]) -> bool:
    return any(line in code_lines for line in _long_lines(text))


def _pack(sizes: Sequence[int], low: int, high: int, sep: int) -> list[tuple[int, int]]:
    """Group consecutive pieces into [i, j) ranges of at most `high` characters (joined with `sep`
    characters between pieces), then fold groups shorter than `low` into a neighbour when the pair
    stays within the slack. A single piece above `high` is a group of its own."""
    groups: list[list[int]] = []  # [start, end, size]
    for i, size in enumerate(sizes):
        if groups and groups[-1][2] + sep + size <= high:
            groups[-1][1] = i + 1
            groups[-1][2] += sep + size
        else:
            groups.append([i, i + 1, size])
    merged: list[list[int]] = []
    for g in groups:
        if merged and min(merged[-1][2], g[2]) < low and merged[-1][2] + sep + g[2] <= high * _SLACK:
            merged[-1][1] = g[1]
            merged[-1][2] += sep + g[2]
        else:
            merged.append(g)
    return [(start, end) for start, end, _ in merged]


def _split_lines(text: str, high: int) -> list[str]:
    """Cut an oversized paragraph at line ends into pieces of at most `high` characters."""
    pieces, current = [], ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > high:
            pieces.append(current.rstrip("\n"))
            current = ""
        current += line
    if current.strip():
        pieces.append(current.rstrip("\n"))
    return pieces


def _paragraphs(text: str, high: int) -> list[str]:
    pieces = []
    for para in re.split(r"\n[ \t]*\n", text):
        para = para.strip("\n").rstrip()
        if para.strip():
            pieces.extend(_split_lines(para, high) if len(para) > high else [para])
    return pieces


def _packed_texts(pieces: Sequence[str], low: int, high: int) -> list[str]:
    groups = _pack([len(p) for p in pieces], low, high, sep=2)
    texts = ["\n\n".join(pieces[a:b]) for a, b in groups]
    return [t for t in texts if len(t) >= _MIN_KEEP]


# --- public: pydoc topics and docstrings ----------------------------------------------------------


def _topic_records(code_lines: set[str]) -> list[BuiltinRecord]:
    try:
        from pydoc_data.topics import topics  # plain data shipped with CPython, safe to import
    except ImportError:  # some distributions package the docs separately
        return []
    records = []
    for topic in sorted(topics):
        pieces = [p for p in _paragraphs(topics[topic], PUBLIC_MAX) if not _shares_line(p, code_lines)]
        for k, text in enumerate(_packed_texts(pieces, PUBLIC_MIN, PUBLIC_MAX)):
            records.append(BuiltinRecord(id=f"public/topic/{topic}/{k}", text=text))
    return records


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


_BLOCKS = (ast.If, ast.Try, ast.With)  # module- or class-level blocks that may hold definitions


def _docstrings(node: ast.AST, qualname: str) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) in source order for a module, its classes and functions
    and their methods. Function bodies are not searched: helpers nested there are rarely documented
    and walking every statement would double the parse cost."""
    doc = ast.get_docstring(node, clean=True) if isinstance(node, _DOC_NODES) else None
    if doc:
        yield qualname, doc
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return
    for child in _child_stmts(node) if isinstance(node, _BLOCKS) else node.body:
        if isinstance(child, _DOC_NODES):
            yield from _docstrings(child, f"{qualname}.{child.name}")
        elif isinstance(child, _BLOCKS):  # `if sys.platform == ...:` and `try: import` guards
            yield from _docstrings(child, qualname)


def _is_prose(doc: str) -> bool:
    """A docstring worth reading as documentation: several words, mostly letters, few doctest lines."""
    if len(doc) < 60 or len(re.findall(r"[A-Za-z]{2,}", doc)) < 8:
        return False
    lines = [line.lstrip() for line in doc.splitlines() if line.strip()]
    examples = sum(line.startswith((">>>", "...", "$ ")) for line in lines)
    letters = len(re.findall(r"[^\W\d_]", doc))
    visible = len(re.findall(r"\S", doc))
    return examples <= 0.3 * len(lines) and letters >= 0.6 * visible


def _docstring_records(module: str, tree: ast.Module, code_lines: set[str]) -> list[BuiltinRecord]:
    pieces: list[str] = []
    seen: set[str] = set()  # overriding methods often repeat their base class's docstring
    for qualname, doc in _docstrings(tree, module):
        if doc in seen or not _is_prose(doc) or _shares_line(doc, code_lines):
            continue
        seen.add(doc)
        if len(qualname) + 1 + len(doc) <= PUBLIC_MAX:  # keep a docstring whole whenever it fits
            pieces.append(f"{qualname}\n{doc}")
            continue
        paras = _paragraphs(doc, PUBLIC_MAX - len(qualname) - 1)
        pieces.append(f"{qualname}\n{paras[0]}")
        pieces.extend(paras[1:])
    return [BuiltinRecord(id=f"public/docstring/{module}/{k}", text=text)
            for k, text in enumerate(_packed_texts(pieces, PUBLIC_MIN, PUBLIC_MAX))]


# --- code: verbatim source chunks -----------------------------------------------------------------


def _source_lines(source: str) -> list[str]:
    # str.splitlines would also break at form feeds and other separators ast does not count as lines.
    lines = [line + "\n" for line in source.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _stmt_start(node: ast.stmt) -> int:
    """0-based first line of a statement, decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1


def _cut_before(node: ast.stmt, floor: int, lines: list[str]) -> int:
    """Where a chunk holding `node` starts: comment lines just above it go with it, blank lines stay
    with the previous chunk."""
    start = _stmt_start(node)
    while start - 1 >= floor and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return start


def _child_stmts(node: ast.stmt) -> list[ast.stmt]:
    kids = [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)]
    for holder in getattr(node, "handlers", []) + getattr(node, "cases", []):
        kids.extend(holder.body)
    return sorted(kids, key=_stmt_start)


def _span_size(lines: list[str], a: int, b: int) -> int:
    return sum(len(line) for line in lines[a:b])


def _cover(stmts: list[ast.stmt], first: int, last: int, lines: list[str]) -> list[tuple[int, int]]:
    """Line spans that tile [first, last), cut before each statement; an oversized statement is cut
    again inside its body (a class into its methods), or at line ends when it has no body to cut."""
    cuts = [first]
    for prev, node in zip(stmts, stmts[1:]):
        cut = _cut_before(node, prev.end_lineno, lines)
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(last)
    spans: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(cuts):
        if _span_size(lines, a, b) <= CODE_MAX:
            spans.append((a, b))
            continue
        inside = [n for n in stmts if a <= _stmt_start(n) < b]
        children = _child_stmts(inside[0]) if len(inside) == 1 else []
        if len(children) >= 2:
            spans.extend(_cover(children, a, b, lines))
        else:
            spans.extend(_line_spans(lines, a, b))
    return spans


def _line_spans(lines: list[str], a: int, b: int) -> list[tuple[int, int]]:
    spans, start, size = [], a, 0
    for i in range(a, b):
        if i > start and size + len(lines[i]) > CODE_MAX:
            spans.append((start, i))
            start, size = i, 0
        size += len(lines[i])
    spans.append((start, b))
    return spans


def _code_records(rel: str, source: str, tree: ast.Module) -> list[BuiltinRecord]:
    lines = _source_lines(source)
    if not lines:
        return []
    spans = _cover(tree.body, 0, len(lines), lines) if tree.body else [(0, len(lines))]
    groups = _pack([_span_size(lines, a, b) for a, b in spans], CODE_MIN, CODE_MAX, sep=0)
    records = []
    for i, j in groups:
        a, b = spans[i][0], spans[j - 1][1]
        text = "".join(lines[a:b])
        if len(text.strip()) >= _MIN_KEEP:
            records.append(BuiltinRecord(id=f"code/{rel}:{a + 1}-{b}", text=text))
    return records


def _require(records: Sequence[BuiltinRecord], what: str) -> Sequence[BuiltinRecord]:
    if not records:
        raise InputError(
            f"the {what} domain is empty: this Python has no standard-library sources at {_stdlib_root()};"
            " install the full standard library or train on your own data"
        )
    return records


def _build_public(n_documents: int | None, seed: int) -> list[BuiltinRecord]:
    return _ordered(_require(_public_corpus(), "public"), n_documents, seed)


def _build_code(n_documents: int | None, seed: int) -> list[BuiltinRecord]:
    return _ordered(_require(_code_corpus(), "code"), n_documents, seed)


# --------------------------------------------------------------------------------------------------
# Synthetic sensitive domains
# --------------------------------------------------------------------------------------------------


class _Writer:
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
class _Person:
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


def _person(fake, rng: random.Random, *, us: bool) -> _Person:
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
        return _Person(first, last, sex, dob, fake.phone_number(), f"{user}@{fake.free_email_domain()}",
                       street, fake.city(), fake.state_abbr(include_territories=False), fake.zipcode())
    return _Person(first, last, sex, dob, fake.phone_number(), f"{user}@{fake.free_email_domain()}",
                   street, fake.city(), "", fake.postcode())


def _fresh_number(rng: random.Random, digits: int, used: set[str]) -> str:
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


def _card_number(rng: random.Random) -> str:
    prefix = rng.choice(["4", "4", "51", "52", "53", "54", "55"])  # Visa or Mastercard ranges
    body = prefix + "".join(rng.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + _luhn_check_digit(body)


def _iban_gb(bank_code: str, sort_code: str, account: str) -> str:
    bban = bank_code + sort_code + account
    # ISO 13616: move the country code and "00" to the end, letters to numbers, check = 98 - mod 97.
    numeric = "".join(str(int(c, 36)) for c in bban + "GB00")
    return f"GB{98 - int(numeric) % 97:02d}{bban}"


def _iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    numeric = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(numeric) % 97 == 1


def _grouped(digits: str, size: int = 4) -> str:
    return " ".join(digits[i:i + size] for i in range(0, len(digits), size))


def _date_between(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def _fmt_date(rng: random.Random, day: dt.date, *, us: bool) -> str:
    styles = ["%m/%d/%Y", "%Y-%m-%d", "%B %d, %Y"] if us else ["%d/%m/%Y", "%d %B %Y", "%Y-%m-%d"]
    return day.strftime(rng.choice(styles))


def _money(amount: float, symbol: str) -> str:
    return f"{symbol}{amount:,.2f}"


def _staff(fake, rng: random.Random, count: int, suffixes: Sequence[str]) -> list[str]:
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
    """Subjects are generated one after another from a single stream, 1 to 6 records each, until
    `n_documents` records exist; a shorter build is therefore a prefix of a longer one."""
    target = SYNTHETIC_DEFAULT_SIZE if n_documents is None else n_documents
    stream = _derived_seed(domain, seed)
    fake, rng = _faker(locale, stream), random.Random(stream)
    world = setup(fake, rng)
    records: list[BuiltinRecord] = []
    for index in itertools.count():
        subject = f"{subject_prefix}-{index:06d}"
        for writer in subject_records(fake, rng, world):
            records.append(writer.record(f"{domain}-{len(records):06d}", subject))
            if len(records) == target:
                return records
    raise AssertionError("unreachable")


def _record_count(rng: random.Random) -> int:
    # Most people have a couple of records, a few have many: 1-6, mean about 3.
    return rng.choices([1, 2, 3, 4, 5, 6], weights=[14, 22, 22, 18, 14, 10])[0]


# --- clinical -------------------------------------------------------------------------------------

# (ICD-10-CM code, description, [medication, dose and frequency options], plan phrases)
_CHRONIC = [
    ("E11.9", "Type 2 diabetes mellitus without complications",
     ["metformin 500 mg twice daily", "metformin 1000 mg twice daily", "empagliflozin 10 mg daily"],
     ["Recheck HbA1c in 3 months.", "Reinforced carbohydrate counting and foot care.",
      "Annual retinal exam ordered."]),
    ("I10", "Essential (primary) hypertension",
     ["lisinopril 10 mg daily", "amlodipine 5 mg daily", "losartan 50 mg daily",
      "hydrochlorothiazide 25 mg daily"],
     ["Home blood pressure log for two weeks.", "Reduce dietary sodium.", "BMP in 2 weeks after dose change."]),
    ("E78.5", "Hyperlipidemia, unspecified",
     ["atorvastatin 20 mg nightly", "atorvastatin 40 mg nightly", "rosuvastatin 10 mg daily"],
     ["Fasting lipid panel before next visit.", "Discussed Mediterranean-style diet."]),
    ("J45.909", "Unspecified asthma, uncomplicated",
     ["albuterol HFA 90 mcg 2 puffs every 4-6 hours as needed", "fluticasone 110 mcg 2 puffs twice daily"],
     ["Reviewed inhaler technique with spacer.", "Asthma action plan updated."]),
    ("F32.9", "Major depressive disorder, single episode, unspecified",
     ["sertraline 50 mg daily", "escitalopram 10 mg daily", "bupropion XL 150 mg daily"],
     ["PHQ-9 repeated today; referral to behavioral health.", "Safety plan reviewed; denies SI."]),
    ("F41.1", "Generalized anxiety disorder",
     ["buspirone 10 mg twice daily", "sertraline 25 mg daily"],
     ["GAD-7 score tracked.", "Encouraged CBT; provided list of therapists."]),
    ("E03.9", "Hypothyroidism, unspecified",
     ["levothyroxine 50 mcg daily", "levothyroxine 75 mcg daily", "levothyroxine 100 mcg daily"],
     ["TSH in 6 weeks.", "Take on an empty stomach, separate from calcium and iron."]),
    ("I48.91", "Unspecified atrial fibrillation",
     ["apixaban 5 mg twice daily", "metoprolol succinate 25 mg daily", "diltiazem ER 120 mg daily"],
     ["CHA2DS2-VASc reviewed; continue anticoagulation.", "Echocardiogram ordered."]),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified",
     ["tiotropium 18 mcg inhaled daily", "budesonide-formoterol 160/4.5 mcg 2 puffs twice daily"],
     ["Pulmonary rehab referral.", "Smoking cessation counselling, 5 minutes."]),
    ("M17.11", "Unilateral primary osteoarthritis, right knee",
     ["acetaminophen 650 mg every 6 hours as needed", "meloxicam 7.5 mg daily", "diclofenac 1% gel four times daily"],
     ["Physical therapy referral.", "Discussed intra-articular steroid injection."]),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis",
     ["omeprazole 20 mg daily", "pantoprazole 40 mg daily", "famotidine 20 mg at bedtime"],
     ["Avoid late meals; elevate head of bed.", "Trial off PPI in 8 weeks."]),
    ("N18.30", "Chronic kidney disease, stage 3 unspecified",
     ["dapagliflozin 10 mg daily", "sodium bicarbonate 650 mg twice daily"],
     ["eGFR and urine albumin-creatinine ratio in 3 months.", "Nephrology referral placed."]),
    ("G43.909", "Migraine, unspecified, not intractable, without status migrainosus",
     ["sumatriptan 50 mg at onset, may repeat once in 2 hours", "propranolol 40 mg twice daily"],
     ["Headache diary.", "Limit acute medication to 2 days per week."]),
    ("M54.50", "Low back pain, unspecified",
     ["cyclobenzaprine 5 mg at bedtime as needed", "ibuprofen 400 mg three times daily with food"],
     ["Core strengthening exercises.", "Return if numbness, weakness or bladder changes."]),
    ("G47.33", "Obstructive sleep apnea (adult) (pediatric)",
     ["CPAP 10 cm H2O nightly"],
     ["Download CPAP compliance data.", "Sleep medicine follow-up."]),
    ("D50.9", "Iron deficiency anemia, unspecified",
     ["ferrous sulfate 325 mg every other day"],
     ["CBC and ferritin in 8 weeks.", "GI referral for evaluation of blood loss."]),
]

# (presenting complaint, ICD-10-CM code, description, finding, disposition)
_ACUTE = [
    ("chest pain", "R07.9", "Chest pain, unspecified",
     "ECG normal sinus rhythm; troponin negative x2", "discharged home with cardiology follow-up"),
    ("shortness of breath", "R06.02", "Shortness of breath",
     "chest X-ray without infiltrate; SpO2 improved on room air", "discharged home"),
    ("fall onto an outstretched hand", "S52.501A",
     "Unspecified fracture of the lower end of right radius, initial encounter",
     "X-ray shows distal radius fracture, minimally displaced", "splinted; orthopedics in 1 week"),
    ("cough and fever", "J18.9", "Pneumonia, unspecified organism",
     "right lower lobe consolidation on chest X-ray", "started amoxicillin-clavulanate"),
    ("abdominal pain", "R10.31", "Right lower quadrant pain",
     "CT abdomen without appendicitis", "discharged with return precautions"),
    ("headache", "R51.9", "Headache, unspecified",
     "normal neurological exam", "treated with IV fluids and metoclopramide"),
    ("burning on urination", "N39.0", "Urinary tract infection, site not specified",
     "urinalysis positive for nitrites and leukocyte esterase", "nitrofurantoin 100 mg twice daily for 5 days"),
    ("dizziness", "R42", "Dizziness and giddiness",
     "orthostatic vital signs positive", "oral rehydration; medication review"),
    ("ankle injury", "S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter",
     "Ottawa ankle rules negative", "RICE, ankle brace, weight bearing as tolerated"),
    ("hand laceration", "S61.411A", "Laceration without foreign body of right hand, initial encounter",
     "3 cm laceration, tendons intact", "repaired with 5 sutures; Tdap updated"),
    ("wheezing", "J45.901", "Unspecified asthma with (acute) exacerbation",
     "diffuse expiratory wheeze, peak flow 60% predicted", "nebulised albuterol and oral prednisone"),
    ("leg redness and swelling", "L03.115", "Cellulitis of right lower limb",
     "warm erythematous area over the shin, no abscess", "cephalexin 500 mg four times daily for 7 days"),
]

_CLINIC_COMPLAINTS = [
    "routine follow-up of chronic conditions", "medication refill", "fatigue for several weeks",
    "poor sleep", "knee pain when climbing stairs", "intermittent heartburn", "annual wellness visit",
    "review of recent lab results", "elevated home blood pressure readings", "low mood",
]

_ALLERGIES = ["NKDA", "NKDA", "NKDA", "penicillin (rash)", "sulfa drugs (hives)", "codeine (nausea)",
              "latex", "shellfish", "lisinopril (angioedema)"]


def _clinical_setup(fake, rng: random.Random) -> dict:
    clinicians = _staff(fake, rng, 14, [", MD", ", MD", ", DO", ", NP", ", PA-C"])
    clinics = [f"{fake.city()} {kind}" for kind in
               ("Family Medicine", "Internal Medicine Associates", "Community Health Center", "Primary Care")]
    hospital = f"{fake.last_name()} Memorial Hospital"
    return {"clinicians": clinicians, "clinics": clinics, "hospital": hospital,
            "mrns": set()}


def _vitals(rng: random.Random, febrile: bool = False) -> dict[str, str]:
    temp = round(rng.uniform(38.0, 39.4) if febrile else rng.uniform(36.3, 37.3), 1)
    return {
        "BP": f"{rng.randint(104, 168)}/{rng.randint(62, 98)} mmHg",
        "HR": f"{rng.randint(56, 112)} bpm",
        "Temp": f"{temp} °C",
        "RR": f"{rng.randint(12, 22)}/min",
        "SpO2": f"{rng.randint(92, 100)}%",
        "Wt": f"{rng.uniform(48, 128):.1f} kg",
    }


def _vitals_text(rng: random.Random, vitals: dict[str, str]) -> str:
    if rng.random() < 0.5:
        return ", ".join(f"{k} {v}" for k, v in vitals.items())
    return "; ".join(f"{k}: {v}" for k, v in vitals.items())


def _age(dob: dt.date, on: dt.date) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def _clinical_subject(fake, rng: random.Random, world: dict) -> list[_Writer]:
    person = _person(fake, rng, us=True)
    mrn = _fresh_number(rng, 8, world["mrns"])
    conditions = rng.sample(_CHRONIC, rng.randint(1, 3))
    meds = [rng.choice(c[2]) for c in conditions]
    patient = {"person": person, "mrn": mrn, "conditions": conditions, "meds": meds,
               "allergy": rng.choice(_ALLERGIES), "pcp": rng.choice(world["clinicians"]),
               "clinic": rng.choice(world["clinics"])}
    visits = sorted(_date_between(rng, dt.date(2019, 1, 1), dt.date(2024, 12, 31)) for _ in range(_record_count(rng)))
    templates = [_progress_note, _progress_note, _ed_note, _discharge_summary, _phone_encounter, _referral_letter]
    return [rng.choice(templates)(rng, world, patient, day) for day in visits]


def _patient_header(w: _Writer, rng: random.Random, patient: dict, day: dt.date) -> None:
    p: _Person = patient["person"]
    dob = w.pii("date_of_birth", _fmt_date(rng, p.dob, us=True))
    name = w.pii("name", p.name if rng.random() < 0.6 else f"{p.last.upper()}, {p.first}")
    mrn = w.pii("mrn", patient["mrn"])
    style = rng.randrange(3)
    if style == 0:
        w.add(f"Patient: {name}    DOB: {dob}    MRN: {mrn}")
    elif style == 1:
        w.add(f"Name: {name}", f"Date of birth: {dob} ({_age(p.dob, day)} y/o {p.sex})", f"MRN {mrn}")
    else:
        w.add(f"{name} | MRN #{mrn} | D.O.B. {dob} | Sex: {p.sex}")


def _progress_note(rng: random.Random, world: dict, patient: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), patient["person"]
    w.add(rng.choice(["OUTPATIENT PROGRESS NOTE", "Clinic Visit Note", "PROGRESS NOTE - PRIMARY CARE"]),
          f"{patient['clinic']} - {_fmt_date(rng, day, us=True)}")
    _patient_header(w, rng, patient, day)
    complaint = rng.choice(_CLINIC_COMPLAINTS)
    opener = rng.choice([f"{_age(p.dob, day)}-year-old {'woman' if p.sex == 'F' else 'man'} seen for {complaint}.",
                         f"Pt presents for {complaint}.", f"Here today for {complaint}."])
    history = rng.choice(["Reports good adherence to medications.", "Missed several doses last month.",
                          "No new complaints.", "Notes more stress at work.", "Walking 20 minutes most days."])
    w.add("", f"S: {opener} {history} Allergies: {patient['allergy']}.")
    w.add(f"O: {_vitals_text(rng, _vitals(rng))}")
    w.add("A/P:")
    for k, (code, desc, _, plans) in enumerate(patient["conditions"]):
        w.add(f"{k + 1}. {desc} ({code}) - {rng.choice(['stable', 'improving', 'not at goal', 'well controlled'])}."
              f" Continue {patient['meds'][k]}. {rng.choice(plans)}")
    if rng.random() < 0.4:
        w.add(f"Contact: {w.pii('phone', p.phone)}")
    w.add(f"Return in {rng.choice(['4 weeks', '3 months', '6 months', '1 year'])}.",
          f"Electronically signed by {patient['pcp']}")
    return w


def _ed_note(rng: random.Random, world: dict, patient: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), patient["person"]
    complaint, code, desc, finding, dispo = rng.choice(_ACUTE)
    febrile = code in ("J18.9", "L03.115")
    w.add(f"{world['hospital']} - Emergency Department", f"Date of service: {_fmt_date(rng, day, us=True)}")
    _patient_header(w, rng, patient, day)
    w.add(f"Address: {w.pii('address', p.address)}", f"Phone: {w.pii('phone', p.phone)}", "")
    onset = rng.choice(["since this morning", "for 2 days", "for about a week", "after dinner last night"])
    pmh = ", ".join(c[1].split(",")[0] for c in patient["conditions"])
    w.add(f"HPI: {_age(p.dob, day)} y/o {p.sex} with PMH of {pmh} presenting with {complaint} {onset}.")
    w.add(f"Vitals: {_vitals_text(rng, _vitals(rng, febrile))}")
    w.add(f"Workup: {finding}.")
    w.add(f"Impression: {desc} [{code}].")
    w.add(f"Disposition: {dispo}. Home meds unchanged: {'; '.join(patient['meds'])}.")
    w.add(f"Attending: {rng.choice(world['clinicians'])}")
    return w


def _discharge_summary(rng: random.Random, world: dict, patient: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), patient["person"]
    complaint, code, desc, finding, dispo = rng.choice(_ACUTE)
    out = day + dt.timedelta(days=rng.randint(1, 6))
    w.add("DISCHARGE SUMMARY", world["hospital"])
    _patient_header(w, rng, patient, day)
    w.add(f"Admitted: {_fmt_date(rng, day, us=True)}   Discharged: {_fmt_date(rng, out, us=True)}", "")
    w.add(f"Principal diagnosis: {code} {desc}")
    w.add("Secondary: " + "; ".join(f"{c[0]} {c[1]}" for c in patient["conditions"]))
    w.add(f"Hospital course: admitted with {complaint}; {finding}. "
          + rng.choice(["Improved with supportive care.", "Course uncomplicated.",
                        "Required one night of telemetry monitoring."]))
    w.add("Discharge medications: " + "; ".join(patient["meds"]) + ".")
    w.add(f"Follow-up with {patient['pcp']} within {rng.choice(['7 days', '2 weeks'])}."
          f" Patient can be reached at {w.pii('phone', p.phone)}.")
    if rng.random() < 0.5:
        w.add(f"Discharge instructions sent to {w.pii('email', p.email)}.")
    return w


def _phone_encounter(rng: random.Random, world: dict, patient: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), patient["person"]
    k = rng.randrange(len(patient["conditions"]))
    code, desc, _, plans = patient["conditions"][k]
    drug = re.split(r"\s+(?=\d)", patient["meds"][k])[0]  # "metformin 500 mg twice daily" -> "metformin"
    reason = rng.choice([f"requesting a refill of {drug}",
                         f"asking about side effects of {drug}",
                         "asking for lab results", "reporting a missed appointment",
                         f"with questions about {desc.lower()}"])
    name = w.pii("name", p.name)
    w.add(f"TELEPHONE ENCOUNTER {_fmt_date(rng, day, us=True)}")
    w.add(f"Caller: {name} (self), MRN {w.pii('mrn', patient['mrn'])}, callback {w.pii('phone', p.phone)}.")
    w.add(f"{p.first} called {reason}. Identity verified with date of birth "
          f"{w.pii('date_of_birth', _fmt_date(rng, p.dob, us=True))}.")
    w.add(f"Relevant problem: {desc} ({code}). {rng.choice(plans)}")
    w.add(rng.choice(["Advised to keep the scheduled appointment.", "Message routed to the covering provider.",
                      "Prescription sent to the pharmacy on file.", "Patient verbalized understanding."]))
    w.add(f"- {rng.choice(world['clinicians'])}")
    return w


def _referral_letter(rng: random.Random, world: dict, patient: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), patient["person"]
    code, desc, _, _ = rng.choice(patient["conditions"])
    specialist = rng.choice([c for c in world["clinicians"] if c != patient["pcp"]])
    w.add(_fmt_date(rng, day, us=True), "", f"Dear Dr. {specialist.split(',')[0].split()[-1]},", "")
    w.add(f"Thank you for seeing {p.title}. {w.pii('name', p.name)}, born "
          f"{w.pii('date_of_birth', _fmt_date(rng, p.dob, us=True))} (MRN {w.pii('mrn', patient['mrn'])}), "
          f"whom I am referring for further evaluation of {desc.lower()} ({code}).")
    w.add(f"Current medications are {', '.join(patient['meds'])}. Allergies: {patient['allergy']}. "
          + rng.choice(["Symptoms have progressed despite treatment.", "I would value your opinion on next steps.",
                        "Recent labs are attached."]))
    w.add(f"{p.first} lives at {w.pii('address', p.address)} and prefers to be contacted by "
          + (f"phone at {w.pii('phone', p.phone)}." if rng.random() < 0.5 else f"email at {w.pii('email', p.email)}."))
    w.add("", "Sincerely,", patient["pcp"], patient["clinic"])
    return w


# --- finance --------------------------------------------------------------------------------------

_BANKS = [("Northgate Bank", "NGTB"), ("Harbour & Vale Building Society", "HAVL"),
          ("Cobalt Mutual", "CBLT"), ("Wexford Street Bank", "WXFD"), ("Lantern Savings", "LNTN")]
_DEBITS = ["COUNCIL TAX", "THAMES UTILITIES", "BRITELINE ENERGY", "FIBRENET BROADBAND", "MOBILEONE",
           "GYMFLEX MEMBERSHIP", "HOME INSURANCE PLC", "TV LICENCE"]
_SHOPS = ["Corner Shop", "Supermarket", "Petrol Station", "Pharmacy", "Cafe", "Bakery", "Bookshop",
          "Garden Centre", "Takeaway", "Hardware"]


def _finance_setup(fake, rng: random.Random) -> dict:
    merchants = [f"{fake.last_name().upper()} {rng.choice(_SHOPS).upper()}" for _ in range(30)]
    merchants += [fake.company().upper() for _ in range(20)]
    return {"agents": _staff(fake, rng, 12, [""]), "merchants": merchants,
            "employers": [fake.company() for _ in range(25)], "accounts": set()}


def _finance_subject(fake, rng: random.Random, world: dict) -> list[_Writer]:
    person = _person(fake, rng, us=False)
    bank, bank_code = rng.choice(_BANKS)
    sort_code = f"{rng.randint(10, 99)}{rng.randint(0, 99):02d}{rng.randint(0, 99):02d}"
    account = _fresh_number(rng, 8, world["accounts"])
    customer = {"person": person, "bank": bank, "sort": f"{sort_code[:2]}-{sort_code[2:4]}-{sort_code[4:]}",
                "account": account, "iban": _iban_gb(bank_code, sort_code, account), "card": _card_number(rng),
                "employer": rng.choice(world["employers"]), "salary": round(rng.uniform(1400, 5200), 2),
                "balance": round(rng.uniform(-300, 9000), 2)}
    days = sorted(_date_between(rng, dt.date(2020, 1, 1), dt.date(2024, 12, 31)) for _ in range(_record_count(rng)))
    # Transaction records, as a bank holds them: statements, payment confirmations, card logs, loan forms.
    templates = [_statement, _statement, _transfer_confirmation, _card_log, _loan_summary]
    return [rng.choice(templates)(rng, world, customer, day) for day in days]


def _gb_date(rng: random.Random, day: dt.date) -> str:
    return _fmt_date(rng, day, us=False)


def _iban_text(w: _Writer, rng: random.Random, iban: str) -> str:
    return w.pii("iban", _grouped(iban) if rng.random() < 0.6 else iban)


def _transaction(rng: random.Random, world: dict, customer: dict, day: dt.date) -> tuple[str, float]:
    kind = rng.random()
    if kind < 0.5:
        return f"CARD PAYMENT TO {rng.choice(world['merchants'])}", -round(rng.uniform(2, 140), 2)
    if kind < 0.7:
        return f"DIRECT DEBIT {rng.choice(_DEBITS)}", -round(rng.uniform(9, 190), 2)
    if kind < 0.8:
        return f"CASH WITHDRAWAL {rng.choice(['ATM', 'LINK ATM'])}", -float(rng.choice([10, 20, 40, 50, 100]))
    if kind < 0.9:
        return f"FASTER PAYMENT FROM {customer['employer'].upper()} SALARY", customer["salary"]
    return "TRANSFER FROM SAVINGS", float(rng.choice([50, 100, 250, 500]))


def _statement(rng: random.Random, world: dict, customer: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), customer["person"]
    w.add(f"{customer['bank']} - Current Account Statement")
    w.add(f"{p.title} {w.pii('name', p.name)}" if rng.random() < 0.5 else w.pii("name", p.name.upper()))
    w.add(w.pii("address", p.address))
    w.add(f"Sort code {customer['sort']}   Account {w.pii('account_number', customer['account'])}")
    if rng.random() < 0.6:
        w.add(f"IBAN {_iban_text(w, rng, customer['iban'])}")
    w.add(f"Statement period ending {_gb_date(rng, day)}", "")
    balance = customer["balance"]
    w.add(f"Opening balance {_money(balance, '£')}")
    start = day - dt.timedelta(days=30)
    for when in sorted(_date_between(rng, start, day) for _ in range(rng.randint(3, 7))):
        text, amount = _transaction(rng, world, customer, when)
        balance = round(balance + amount, 2)
        w.add(f"{when.strftime('%d %b')}  {text:<42} {amount:>+10,.2f}  {balance:>10,.2f}")
    customer["balance"] = balance
    w.add(f"Closing balance {_money(balance, '£')}")
    return w


def _card_log(rng: random.Random, world: dict, customer: dict, day: dt.date) -> _Writer:
    """The bank's own card-transaction log for one card: full card number, holder, contact, authorisations."""
    w, p = _Writer(), customer["person"]
    w.add(f"CARD TRANSACTION LOG - {customer['bank'].upper()} - {_gb_date(rng, day)}")
    w.add(f"PAN {w.pii('card_number', _grouped(customer['card']) if rng.random() < 0.5 else customer['card'])}"
          f"  HOLDER {w.pii('name', p.name.upper())}")
    w.add(f"TEL {w.pii('phone', p.phone)}  ACCOUNT {w.pii('account_number', customer['account'])}")
    start = day - dt.timedelta(days=7)
    for when in sorted(_date_between(rng, start, day) for _ in range(rng.randint(4, 9))):
        amount = rng.uniform(1.5, 180)
        status = rng.choices(["APPROVED", "DECLINED", "REVERSED"], weights=[90, 7, 3])[0]
        w.add(f"{when.strftime('%d/%m')} {rng.randint(6, 22):02d}:{rng.randint(0, 59):02d}  "
              f"{rng.choice(world['merchants'])[:28]:<28} GBP {amount:>8.2f}  AUTH {rng.randrange(10**6):06d}  {status}")
    if rng.random() < 0.3:
        customer["card"] = _card_number(rng)
        w.add(f"CARD REISSUED: NEW PAN {w.pii('card_number', customer['card'])}")
    return w


def _transfer_confirmation(rng: random.Random, world: dict, customer: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), customer["person"]
    amount = rng.choice([25, 60, 120, 250, 400, 750, 1200, 3000]) + rng.choice([0, 0, 0.5, 0.99])
    w.add(f"PAYMENT CONFIRMATION - {customer['bank'].upper()}")
    w.add(f"Date: {_gb_date(rng, day)}")
    w.add(f"From: {w.pii('name', p.name)}, IBAN {_iban_text(w, rng, customer['iban'])}")
    w.add(f"To: {rng.choice(world['employers'])} / payee reference "
          + rng.choice(["RENT", "INVOICE", "DEPOSIT", "SCHOOL FEES", "LOAN REPAYMENT"])
          + f" {rng.randrange(10**5):05d}")
    w.add(f"Amount: {_money(amount, '£')}   Method: {rng.choice(['Faster Payment', 'CHAPS', 'Standing order'])}")
    w.add(rng.choice([
        "The payment has been sent and should arrive within two hours.",
        "This payment is scheduled and will leave your account on the date shown.",
        "The payee's name matched the account details you gave.",
    ]))
    w.add(f"A copy of this confirmation was sent to {w.pii('email', p.email)}.")
    return w


def _loan_summary(rng: random.Random, world: dict, customer: dict, day: dt.date) -> _Writer:
    w, p = _Writer(), customer["person"]
    amount = rng.choice([2000, 5000, 7500, 10000, 15000, 25000])
    w.add(f"PERSONAL LOAN APPLICATION - received {_gb_date(rng, day)}")
    w.add(f"Applicant: {w.pii('name', p.name)}; date of birth {w.pii('date_of_birth', _gb_date(rng, p.dob))}")
    w.add(f"Address: {w.pii('address', p.address)} (" + rng.choice(["homeowner", "renting", "living with family"])
          + f", {rng.randint(1, 15)} years)")
    w.add(f"Contact: {w.pii('phone', p.phone)} / {w.pii('email', p.email)}")
    w.add(f"Employer: {customer['employer']}; net monthly income {_money(customer['salary'], '£')}")
    w.add(f"Requested: {_money(amount, '£')} over {rng.choice([24, 36, 48, 60])} months for "
          + rng.choice(["a car", "home improvements", "debt consolidation", "a wedding", "furniture"]))
    w.add(f"Repayment account {w.pii('account_number', customer['account'])}, sort code {customer['sort']}")
    w.add("Decision: " + rng.choice(["approved at 7.9% APR", "approved at 12.4% APR", "declined (credit score)",
                                      "referred for manual underwriting"]))
    return w


# --- support --------------------------------------------------------------------------------------

_PRODUCTS = ["wireless earbuds", "espresso machine", "standing desk", "air fryer", "running shoes",
             "4K monitor", "robot vacuum", "hiking backpack", "smart thermostat", "yoga mat", "office chair",
             "electric kettle", "phone case", "mechanical keyboard", "winter jacket", "baby stroller"]

# Per issue: (ticket subject, customer messages, agent replies). {order}, {product} and {last4} are
# filled in; several wordings each so that a small model cannot learn the domain as a few strings.
_ISSUES = {
    "late": (
        "Where is my order {order}?",
        ["My order {order} ({product}) was supposed to arrive last week and tracking has not moved in "
         "five days. Can you tell me what is going on?",
         "Still waiting on order {order}. The tracking page just says 'label created'. I need the "
         "{product} before the weekend.",
         "It's been 12 days since I ordered the {product} (order {order}). Is it lost?"],
        ["The carrier confirmed the parcel was delayed at the regional hub; it is back in transit and "
         "should arrive in 2-3 business days. I've refunded the shipping fee.",
         "I'm sorry for the wait. The package was marked lost, so I've shipped a new {product} by "
         "express at no charge.",
         "Tracking shows the parcel was delivered to a neighbour's porch. If it hasn't turned up by "
         "tomorrow, reply here and we'll send a replacement."]),
    "damaged": (
        "{product} arrived broken",
        ["The {product} from order {order} arrived with a cracked casing and the box was crushed. I have "
         "photos if you need them.",
         "Opened my {product} today (order {order}) and it won't turn on. Looks like it was dropped.",
         "Order {order}: the {product} has a big scratch across the front. Not happy."],
        ["Sorry about that! A replacement {product} ships today and a prepaid return label is attached.",
         "Thanks for the photos. I've issued a full refund; there's no need to send the item back.",
         "Could you send a photo of the shipping label? Once we have it I'll process the exchange."]),
    "wrong_item": (
        "Wrong item in order {order}",
        ["I opened order {order} and found someone else's item instead of the {product} I paid for.",
         "You sent me the wrong size/colour. Order {order} was for a {product}.",
         "Order {order} arrived but it's a completely different product, not the {product}."],
        ["We've sent the correct item by express shipping; please keep or donate the other one.",
         "Apologies for the mix-up. A return label is on its way and the right {product} ships today."]),
    "refund": (
        "Refund request - {product}",
        ["I returned the {product} (order {order}) two weeks ago and still have not seen my refund.",
         "Please cancel order {order} and refund me, I found the {product} cheaper elsewhere.",
         "The {product} doesn't fit my desk. How do I get a refund for order {order}?"],
        ["The return was received on our side and the refund has now been issued; allow 5-7 days.",
         "Your order was cancelled before shipping, so the refund went out immediately.",
         "Returns are free within 30 days; I've emailed you a label. The refund follows once it's scanned."]),
    "double_charge": (
        "Charged twice",
        ["My card ending {last4} was charged twice for order {order}. Please refund the duplicate.",
         "I see two identical charges on my card ending {last4} for order {order}. What happened?"],
        ["I can see the duplicate authorisation; it has been voided and will drop off your statement.",
         "Only one charge settled on our side; the second was a pending hold that expires within 3 days."]),
    "account": (
        "Can't log in to my account",
        ["I get 'invalid password' every time even after resetting it. My last order was {order}.",
         "My account got locked after I changed phones. The last thing I bought was order {order}.",
         "I never received the verification code. Please help, I need to check order {order}."],
        ["I've unlocked the account and sent a fresh reset link; it expires in 30 minutes.",
         "I've switched two-step verification to email for now. You should be able to log in."]),
}


def _support_setup(fake, rng: random.Random) -> dict:
    store = f"{fake.last_name()}{rng.choice(['Direct', 'Goods', 'Market', 'Outfitters', 'Home'])}"
    return {"agents": [fake.first_name() for _ in range(15)], "store": store, "orders": set()}


def _support_subject(fake, rng: random.Random, world: dict) -> list[_Writer]:
    person = _person(fake, rng, us=True)
    customer = {"person": person, "last4": f"{rng.randrange(10**4):04d}"}
    days = sorted(_date_between(rng, dt.date(2021, 1, 1), dt.date(2024, 12, 31)) for _ in range(_record_count(rng)))
    tickets = []
    for day in days:
        order = f"{rng.choice('ABCDEFGHJK')}{_fresh_number(rng, 9, world['orders'])}"
        tickets.append(_ticket(rng, world, customer, day, order))
    return tickets


def _ticket(rng: random.Random, world: dict, customer: dict, day: dt.date, order: str) -> _Writer:
    w, p = _Writer(), customer["person"]
    issue = rng.choice(sorted(_ISSUES))
    subject, messages, replies = _ISSUES[issue]
    fill = {"order": order, "product": rng.choice(_PRODUCTS), "last4": customer["last4"]}
    w.add(f"Ticket #{rng.randrange(10**6):06d} | {world['store']} Support | opened {day.isoformat()}")
    w.add(f"From: {w.pii('name', p.name)} <{w.pii('email', p.email)}>")
    w.add(f"Subject: {subject.format(**fill)}", "")
    w.pii("order_number", order)
    w.add(rng.choice(["Hi,", "Hello there,", "Hi team,", "To whom it may concern,", "Hey"]))
    w.add(rng.choice(messages).format(**fill))
    if issue in ("late", "damaged", "wrong_item") or rng.random() < 0.3:
        w.add(f"Shipping address: {w.pii('address', p.address)}")
    if rng.random() < 0.5:
        w.add(rng.choice(["You can call me at", "My number is", "Phone:"]) + f" {w.pii('phone', p.phone)}")
    w.add(rng.choice([f"- {p.first}", f"Thanks, {p.first}", f"Regards,\n{p.name}"]), "")
    w.add(f"Reply from {rng.choice(world['agents'])}:")
    w.add(rng.choice([f"Hi {p.first},", f"Hello {p.first}, thanks for reaching out.",
                      f"Thanks for your patience, {p.first}."]))
    w.add(rng.choice(replies).format(**fill))
    w.add(f"Status: {rng.choice(['solved', 'pending customer', 'escalated to tier 2', 'closed'])}")
    return w


def _synthetic(domain: str, locale: str, setup: Callable, subject_records: Callable, prefix: str) -> Builder:
    def build(n_documents: int | None, seed: int) -> list[BuiltinRecord]:
        return _build_synthetic(domain, n_documents, seed, locale, setup, subject_records, prefix)
    return build


DOMAINS: dict[str, DomainSpec] = {
    spec.name: spec
    for spec in [
        DomainSpec("public", "Python documentation prose: pydoc topics and standard-library docstrings",
                   False, _build_public),
        DomainSpec("code", "Python standard-library source code in function- and class-level chunks",
                   False, _build_code),
        DomainSpec("clinical", "Synthetic clinical notes (US): progress, ED, discharge, phone, referral",
                   True, _synthetic("clinical", "en_US", _clinical_setup, _clinical_subject, "patient")),
        DomainSpec("finance", "Synthetic UK bank records: statements, service notes, fraud letters, loans",
                   True, _synthetic("finance", "en_GB", _finance_setup, _finance_subject, "customer")),
        DomainSpec("support", "Synthetic customer-support tickets (US online shop)",
                   True, _synthetic("support", "en_US", _support_setup, _support_subject, "shopper")),
    ]
}
