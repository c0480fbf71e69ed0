"""Finding the spans of a text that occur verbatim in an owner's trace index, and what they are made of.

A span is *maximal* (OLMoTrace, Liu et al. 2025, §3 step 1): it occurs in the index, and extending it by one
token on either side would not. For every start position we take the longest prefix of the rest of the text
that occurs in the corpus; a span is kept when it is at least `min_tokens` long and is not contained in an
earlier one. Maximal spans may overlap. Spans never cross a document boundary.

This is what `InfiniGramEngine.attribute` computes, but that method (2.6.0) misses every span whose text sorts
before all suffixes of the index (an unsigned underflow in its neighbour check when the insertion point is rank
0: on the test records, a token that starts two documents' words was reported as matching nothing). So the
prefixes are found here with the engine's exact `find`, in one sweep: the end of the longest match never moves
left as the start moves right, so a text of T tokens needs at most 2T lookups, each a binary search in the
suffix array.

Unlike OLMoTrace we keep spans however often they occur (OLMoTrace keeps those seen at most 10 times, to show
"unique" text): a leaked record repeated in twenty documents matters more, not less. The occurrence count and
the number of distinct documents say whether a span is a shared template or one owner's record.

Default minimum length, 12 tokens. OLMoTrace's attribution service (allenai/infinigram-api) first defaulted to
5 tokens of the Llama-2/OLMo tokenizers, about 20 characters of English. Our anchors' vocabularies are far
smaller (512 tokens for tests, 2048 for the demo): one token covers 1.4 to 3 characters, so 5 tokens is often a
single word and text never seen in training would light up everywhere. 12 tokens is 17 to 36 characters, the
three to five words OLMoTrace aimed at. Measured: the longest chance match of fresh random sentences was 8
tokens against 600k tokens of held-out-domain prose (512 vocabulary) and 6 against 50M tokens of synthetic
records (benchmarks/trace_scaling.py), while a memorised record is traced whole.

Privacy: the traced text may be shown (it is the caller's own query or the model's output) only when the
caller asks for it; the indexed documents' own text (the context around a match) is returned only with
`reveal`. Documents are named by id, or only by keyed hash in a hashes-only index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from flexaudit.errors import InputError

DEFAULT_MIN_TOKENS = 12
DEFAULT_MAX_DOCUMENTS = 10  # document references listed per span; the totals are always complete
CONTEXT_TOKENS = 32  # document text shown on each side of a match, with reveal


@dataclass(frozen=True)
class DocumentRef:
    """One indexed document that contains a span."""

    index: int  # position in the trace index
    hash: str  # HMAC-SHA256(owner key, SHA-256 of its text): the same hash as in expert manifests' split record
    occurrences: int  # times the span occurs in this document
    id: str | None = None  # None in a hashes-only index
    context_before: str | None = None  # the document's text around one match of the span: only with reveal
    context_after: str | None = None


@dataclass(frozen=True)
class ExpertShare:
    """How much of the routing over a span's tokens went to one expert."""

    name: str
    weight: float  # share of all routing weight over the span's tokens and every layer (sums to 1 over experts)
    selected: float  # share of (token, layer) routing decisions in which this expert was among the top-k


@dataclass(frozen=True)
class Span:
    start: int  # token offsets in the traced text, end exclusive
    end: int
    char_start: int  # character offsets in the traced text, end exclusive
    char_end: int
    occurrences: int  # times the span occurs verbatim in the index
    document_count: int  # distinct documents that contain it
    documents: list[DocumentRef]  # at most max_documents of them, most occurrences first
    text: str | None = None  # the span's text, taken from the traced text; None unless asked for
    generated_tokens: int | None = None  # tokens of the span the model generated (None: no prompt was given)
    experts: list[ExpertShare] = field(default_factory=list)  # most routing weight first; empty without a model

    @property
    def tokens(self) -> int:
        return self.end - self.start

    @property
    def top_expert(self) -> str | None:
        return self.experts[0].name if self.experts else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tokens"] = self.tokens
        d["top_expert"] = self.top_expert
        return d


@dataclass(frozen=True)
class TraceResult:
    """What one traced text has in common with the owner's indexed documents."""

    tokens: int  # tokens in the traced text (prompt included)
    min_tokens: int
    spans: list[Span]
    index: dict  # documents, tokens, keys ("ids" or "hashes") and anchor root digest of the index used
    text: str | None = None  # the traced text; None unless asked for
    prompt_tokens: int = 0  # leading tokens that came from the user's prompt (not generated by the model)
    experts: list[str] = field(default_factory=list)  # the model's experts, when routing was traced
    token_experts: list[list[float]] | None = None  # per token, each expert's share of routing weight (all layers)
    token_chars: list[tuple[int, int]] | None = None  # per token, its character offsets in the text

    @property
    def covered_tokens(self) -> int:
        """Tokens after the prompt that lie in at least one span."""
        covered = np.zeros(self.tokens, dtype=bool)
        for s in self.spans:
            covered[max(s.start, self.prompt_tokens) : s.end] = True
        return int(covered.sum())

    @property
    def coverage(self) -> float:
        """Share of the tokens after the prompt (all tokens, without one) found verbatim in the index."""
        own = self.tokens - self.prompt_tokens
        return self.covered_tokens / own if own else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["spans"] = [s.as_dict() for s in self.spans]
        d["covered_tokens"] = self.covered_tokens
        d["coverage"] = round(self.coverage, 6)
        return d


