"""Audit evidence: what the discoverable extraction attack recovered, traced to the owner's documents."""

from __future__ import annotations

from typing import Any

from flexaudit.trace.index import TraceIndex
from flexaudit.trace.spans import trace_texts


class ExtractionEvidence:
    """The audit's tracer (flexaudit.audit.run.ExtractionTracer) over the owner's trace index.

    For each document whose discoverable sample (greedy, from the document's start) matched at least
    `min_match` of its true suffix, the sample is generated again and its spans found verbatim in the indexed
    documents are reported: counts, document ids and keyed hashes; the text itself only with `reveal`.
    """

    def __init__(self, index: TraceIndex, *, min_match: float = 0.5, reveal: bool = False):
        self.index, self.min_match, self.reveal = index, min_match, reveal

    def __call__(self, lm: Any, tokenizer: Any, texts: list[str], discoverable: Any, *, prefix: int,
                 suffix: int) -> dict:
        import attacks

        chosen = [i for i, d in enumerate(discoverable.per_document)
                  if d["token_match"] is not None and d["token_match"] >= self.min_match]
        prompts = [lm.encode([texts[i]])[0][:prefix] for i in chosen]
        generated = attacks.generate(lm, prompts, max_new_tokens=suffix) if prompts else []
        traces = trace_texts(self.index, tokenizer, [lm.decode(g) for g in generated], reveal=self.reveal)
        samples = []
        for i, trace in zip(chosen, traces):
            spans = [{"tokens": sp.tokens, "occurrences": sp.occurrences, "documents": sp.document_count,
                      "document_refs": [{"id": ref.id, "hash": ref.hash, "occurrences": ref.occurrences}
                                        for ref in sp.documents],
                      **({"text": sp.text} if self.reveal else {})}
                     for sp in trace.spans]
            samples.append({"token_match": discoverable.per_document[i]["token_match"], "spans": spans,
                            "covered_tokens": trace.covered_tokens, "tokens": trace.tokens})
        return {
            "index_documents": self.index.documents, "min_tokens": traces[0].min_tokens if traces else None,
            "samples_traced": len(samples), "samples_with_spans": sum(1 for x in samples if x["spans"]),
            "samples": samples,
        }
