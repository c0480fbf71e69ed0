"""Tracing a model's output (or any text, read by the model) back to the owner's documents and to experts."""

from __future__ import annotations

import os
from pathlib import Path

from flexaudit.errors import InputError
from flexaudit.trace.spans import (
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MIN_TOKENS,
    TraceResult,
    check_limits,
    encode,
    trace_ids,
)


def trace_output(
    model_dir: str | os.PathLike,
    index,
    *,
    text: str | None = None,
    prompt: str | None = None,
    anchor_dir: str | os.PathLike | None = None,
    exclude: list[str] = (),
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    max_new_tokens: int = 64,
    sample: bool = False,
    seed: int = 0,
    reveal: bool = False,
    placement=None,
) -> TraceResult:
    """Trace `text`, or the model's continuation of `prompt` (generated exactly as `flexaudit generate` does:
    greedy unless sample), against the owner's index (a TraceIndex or its directory).

    The result holds the traced text (it is the caller's own query or the model's answer to it), its maximal
    spans found in the index with counts and document ids or hashes, and per token and per span the share of
    routing weight each expert received. Indexed documents' own text only with reveal. With a prompt, the
    prompt and continuation are traced as one text, so a span may start in the prompt, but only spans that
    reach into the generated tokens are kept. `placement` (flexaudit.moe.device.Placement) is where the model
    runs (default: the CPU, in its stored dtype)."""
    from flexaudit.moe.merge import open_model
    from flexaudit.moe.tokenizer import load_tokenizer
    from flexaudit.trace.index import TraceIndex, open_index
    from flexaudit.trace.routing import route_tokens

    if (text is None) == (prompt is None):
        raise InputError("give exactly one of --text TEXT (trace this text) or --prompt TEXT (generate, then trace)")
    if not (text if text is not None else prompt):
        raise InputError("the text to trace is empty: give a non-empty --text or --prompt")
    check_limits(min_tokens=min_tokens, max_documents=max_documents)
    if not isinstance(index, TraceIndex):
        index = open_index(index)
    model, experts, tokenizer_dir = open_model(Path(model_dir), anchor_dir=Path(anchor_dir) if anchor_dir else None,
                                               exclude=list(exclude), placement=placement)
    tokenizer = load_tokenizer(tokenizer_dir)
    index.check_tokenizer(tokenizer)  # before generating: a wrong index is refused at once

    prompt_chars = 0
    if prompt is not None:
        from flexaudit.moe.generation import generate

        text = generate(Path(model_dir), prompt, exclude=list(exclude), anchor_dir=Path(anchor_dir) if anchor_dir else None,
                        max_new_tokens=max_new_tokens, sample=sample, seed=seed, placement=placement)
        prompt_chars = len(prompt) if text.startswith(prompt) else 0
    ids, chars = encode(tokenizer, text)
    prompt_tokens = sum(1 for a, _ in chars if a < prompt_chars)
    routing = route_tokens(model, ids, experts)
    return trace_ids(index, tokenizer, ids, chars, text=text, min_tokens=min_tokens, max_documents=max_documents,
                     reveal=reveal, prompt_tokens=prompt_tokens, routing=routing)