# --- the engine query -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Match:
    """A maximal span as the engine reports it: token offsets, occurrence count, pointers to every occurrence."""

    start: int
    end: int
    occurrences: int
    pointers: np.ndarray  # byte offsets into the index's token file


def check_limits(*, min_tokens: int, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> None:
    if min_tokens < 1:
        raise InputError(f"--min-tokens must be at least 1, got {min_tokens}")
    if max_documents < 0:
        raise InputError(f"--max-documents must be 0 or more, got {max_documents}")


def maximal_spans(index, ids: list[int], *, min_tokens: int = DEFAULT_MIN_TOKENS) -> list[Match]:
    """The maximal spans of `ids` at least `min_tokens` long that occur in the index, in text order."""
    check_limits(min_tokens=min_tokens)
    ids = [int(i) for i in ids]
    spans: list[Match] = []
    end = last_end = 0
    for start in range(len(ids)):
        end = max(end, start)  # ids[start:end] occurs: it is a suffix of the previous match
        while end < len(ids) and index.find(ids[start : end + 1])[0] > 0:
            end += 1
        if end - start >= min_tokens and end > last_end:
            count, ranks = index.find(ids[start:end])
            spans.append(Match(start=start, end=end, occurrences=count, pointers=index.pointers(*ranks)))
            last_end = end
    return spans


def describe(index, match: Match, *, tokenizer=None, max_documents: int = DEFAULT_MAX_DOCUMENTS,
             reveal: bool = False) -> tuple[int, list[DocumentRef]]:
    """The number of distinct documents holding a match, and references to the first `max_documents` of them
    (most occurrences first). With reveal (and a tokenizer), each reference carries its document's text
    around one occurrence (CONTEXT_TOKENS on each side)."""
    docs = index.document_of(match.pointers)
    unique, first, counts = np.unique(docs, return_index=True, return_counts=True)
    order = np.lexsort((unique, -counts))[:max_documents]
    refs = []
    for i in order:
        key = index.key(int(unique[i]))
        before = after = None
        if reveal and tokenizer is not None:
            left, right = index.context(int(match.pointers[first[i]]), match.end - match.start, CONTEXT_TOKENS)
            before, after = tokenizer.decode(left), tokenizer.decode(right)
        refs.append(DocumentRef(index=int(unique[i]), hash=key["hash"], occurrences=int(counts[i]), id=key.get("id"),
                                context_before=before, context_after=after))
    return len(unique), refs


def encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of a text the way the index was tokenised (no special tokens), with character offsets."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def summary(index) -> dict:
    return {
        "directory": str(index.directory),
        "documents": index.documents,
        "tokens": index.tokens,
        "keys": index.info["documents"]["keys"],
        "anchor_root_digest": index.info["anchor"]["root_digest"],
        "data_fingerprint": index.info["documents"]["fingerprint"],  # keyed: identifies the data to its owner only
    }


def trace_ids(
    index,
    tokenizer,
    ids: list[int],
    chars: list[tuple[int, int]],
    *,
    text: str | None,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    reveal: bool = False,
    prompt_tokens: int = 0,
    routing=None,
) -> TraceResult:
    """Trace one tokenised text. `text` is kept in the result (and each span's text) only when given; document
    context only with reveal. Spans that lie wholly inside the first `prompt_tokens` tokens are dropped: they
    say nothing about the model. `routing` (flexaudit.trace.routing.Routing) adds expert attribution."""
    spans = []
    for match in maximal_spans(index, ids, min_tokens=min_tokens):
        if match.end <= prompt_tokens:
            continue
        count, refs = describe(index, match, tokenizer=tokenizer, max_documents=max_documents, reveal=reveal)
        c0, c1 = chars[match.start][0], chars[match.end - 1][1]
        spans.append(Span(
            start=match.start, end=match.end, char_start=c0, char_end=c1,
            occurrences=match.occurrences, document_count=count, documents=refs,
            text=text[c0:c1] if text is not None else None,
            generated_tokens=match.end - max(match.start, prompt_tokens) if prompt_tokens else None,
            experts=routing.span(match.start, match.end) if routing is not None else [],
        ))
    return TraceResult(
        tokens=len(ids), min_tokens=min_tokens, spans=spans, index=summary(index), text=text,
        prompt_tokens=prompt_tokens,
        experts=list(routing.experts) if routing is not None else [],
        token_experts=routing.shares() if routing is not None else None,
        token_chars=list(chars) if text is not None else None,
    )


def trace_texts(
    index,
    tokenizer,
    texts: list[str],
    *,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    reveal: bool = False,
) -> list[TraceResult]:
    """Trace texts (e.g. an extraction attack's samples) against the owner's index: per text, the spans found
    in the owner's documents with their counts and document ids or hashes. Raw text (the sample's, the spans'
    and the documents' context) is in the results only with reveal. `index` is a TraceIndex or its directory."""
    from flexaudit.trace.index import TraceIndex, open_index

    check_limits(min_tokens=min_tokens, max_documents=max_documents)
    if not isinstance(index, TraceIndex):
        index = open_index(index)
    index.check_tokenizer(tokenizer)
    results = []
    for text in texts:
        ids, chars = encode(tokenizer, text)
        results.append(trace_ids(index, tokenizer, ids, chars, text=text if reveal else None, min_tokens=min_tokens,
                                 max_documents=max_documents, reveal=reveal))
    return results
