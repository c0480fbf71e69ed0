"""Batches sized by a token budget, and halved when a batch does not fit in memory.

Scoring and decoding cost memory in proportion to the padded tokens of a batch (rows x the longest row; for
decoding, the prompt plus the new tokens the KV cache will hold), not to its row count: a fixed row count
either wastes a large GPU on short texts or runs out of memory on long ones. `run_batches` packs consecutive
items (sorted longest first by the caller, so the first item of a batch is its widest) up to a row limit and a
token budget; when a batch runs out of memory it halves the budget and retries the same items, so a run on a
smaller device is slower, never wrong. Only an item that does not fit on its own is an error.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import InputError

DEFAULT_BATCH_TOKENS = 16_384
# Rows per decoding batch, at most: a decoding step's cost on a small model is mostly per call, not per row, so
# wide batches are several times faster there; on a large model the token budget is the limit that applies.
DEFAULT_DECODE_ROWS = 128


def right_padded(rows: Sequence[Sequence[int]], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) on `device`, both (len(rows), longest row) int64: each row's tokens from the left and zeros
    after them (mask 1 on the tokens, 0 on the padding), so in a causal model no real position sees padding."""
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, r in enumerate(rows):
        ids[j, :len(r)], mask[j, :len(r)] = torch.tensor(list(r)), 1
    return ids.to(device), mask.to(device)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's out-of-memory error, or the host allocator's."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def plan_batches(widths: Sequence[int], *, max_rows: int,
                 max_tokens: int | None = DEFAULT_BATCH_TOKENS) -> list[tuple[int, int]]:
    """The (start, stop) slices `run_batches` runs when nothing runs out of memory (attacks.sharding splits
    this plan over processes)."""
    if max_rows < 1:
        raise InputError("batch_size must be at least 1")
    if max_tokens is not None and max_tokens < 1:
        raise InputError("batch_tokens must be at least 1")
    plan, start = [], 0
    while start < len(widths):
        rows = max_rows if max_tokens is None else max(1, min(max_rows, max_tokens // max(1, widths[start])))
        plan.append((start, min(len(widths), start + rows)))
        start = plan[-1][1]
    return plan


def run_batches(widths: Sequence[int], run: Callable[[int, int], None], *, max_rows: int,
                max_tokens: int | None = DEFAULT_BATCH_TOKENS, what: str = "batch") -> int:
    """Call run(start, stop) on consecutive slices of items 0..n-1 that hold at most `max_rows` items and
    `max_tokens` padded tokens (slice length x widths[start]). A slice that runs out of memory is retried with
    half the budget; `run` must not have kept partial results of a failed call. Returns the number of retries.

    Raises:
        InputError: max_rows < 1 or max_tokens < 1, or one item alone does not fit in memory.
    """
    if max_rows < 1:
        raise InputError("batch_size must be at least 1")
    if max_tokens is not None and max_tokens < 1:
        raise InputError("batch_tokens must be at least 1")
    budget = max_tokens
    start, retries = 0, 0
    while start < len(widths):
        rows = max_rows if budget is None else max(1, min(max_rows, budget // max(1, widths[start])))
        stop = min(len(widths), start + rows)
        try:
            run(start, stop)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if stop - start == 1:
                raise InputError(f"out of memory on a single {what} of {widths[start]} tokens: use a shorter "
                                 "max_length, a lower-precision dtype or a device with more memory") from None
            budget = max(1, (stop - start) // 2 * max(1, widths[start]))
            retries += 1
            continue
        start = stop
    return retries
