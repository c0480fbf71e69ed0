"""The built-in corpus: demo and test data made on the spot, with nothing downloaded.

Every domain is built from what any Python install and flexaudit's declared dependencies already hold,
so `flexaudit demo` and the tests run offline and on any machine:

public
    Prose from the standard library's documentation: the language-reference topics that ship in
    `pydoc_data.topics`, cut into paragraph-sized documents, plus the prose docstrings of part of the
    standard library (read from source files with `ast`; no module is ever imported). This is the
    public anchor model's pretraining data, so it takes everything it can (about 1.6 MB on 3.11).
code
    One codebase's source: the standard library's `asyncio` package, cut before its statements into
    method- or block-sized chunks and copied verbatim (comments and docstrings included). A data
    owner's code is one codebase with its own names and idioms; a sample of all of Python is not
    (measured: README, Limits). Modules are split between `public` and `code` by a fixed hash of their
    top-level name, so the public domain never draws on the code side's modules (asyncio among them),
    and any public paragraph that shares a line with them (a docstring copied between modules) is dropped.
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

    build_domain("clinical", n_documents=200, seed=0)   # -> [BuiltinRecord]
    write_domain("finance", "finance.jsonl")            # JSONL with id, text, subject, pii
    load_documents("builtin:public")                    # the same records as Documents (flexaudit.data)

Layout: one module per domain, the registry (record types, the domain table) in `registry`, and the shared
pieces in `stdlib` (reading and cutting the standard library) and `synthetic` (the seeded generator).
"""

from flexaudit.data.builtin import clinical, code, finance, public, support  # noqa: F401  (each registers its domain)
from flexaudit.data.builtin.registry import (
                                             DOMAINS,
                                             PII_CATEGORIES,
                                             SYNTHETIC_DEFAULT_SIZE,
                                             BuiltinRecord,
                                             DomainSpec,
                                             PiiItem,
                                             build_domain,
                                             domain_names,
                                             register,
                                             write_domain,
)
from flexaudit.data.builtin.synthetic import luhn_valid

__all__ = ["DOMAINS", "PII_CATEGORIES", "SYNTHETIC_DEFAULT_SIZE", "BuiltinRecord", "DomainSpec", "PiiItem",
           "build_domain", "domain_names", "register", "write_domain", "luhn_valid"]
