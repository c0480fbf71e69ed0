"""Batched decoding with a KV cache, deterministic per prompt, and the decoding distribution itself.

`generate` left-pads a batch of prompts (so every row's next token sits in the last column), runs the
prompt once, then one token per step re-using the KV cache. Position ids come from the attention mask
(`cumsum - 1`), so a left-padded row is computed exactly as it would be alone.

Sampling is made *batch-invariant*: every prompt has its own seed and its own `torch.Generator`, and
a token is drawn by the Gumbel-max trick (argmax of log p + Gumbel noise, an exact sample of p), so
the samples of a prompt do not depend on which other prompts share its batch or on the batch size
(the batched-vs-one-at-a-time benchmark compares identical work), and the global RNG is untouched.

`_candidates` is the single definition of the decoding distribution (temperature, then top-k, then
top-p, in the order of transformers' logits warpers); the sampler and `decoding_logprobs`, which the
probabilistic-extraction estimate (Hayes et al. 2024) uses, both go through it, so p(suffix | prefix)
is computed under exactly the scheme that samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from .._progress import Progress, progress_or_null
from .._usable import NO_TOKENS, partition
from ..batching import DEFAULT_BATCH_TOKENS, DEFAULT_DECODE_ROWS
from ..sharding import run_batches_on
from ..errors import InputError
from ..model import CachedForward, CausalLM


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen. `do_sample=False` is greedy (temperature/top-k/top-p are then ignored)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise InputError("temperature must be positive (use do_sample=False for greedy decoding)")
        if self.top_k is not None and self.top_k < 1:
            raise InputError("top_k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InputError("top_p must be in (0, 1]")

    def as_dict(self) -> dict:
        return asdict(self)


GREEDY = SamplingConfig()
# The FlexOlmo paper's extraction attack (§5.3; its code: top-k 50, top-p 0.95, temperature 1).
PAPER_SAMPLING = SamplingConfig(do_sample=True, temperature=1.0, top_k=50, top_p=0.95)


def _candidates(logits: torch.Tensor, sampling: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens the sampler may draw: (scores, token ids), excluded ones scored -inf.

    Temperature, then top-k (exactly k tokens, `torch.topk`), then top-p (nucleus: keep a token while
    the mass of the strictly more likely tokens is below p, so the most likely is always kept), as in
    transformers' warpers. With top-k the nucleus is computed on the k survivors only, so a step sorts
    k values, not the vocabulary. `ids` is None when no filter applies (scores = whole vocabulary).
    """
    scores = logits.float() / sampling.temperature
    vocab = scores.shape[-1]
    use_p = sampling.top_p is not None and sampling.top_p < 1.0
    if sampling.top_k is not None and sampling.top_k < vocab:
        scores, ids = torch.topk(scores, sampling.top_k, dim=-1)  # sorted, most likely first
    elif use_p:
        scores, ids = torch.sort(scores, dim=-1, descending=True)
    else:
        return scores, None
    if use_p:
        probs = scores.softmax(dim=-1)
        more_likely_mass = probs.cumsum(dim=-1) - probs
        scores = scores.masked_fill(more_likely_mass >= sampling.top_p, -torch.inf)
    return scores, ids


