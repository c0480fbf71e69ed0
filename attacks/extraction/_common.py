"""Helpers shared by the extraction attacks: windows in documents, seeds, hashes."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Sequence

import numpy as np

from .._usable import NOT_TEXT, Partition, only_texts, partition
from ..errors import InputError


def sha256(text: str, key: bytes | None = None) -> str:
    """Hex SHA-256 of the text, or HMAC-SHA256 under `key`.

    A plain hash of a low-entropy value (a 9-digit secret, a phone number) can be reversed by trying
    every value; pass a key (kept by the data owner) when results leave the owner's machine.
    """
    if key is not None:
        return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for (seed, keys...), e.g. (seed, document, sample): independent streams per draw."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1, np.uint64)[0] >> 1)


def check_fits(lm, tokens: int) -> None:
    """Refuses windows longer than the model's context (positions past it are undefined)."""
    if tokens > lm.context_length:
        raise InputError(f"a window of {tokens} tokens does not fit the model's context of {lm.context_length} "
                         "tokens; use shorter prefixes/suffixes")


def choose_offsets(lengths: Sequence[int], need: int, offset: str | int, seed: int) -> list[int | None]:
    """Start of a `need`-token window per document; None where the document is too short (skipped).

    offset: "start" (window at the beginning), "random" (uniform over every start that fits, seeded per
    document), or a fixed token index.
    """
    if need < 2:
        raise InputError("an extraction window needs at least 2 tokens")
    starts: list[int | None] = []
    for i, n in enumerate(lengths):
        if n < need:
            starts.append(None)
        elif offset == "start":
            starts.append(0)
        elif offset == "random":
            starts.append(int(np.random.default_rng(derive_seed(seed, i)).integers(0, n - need + 1)))
        elif isinstance(offset, int) and not isinstance(offset, bool):
            starts.append(offset if offset + need <= n else None)
        else:
            raise InputError(f"offset must be 'start', 'random' or a token index, not {offset!r}")
    return starts


def document_windows(lm, texts: Sequence[Any], need: int, offset: str | int,
                     seed: int) -> tuple[list[list[int]], list[int | None], Partition]:
    """Token ids, window starts (None: skipped) and the usable documents of a batch for a `need`-token window.

    A document is unusable when it is not a string, or has no `need`-token window (at `offset`); the partition
    counts both, and raises NothingUsable (via `require`) only when no document is left.
    """
    ids = lm.encode(only_texts(texts))
    starts = choose_offsets([len(t) for t in ids], need, offset, seed)
    short = (f"shorter than the {need}-token window" if not isinstance(offset, int) or isinstance(offset, bool)
             else f"shorter than token {offset} + the {need}-token window")
    part = partition(texts, lambda i, t: NOT_TEXT if not isinstance(t, str) else (short if starts[i] is None else None))
    part.require("documents", f"pass documents of at least {need} tokens, or shorter prefixes/suffixes")
    return ids, [s if isinstance(t, str) else None for s, t in zip(starts, texts)], part


def document_hash(text: Any) -> str | None:
    """SHA-256 of a document, None for an item that is no text."""
    return sha256(text) if isinstance(text, str) else None
