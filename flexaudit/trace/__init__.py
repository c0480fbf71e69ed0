"""Tracing model outputs back to the training documents they repeat (OLMoTrace, with the infini-gram engine).

A data owner indexes its own corpus, on its own machine, with the anchor's tokenizer (`build_index`); the index
holds the corpus in tokenised form and never leaves the owner. Tracing a text (`trace_texts`) or a model's
output (`trace_output`) finds its maximal spans that occur verbatim in the indexed documents, with how often
and in which documents (ids, or keyed hashes only); for a mixture-of-experts model each token and span is also
attributed to the experts the router chose, so a span can be tied to an expert.

    index.py    building and opening the owner's index (infini-gram files, manifest, tokenizer fingerprint)
    spans.py    maximal spans, the result dataclasses, trace_texts
    evidence.py the audit's evidence: what the discoverable attack extracted, traced to documents
    routing.py  per-token expert routing and its per-span summary
    outputs.py  trace_output: generate (optionally), tokenise, trace, attribute to experts

The library returns plain dataclasses and never prints; `flexaudit trace` renders them.
"""

from __future__ import annotations

import importlib

# Names are imported on first use, so that `flexaudit --help` (which reads the defaults in spans.py) does not
# pay for torch, which opening a model needs.
_EXPORTS = {
    "BuiltIndex": "index",
    "TraceIndex": "index",
    "build_index": "index",
    "open_index": "index",
    "tokenizer_fingerprint": "index",
    "trace_output": "outputs",
    "DEFAULT_MAX_DOCUMENTS": "spans",
    "DEFAULT_MIN_TOKENS": "spans",
    "DocumentRef": "spans",
    "ExpertShare": "spans",
    "Span": "spans",
    "TraceResult": "spans",
    "trace_texts": "spans",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
