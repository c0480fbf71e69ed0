"""One rule for unusable items, shared by every function that takes many texts, prompts or canaries.

An item that cannot be attacked (an empty or one-token text, a document shorter than the attack's window, a
prompt with no room left in the context, a canary whose secret has another format) is left out, and the result
counts it: `n_skipped`, and `skipped`, a reason -> count mapping. A call raises `NothingUsable` only when no
usable item is left, with one line that says how many items there were, why each kind was unusable and what to
pass instead. A batch is never refused for one bad item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from .errors import NothingUsable

T = TypeVar("T")

# Reasons shared by several functions (the rest are specific and built where they arise).
NOT_TEXT = "not a string"
EMPTY = "empty or whitespace only"
TOO_SHORT_TO_SCORE = "fewer than 2 tokens"
NO_TOKENS = "no tokens"
NON_FINITE = "non-finite score"


@dataclass
class Partition:
    """Which items of a batch are usable (`kept`, indices in input order) and why the others are not."""

    n_items: int
    kept: list[int]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def require(self, what: str, advice: str) -> "Partition":
        """Raise NothingUsable (one line) when no item is usable; else return self."""
        if self.kept:
            return self
        if not self.n_items:
            raise NothingUsable(f"no {what} given: {advice}", skipped={}, n_items=0)
        raise NothingUsable(f"all {self.n_items} {what} are unusable ({describe(self.skipped)}): {advice}",
                            skipped=self.skipped, n_items=self.n_items)


def partition(items: Sequence[T], reason_of: Callable[[int, T], str | None]) -> Partition:
    """Splits `items` by `reason_of(index, item)`: None keeps the item, a string is why it is skipped."""
    kept: list[int] = []
    skipped: dict[str, int] = {}
    for i, item in enumerate(items):
        reason = reason_of(i, item)
        if reason is None:
            kept.append(i)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    return Partition(len(items), kept, skipped)


def merge(*counts: Mapping[str, int]) -> dict[str, int]:
    """Reason -> count mappings added together (first-seen order)."""
    out: dict[str, int] = {}
    for c in counts:
        for reason, n in c.items():
            out[reason] = out.get(reason, 0) + int(n)
    return out


def prefixed(prefix: str, counts: Mapping[str, int]) -> dict[str, int]:
    """The same counts with each reason prefixed (to tell kinds of items apart in one mapping)."""
    return {f"{prefix}: {reason}": n for reason, n in counts.items()}


def describe(counts: Mapping[str, int]) -> str:
    """'3 fewer than 2 tokens, 1 not a string' (empty string for no counts)."""
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def skip_fields(skipped: Mapping[str, int], n_skipped: int | None = None) -> dict[str, Any]:
    """The two fields every result's `as_dict()` carries."""
    return {"n_skipped": int(sum(skipped.values()) if n_skipped is None else n_skipped), "skipped": dict(skipped)}


def text_reason(text: Any) -> str | None:
    """NOT_TEXT or EMPTY for items that are no text at all; None for any other string."""
    if not isinstance(text, str):
        return NOT_TEXT
    return EMPTY if not text.strip() else None


def only_texts(texts: Iterable[Any]) -> list[str]:
    """Each item as given when it is a string, else "" (so per-item hashes and encodings stay aligned)."""
    return [t if isinstance(t, str) else "" for t in texts]