def decoding_logprobs(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Log-probabilities of the decoding distribution over the vocabulary (-inf where excluded).

    Greedy decoding is the point mass on the argmax (log p = 0 there, -inf elsewhere).
    """
    if not sampling.do_sample:
        out = torch.full(logits.shape, -torch.inf, device=logits.device)
        return out.scatter_(-1, logits.argmax(-1, keepdim=True), 0.0)
    scores, ids = _candidates(logits, sampling)
    logp = torch.log_softmax(scores, dim=-1)
    if ids is None:
        return logp
    return torch.full(logits.shape, -torch.inf, device=logits.device).scatter_(-1, ids, logp)


def _pick(logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator] | None) -> torch.Tensor:
    """argmax (greedy) or one sample per row of the decoding distribution, each row from its own generator.

    Gumbel-max: argmax(score + G), G = -log(-log U), is an exact sample of softmax(score); the scores
    need no normalisation and excluded tokens (-inf) are never drawn.
    """
    if not sampling.do_sample:
        return logits.argmax(-1)
    scores, ids = _candidates(logits, sampling)
    uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in generators])
    gumbel = -torch.log(-torch.log(uniform.clamp_(min=torch.finfo(uniform.dtype).tiny)))
    choice = (scores + gumbel).argmax(-1)
    return choice if ids is None else ids.gather(-1, choice[:, None])[:, 0]


class Generations(list):
    """One entry per prompt, in order: its generated ids, or None for a prompt that was skipped as unusable.

    `skipped` counts the skipped prompts by reason (`n_skipped` in all).
    """

    def __init__(self, items=(), *, skipped: dict[str, int] | None = None) -> None:
        super().__init__(items)
        self.skipped = dict(skipped or {})

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def generate(lm: CausalLM, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             sampling: SamplingConfig = GREEDY, seeds: Sequence[int] | None = None,
             batch_size: int = DEFAULT_DECODE_ROWS,
             batch_tokens: int | None = DEFAULT_BATCH_TOKENS, stop_at_eos: bool = False,
             progress: Progress | None = None) -> Generations:
    """Continues each prompt (token ids) by exactly `max_new_tokens` tokens.

    Args:
        lm: the model.
        prompts: token-id lists. A prompt with no tokens, or too long to leave room for `max_new_tokens` in
            the context, is skipped (its entry is None) and counted in the result's `skipped`.
        max_new_tokens: tokens generated per prompt.
        sampling: GREEDY, PAPER_SAMPLING or another SamplingConfig.
        seeds: one seed per prompt (required for sampling; same seed => same sample).
        batch_size: at most this many prompts decoded together.
        batch_tokens: at most this many tokens (prompt plus new tokens, padded) held per batch; a batch that
            runs out of memory is retried with half as many (see `attacks.batching`). Samples do not depend
            on the batching.
        stop_at_eos: after the tokenizer's EOS token a row only repeats EOS (decoding with
            skip_special_tokens then drops them), as `model.generate` does.
        progress: optional progress object.

    Returns:
        `Generations`: one int64 array of `max_new_tokens` generated ids per usable prompt (the prompt is
        not included), None for a skipped one.

    Raises:
        NothingUsable: no prompt is usable (or none was given).
    """
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1")
    prompts = list(prompts)
    if sampling.do_sample and (seeds is None or len(seeds) != len(prompts)):
        raise InputError("sampling needs one seed per prompt (seeds=...)")
    room = lm.context_length - max_new_tokens
    if room < 1:
        raise InputError(f"{max_new_tokens} new tokens leave no room for a prompt in the model's context of "
                         f"{lm.context_length} tokens: lower max_new_tokens")
    usable = partition(prompts, lambda i, p: NO_TOKENS if len(p) == 0 else (
        f"longer than the {room} tokens the context leaves" if len(p) > room else None))
    usable.require("prompts", f"pass prompts of 1 to {room} tokens (the model's context is {lm.context_length} "
                              f"tokens, {max_new_tokens} of them for the new tokens)")
    eos = lm.tokenizer.eos_token_id
    if stop_at_eos and eos is None:
        stop_at_eos = False
    forward = CachedForward(lm.model)
    order = sorted(usable.kept, key=lambda i: len(prompts[i]), reverse=True)  # little left padding
    results = Generations([None] * len(prompts), skipped=usable.skipped)
    task = progress_or_null(progress).task(f"decoding {len(order)} prompts", total=len(order))
    # split over processes (attacks.sharding): the batches count into a tally, which adds every process's counts
    # to the task after each round
    own_task = task if lm.shard is None else lm.shard.tally(task)
    mine: dict[int, tuple] = {}

    def run(start: int, stop: int) -> None:
        rows = order[start:stop]
        generators = None
        if sampling.do_sample:
            generators = [torch.Generator(device=lm.device).manual_seed(int(seeds[i]) % (2 ** 63)) for i in rows]
        out = _decode_batch(forward, lm.device, [prompts[i] for i in rows], max_new_tokens, sampling,
                            generators, eos if stop_at_eos else None)
        for j, i in enumerate(rows):
            mine[i] = (out[j],)
        own_task.advance(len(rows), tokens=len(rows) * max_new_tokens)

    widths = [len(prompts[i]) + max_new_tokens for i in order]
    mine = run_batches_on(lm.shard, widths, run, mine, max_rows=batch_size, max_tokens=batch_tokens, what="prompt",
                          task=task, tally=own_task)
    for i, (out,) in mine.items():
        results[i] = out
    return results


def _decode_batch(forward: CachedForward, device, prompts, max_new_tokens, sampling, generators, eos):
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for j, p in enumerate(prompts):  # left padding: the last column is every row's last prompt token
        ids[j, width - len(p):] = torch.tensor(list(p))
        mask[j, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)
    logits, cache = forward(ids, mask, positions)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    out = torch.empty((len(prompts), max_new_tokens), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        nxt = _pick(logits, sampling, generators)
        if eos is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos), nxt)
            finished |= nxt == eos
            if bool(finished.all()):
                out[:, step:] = eos
                break
        out[:, step] = nxt
        if step + 1 == max_new_tokens:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        logits, cache = forward(nxt[:, None], mask, positions, cache)
    return out.cpu().numpy()
