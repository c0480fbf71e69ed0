"""Per-domain perplexity of any model flexaudit can open, on held-out documents.

Each document is tokenised with an end-of-text token appended and cut into windows of the model's context
length that overlap by one token, so every token after the document's first is predicted exactly once.
Perplexity is exp(total negative log-likelihood / predicted tokens) per domain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from flexaudit.errors import InputError
from flexaudit.moe.device import is_out_of_memory
from flexaudit.moe.model import FlexOlmo, pad_right, perplexity_from, token_nll
from flexaudit.moe.tokenizer import encode_documents
from flexaudit.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class DomainScore:
    documents: int
    tokens: int  # predicted tokens
    nll: float  # summed, nats
    perplexity: float

    def as_dict(self) -> dict:
        return asdict(self)


def _windows(ids: list[int], width: int) -> list[list[int]]:
    out, start = [], 0
    while start < len(ids) - 1:
        out.append(ids[start : start + width])
        start += width - 1
    return out


DEFAULT_BATCH_TOKENS = 16_384  # padded tokens per forward pass; halved on out-of-memory


@torch.no_grad()
def perplexity(
    model: FlexOlmo,
    tokenizer,
    texts: list[str],
    *,
    batch_size: int = 64,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    seq_len: int | None = None,
    progress: Progress = NULL_PROGRESS,
    description: str = "evaluating",
) -> DomainScore:
    """Perplexity of `texts` under `model` (on its device). Batches hold at most `batch_size` windows and
    `batch_tokens` padded tokens; a batch that runs out of memory is retried in halves, and only a single
    window that does not fit raises (InputError), as do a batch size or token budget under 1."""
    for flag, value in (("--batch-size", batch_size), ("--batch-tokens", batch_tokens)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    width = seq_len or model.config.max_seq_len
    windows = [w for ids in encode_documents(tokenizer, texts) for w in _windows(ids, width)]
    windows.sort(key=len)  # similar lengths together: less padding
    pad = model.config.pad_token_id
    total, count = 0.0, 0
    task = progress.task(description, total=len(windows))
    model.eval()
    i, budget = 0, batch_tokens
    while i < len(windows):
        n = max(1, min(batch_size, budget // max(1, len(windows[min(i + batch_size, len(windows)) - 1]))))
        chunk = windows[i : i + n]
        ids, mask = pad_right(chunk, pad)
        ids, mask = ids.to(model.device), mask.to(model.device)
        try:
            nll = float(token_nll(model(ids, next_token_only=True), ids, mask))
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc) or n == 1:
                if is_out_of_memory(exc):
                    raise InputError(f"out of memory on one window of {len(chunk[0])} tokens on {model.device}: "
                                     "use a smaller --seq-len, a lower precision, or a larger device") from None
                raise
            budget = max(1, (n // 2) * len(chunk[-1]))
            continue
        total += nll
        count += int(mask[:, 1:].sum())
        task.advance(len(chunk))
        i += n
    task.close()
    return DomainScore(documents=len(texts), tokens=count, nll=total, perplexity=perplexity_from(total, count))


def evaluate_domains(model: FlexOlmo, tokenizer, domains: dict[str, list[str]], **kwargs) -> dict[str, DomainScore]:
    return {name: perplexity(model, tokenizer, texts, description=f"eval {name}", **kwargs) for name, texts in domains.items()}
