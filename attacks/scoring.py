"""One scoring pass: every token-level signal the membership attacks need, from batched forward passes.

`score_texts(lm, texts)` runs the model once over the texts and returns a `ScoreCache`; every
membership attack (LOSS, zlib, Min-K%, Min-K%++, Ref, RMIA, LiRA) is a pure function of caches, so
adding an attack never costs another forward pass (MIMIR re-uses one pass per sample the same way,
but scores samples one at a time; here they are batched).

Per text the cache holds, for the scored tokens x_1..x_T (the first token is context only, as in
MIMIR, because nothing predicts it):
  * `token_ids`                   the tokens that were scored (after truncation);
  * `logprobs[t]`  = log p(x_t | x_<t), the log-probability of the actual next token;
  * `mu[t]`        = E_{v~p(.|x_<t)}[log p(v | x_<t)]  (minus the entropy), and
  * `var[t]`       = Var_{v~p(.|x_<t)}[log p(v | x_<t)], both over the model's own next-token
                     distribution (Min-K%++, Zhang et al. 2024, needs them);
  * byte counts and the zlib-compressed size of the scored text (zlib attack, Carlini et al. 2021);
  * the SHA-256 of the text (to check that two caches cover the same texts in the same order).
RMIA and LiRA need only sequence-level functions of `logprobs`, so nothing else is stored.

Batching: texts are tokenised once, sorted by length (so a batch holds similar lengths and little
padding), right-padded with an attention mask (under a causal mask, padding *after* the real tokens
cannot influence them, so batched scores equal per-text scores up to float rounding).

Unusable texts (not a string, or fewer than 2 tokens: nothing predicts the first token, so a one-token text has
no score) are skipped and counted (`cache.n_skipped`, `cache.skipped`: reason -> count); `cache.source_index[i]`
is the position in the given list of the i-th scored text, so labels given per input text still line up
(`run_membership` does that). Only a batch with no scorable text raises (`NothingUsable`).

Texts longer than the context (`max_length`, default the model's `max_position_embeddings`):
  * `long_texts="truncate"` (default): only the first `max_length` tokens are scored, and
    `cache.truncated[i]` says so; zlib sizes and byte counts then refer to that scored span.
  * `long_texts="window"`: sliding windows of `max_length` tokens with `stride` (default half the
    window); every token after the first is scored exactly once, each window scoring only the tokens
    the previous one did not reach, with at least `max_length - stride` tokens of context (the usual
    strided-perplexity recipe; MIMIR uses stride = max_length // 2).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ._progress import Progress, progress_or_null
from ._usable import NOT_TEXT, TOO_SHORT_TO_SCORE, only_texts, partition
from .batching import DEFAULT_BATCH_TOKENS, right_padded
from .sharding import run_batches_on
from .errors import InputError
from .model import CachedForward, CausalLM

# Elements of a (positions x vocab) float32 block reduced at once. On CPU a block that stays in cache
# (1 MiB) is ~3x faster than one large block (fresh multi-MB temporaries cost page faults on every
# op); on GPUs larger blocks mean fewer kernel launches.
_CPU_CHUNK_ELEMENTS = 1 << 18
_GPU_CHUNK_ELEMENTS = 1 << 24


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ScoreCache:
    """Token-level scores of one model on a list of texts (ragged arrays stored flat + offsets).

    Build it with `score_texts`; attacks read it through the accessors. Holds no raw text.
    """

    text_sha256: list[str]
    token_ids_flat: np.ndarray        # int64, all texts' scored tokens concatenated
    token_offsets: np.ndarray         # int64 (n+1,): text i's tokens are token_ids_flat[o[i]:o[i+1]]
    logprobs_flat: np.ndarray         # float64, log p(x_t | x_<t) for t >= 1, concatenated
    offsets: np.ndarray               # int64 (n+1,): text i's positions are [offsets[i], offsets[i+1])
    mu_flat: np.ndarray | None        # float64, E_p[log p] per position (None if stats=False)
    var_flat: np.ndarray | None       # float64, Var_p[log p] per position
    scored_bytes: np.ndarray          # int64, UTF-8 bytes of the scored span of each text
    zlib_bytes: np.ndarray            # int64, len(zlib.compress(scored span)) (Carlini et al. 2021)
    truncated: np.ndarray             # bool, text longer than max_length and long_texts="truncate"
    model_name: str = "model"
    tokenizer_fingerprint: str = ""
    max_length: int = 0
    long_texts: str = "truncate"
    source_index: np.ndarray | None = None   # int64: position of each scored text in the list given to score_texts
    n_input: int | None = None               # how many texts were given to score_texts
    skipped: dict[str, int] = field(default_factory=dict)  # unusable texts left out: reason -> count

    def __post_init__(self) -> None:
        if self.source_index is None:
            self.source_index = np.arange(len(self.text_sha256), dtype=np.int64)
        if self.n_input is None:
            self.n_input = len(self.text_sha256) + self.n_skipped

    # ---------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self.text_sha256)

    @property
    def n_skipped(self) -> int:
        """Texts given to score_texts that were left out as unusable (see `skipped`)."""
        return sum(self.skipped.values())

    @property
    def has_stats(self) -> bool:
        return self.mu_flat is not None and self.var_flat is not None

    @property
    def n_scored(self) -> np.ndarray:
        """Number of scored positions per text (tokens minus the first)."""
        return np.diff(self.offsets)

    def token_ids(self, i: int) -> np.ndarray:
        return self.token_ids_flat[self.token_offsets[i]:self.token_offsets[i + 1]]

    def logprobs(self, i: int) -> np.ndarray:
        return self.logprobs_flat[self.offsets[i]:self.offsets[i + 1]]

    def mu(self, i: int) -> np.ndarray:
        self._require_stats()
        return self.mu_flat[self.offsets[i]:self.offsets[i + 1]]

    def var(self, i: int) -> np.ndarray:
        self._require_stats()
        return self.var_flat[self.offsets[i]:self.offsets[i + 1]]

    def sum_logprob(self) -> np.ndarray:
        """Log-likelihood of each text's scored tokens, sum_t log p(x_t | x_<t)."""
        return np.add.reduceat(self.logprobs_flat, self.offsets[:-1]) if len(self) else np.zeros(0)

    def mean_logprob(self) -> np.ndarray:
        """Mean token log-probability per text (= minus the LOSS of Yeom et al. 2018)."""
        return self.sum_logprob() / self.n_scored

    def same_tokenizer(self, other: "ScoreCache") -> bool:
        return bool(self.tokenizer_fingerprint) and self.tokenizer_fingerprint == other.tokenizer_fingerprint

    def check_aligned(self, other: "ScoreCache", what: str = "reference") -> None:
        """Raises InputError unless `other` scored the same texts in the same order."""
        if self.text_sha256 != other.text_sha256:
            raise InputError(f"the {what} scores cover different texts (or a different order) than the "
                             "target scores; score the same list of texts with both models")

    def _require_stats(self) -> None:
        if not self.has_stats:
            raise InputError("this ScoreCache was computed with stats=False; Min-K%++ needs "
                             "score_texts(..., stats=True)")

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ScoreCache":
        """A cache restricted to the given texts (in the given order)."""
        idx = np.asarray(indices, dtype=np.int64)

        def gather(flat, offs):
            parts = [flat[offs[i]:offs[i + 1]] for i in idx]
            new_offs = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
            return (np.concatenate(parts) if parts else flat[:0]), new_offs

        tok, tok_offs = gather(self.token_ids_flat, self.token_offsets)
        lp, offs = gather(self.logprobs_flat, self.offsets)
        mu = gather(self.mu_flat, self.offsets)[0] if self.has_stats else None
        var = gather(self.var_flat, self.offsets)[0] if self.has_stats else None
        return ScoreCache(
            text_sha256=[self.text_sha256[i] for i in idx], token_ids_flat=tok, token_offsets=tok_offs,
            logprobs_flat=lp, offsets=offs, mu_flat=mu, var_flat=var,
            scored_bytes=self.scored_bytes[idx], zlib_bytes=self.zlib_bytes[idx],
            truncated=self.truncated[idx], model_name=self.model_name,
            tokenizer_fingerprint=self.tokenizer_fingerprint, max_length=self.max_length,
            long_texts=self.long_texts, source_index=self.source_index[idx], n_input=self.n_input,
            skipped=dict(self.skipped))

    # ---------------------------------------------------------------- persistence (no pickle)
    def save(self, path: str | Path) -> None:
        """Writes an `.npz` (plain arrays + JSON metadata; loadable with allow_pickle=False)."""
        meta = {"model_name": self.model_name, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "max_length": self.max_length, "long_texts": self.long_texts, "format": 2,
                "n_input": self.n_input, "skipped": self.skipped}
        empty = np.zeros(0)
        np.savez(path, text_sha256=np.array(self.text_sha256, dtype="U64"),
                 token_ids_flat=self.token_ids_flat, token_offsets=self.token_offsets,
                 logprobs_flat=self.logprobs_flat, offsets=self.offsets,
                 mu_flat=self.mu_flat if self.has_stats else empty,
                 var_flat=self.var_flat if self.has_stats else empty,
                 has_stats=np.array(self.has_stats), scored_bytes=self.scored_bytes,
                 zlib_bytes=self.zlib_bytes, truncated=self.truncated, source_index=self.source_index,
                 meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> "ScoreCache":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                has_stats = bool(z["has_stats"])
                return cls(text_sha256=[str(s) for s in z["text_sha256"]],
                           token_ids_flat=z["token_ids_flat"], token_offsets=z["token_offsets"],
                           logprobs_flat=z["logprobs_flat"], offsets=z["offsets"],
                           mu_flat=z["mu_flat"] if has_stats else None,
                           var_flat=z["var_flat"] if has_stats else None,
                           scored_bytes=z["scored_bytes"], zlib_bytes=z["zlib_bytes"],
                           truncated=z["truncated"], model_name=meta["model_name"],
                           tokenizer_fingerprint=meta["tokenizer_fingerprint"],
                           max_length=int(meta["max_length"]), long_texts=meta["long_texts"],
                           # format 1 files predate skipping: every given text was scored, in order
                           source_index=z["source_index"] if "source_index" in z.files else None,
                           n_input=meta.get("n_input"), skipped=dict(meta.get("skipped") or {}))
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path} is not a ScoreCache file written by ScoreCache.save: {exc}") from exc


@dataclass(frozen=True)
class _Row:
    """One forward-pass row: tokens [start, end) of text `text`, scoring targets from `score_from` on."""

    text: int
    start: int
    end: int
    score_from: int  # absolute token index of the first target this row scores (>= start + 1)


def plan_rows(lengths: Sequence[int], *, max_length: int, long_texts: str,
              stride: int | None) -> list[_Row]:
    """Splits texts into forward-pass rows (one per text, or several windows per long text)."""
    if long_texts not in ("truncate", "window"):
        raise InputError(f"long_texts must be 'truncate' or 'window', not {long_texts!r}")
    rows: list[_Row] = []
    for i, n in enumerate(lengths):
        if n <= max_length or long_texts == "truncate":
            rows.append(_Row(i, 0, min(n, max_length), 1))
            continue
        step = stride or max(1, max_length // 2)
        if not 0 < step <= max_length - 1:
            raise InputError(f"stride must be between 1 and max_length - 1 ({max_length - 1}), not {step}")
        start, scored_to = 0, 1
        while scored_to < n:
            end = min(start + max_length, n)
            rows.append(_Row(i, start, end, scored_to))
            scored_to = end
            start += step
    return rows


def _vocab_moments(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, stats: bool):
    """log p(target), and E_p[log p], Var_p[log p] of the next-token distribution, for logits[rows].

    `logits` is (positions, V); `rows` selects the positions to reduce and `targets[i]` is the token
    that follows position rows[i].
    Chunked over positions so the float32 temporaries stay small whatever the vocabulary size. With
    y = x - max(x), e = exp(y), Z = sum(e): log p = y - log Z, E_p[log p] = E_p[y] - log Z and
    Var_p[log p] = Var_p[y] = E_p[y^2] - E_p[y]^2, which needs one exp over the vocabulary instead of
    the two of log_softmax followed by exp (y <= 0 and is p-weighted, so the subtraction is benign).
    """
    vocab = logits.shape[-1]
    budget = _GPU_CHUNK_ELEMENTS if logits.is_cuda else _CPU_CHUNK_ELEMENTS
    step = max(1, budget // vocab)
    tok, mus, vars_ = [], [], []
    for s in range(0, rows.shape[0], step):
        x, t = logits.index_select(0, rows[s:s + step]).float(), targets[s:s + step, None]
        if not stats:
            tok.append(torch.log_softmax(x, dim=-1).gather(-1, t)[:, 0])
            continue
        y = x - x.amax(-1, keepdim=True)
        # logits more than 1e4 below the maximum have p = 0 exactly; the clamp also turns -inf (masked
        # vocabulary entries) into a finite number, so that p * y is 0 rather than 0 * -inf = NaN.
        y.clamp_(min=-1e4)
        e = y.exp()
        z = e.sum(-1)
        log_z = z.log()
        tok.append(y.gather(-1, t)[:, 0] - log_z)
        ey = e.mul_(y)
        mean_y = ey.sum(-1) / z
        mean_y2 = ey.mul_(y).sum(-1) / z
        mus.append(mean_y - log_z)
        vars_.append((mean_y2 - mean_y * mean_y).clamp_(min=0.0))
    return _to_numpy(tok), (_to_numpy(mus) if stats else None), (_to_numpy(vars_) if stats else None)


def _to_numpy(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).double().cpu().numpy() if parts else np.zeros(0)


def score_texts(lm: CausalLM, texts: Sequence[str], *, batch_size: int = 64, max_length: int | None = None,
                long_texts: str = "truncate", stride: int | None = None, stats: bool = True,
                batch_tokens: int | None = DEFAULT_BATCH_TOKENS, progress: Progress | None = None) -> ScoreCache:
    """Scores every text with one batched, padding-aware forward pass per batch.

    Args:
        lm: the model (see `load_causal_lm`).
        texts: the texts. Items that are not strings or have fewer than 2 tokens are skipped and counted
            (`n_skipped`, `skipped`); `source_index` maps the scored texts back to this list.
        batch_size: at most this many rows per forward pass.
        max_length: context length used (default and maximum: the model's context length).
        long_texts: "truncate" or "window" (see the module docstring).
        stride: window stride for long_texts="window" (default max_length // 2).
        stats: also compute the Min-K%++ moments (mu, var); costs an exp over the vocabulary per token.
        batch_tokens: at most this many padded tokens per forward pass (None: no limit); a pass that runs
            out of memory is retried with half as many (see `attacks.batching`).
        progress: optional progress object (`task(description, total)`), advanced per batch.

    Returns:
        A `ScoreCache` of the usable texts, in the given order.

    Raises:
        NothingUsable: no text can be scored (or none was given).
    """
    given = list(texts)
    context = lm.context_length
    max_length = min(int(max_length or context), context)
    if max_length < 2:
        raise InputError("max_length must be at least 2 tokens")
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    all_ids = lm.encode(only_texts(given))
    usable = partition(given, lambda i, t: NOT_TEXT if not isinstance(t, str)
                       else (TOO_SHORT_TO_SCORE if len(all_ids[i]) < 2 else None))
    usable.require("texts", "pass texts of at least 2 tokens (the first token is never scored)")
    texts = [given[i] for i in usable.kept]
    ids = [all_ids[i] for i in usable.kept]
    rows = plan_rows([len(t) for t in ids], max_length=max_length, long_texts=long_texts, stride=stride)
    order = sorted(range(len(rows)), key=lambda r: rows[r].end - rows[r].start, reverse=True)
    per_row: dict[int, tuple] = {}
    task = progress_or_null(progress).task(f"scoring {len(texts)} texts with {lm.name}", total=len(rows))
    # split over processes (attacks.sharding): the batches count into a tally, which adds every process's counts
    # to the task after each round
    own_task = task if lm.shard is None else lm.shard.tally(task)

    def run(start: int, stop: int) -> None:
        batch = [rows[r] for r in order[start:stop]]
        for j, result in enumerate(_score_batch(lm, ids, batch, stats)):
            per_row[order[start + j]] = result
        own_task.advance(len(batch), tokens=sum(r.end - r.start for r in batch))

    widths = [rows[r].end - rows[r].start for r in order]
    per_row = run_batches_on(lm.shard, widths, run, per_row, max_rows=batch_size, max_tokens=batch_tokens,
                             what="text window", task=task, tally=own_task)
    cache = _assemble(lm, texts, ids, rows, per_row, stats=stats, max_length=max_length, long_texts=long_texts)
    cache.source_index = np.asarray(usable.kept, dtype=np.int64)
    cache.n_input, cache.skipped = len(given), usable.skipped
    return cache


def shared_prefix_logliks(lm: CausalLM, groups: Sequence[Sequence[Sequence[int]]], *, batch_size: int = 64,
                          batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
                          progress: Progress | None = None) -> list[np.ndarray]:
    """Log-likelihood of each token list (the sum of log p over every token after the first, as
    `score_texts(...).sum_logprob()`), for groups of lists that share a long prefix within each group, such as a
    canary's text with each of its reference secrets, or a record's text before a personal-data item with each
    candidate value: a group's prefix runs once per batch and only each list's own tokens run after it, on its
    KV cache. A batch holds the lists of several groups (their prefixes left-padded side by side), so many small
    groups cost about what their tokens do, not one pass each.

    Args:
        lm: the model; its forward must take a KV cache (as for decoding).
        groups: groups of token-id lists, each list of 2 tokens up to the model's context.
        batch_size, batch_tokens: rows and padded tokens per pass, halved on out-of-memory (`attacks.batching`).

    Returns:
        One float64 array per group, in order. Equal to scoring each whole list up to float rounding (tested).

    Raises:
        InputError: a list of fewer than 2 tokens, or longer than the context.
    """
    groups = [[list(t) for t in ids] for ids in groups]
    sizes = [len(t) for ids in groups for t in ids]
    if sizes and (min(sizes) < 2 or max(sizes) > lm.context_length):
        raise InputError(f"shared-prefix scoring needs lists of 2 to {lm.context_length} tokens")
    heads, rows = _prefix_units(groups)
    # longest first (run_batches sizes a batch by its first item); a unit's lists have about the same length, so
    # they stay together and its prefix runs in few batches
    order = sorted(range(len(rows)), key=lambda r: (-(len(heads[rows[r].head]) + len(rows[r].tokens)), rows[r].head))
    forward = CachedForward(lm.model)
    task = progress_or_null(progress).task(f"scoring {len(sizes)} texts after shared prefixes with {lm.name}",
                                           total=len(sizes))
    # split over processes as score_texts is (attacks.sharding): the same batches, every result on every process
    own_task = task if lm.shard is None else lm.shard.tally(task)
    mine: dict[int, tuple] = {}

    def run(start: int, stop: int) -> None:
        batch = [rows[r] for r in order[start:stop]]
        units = sorted({r.head for r in batch})
        slot = {u: j for j, u in enumerate(units)}
        width = max(len(heads[u]) for u in units)
        head_ids = torch.zeros((len(units), width), dtype=torch.long)
        head_mask = torch.zeros_like(head_ids)
        for j, u in enumerate(units):  # left padding: every prefix ends in the last column
            head_ids[j, width - len(heads[u]):], head_mask[j, width - len(heads[u]):] = torch.tensor(heads[u]), 1
        head_ids, head_mask = head_ids.to(lm.device), head_mask.to(lm.device)
        positions = (head_mask.cumsum(-1) - 1).clamp_(min=0)  # (U, P)
        # the cache grows in place with every call, so each batch runs its prefixes afresh
        logits, cache = forward(head_ids, head_mask, positions, last_only=False)  # (U, P, V)
        logp = torch.log_softmax(logits.float(), -1)
        real = (head_mask[:, :-1] * head_mask[:, 1:]).bool()  # position k and the token it predicts are both real
        head_ll = torch.where(real, logp[:, :-1].gather(-1, head_ids[:, 1:, None])[..., 0], 0.0).sum(-1)  # (U,)
        first = logp[:, -1]  # (U, V): each unit's distribution of its lists' first own token
        which = torch.tensor([slot[r.head] for r in batch], device=lm.device)  # (B,)
        cache.batch_select_indices(which)
        tail_ids, tail_mask = right_padded([r.tokens for r in batch], lm.device)  # (B, W) each
        tail_width = tail_ids.shape[1]
        mask = torch.cat([head_mask[which], tail_mask], dim=1)  # (B, P + W)
        starts = head_mask.sum(-1)[which]  # (B,): each list's own tokens start after its prefix
        positions = starts[:, None] + torch.arange(tail_width, device=lm.device)[None]  # (B, W)
        logits, _ = forward(tail_ids, mask, positions, cache, last_only=False)  # (B, W, V)
        # position k of a row predicts its token k + 1: reduce only the real ones (flat indices, as _score_batch)
        where = torch.cat([j * tail_width + torch.arange(len(r.tokens) - 1) for j, r in enumerate(batch)])
        where = where.to(lm.device)
        own = _vocab_moments(logits.reshape(-1, logits.shape[-1]), where, tail_ids.reshape(-1)[where + 1], False)[0]
        sums = np.split(own, np.cumsum([len(r.tokens) - 1 for r in batch])[:-1])
        lead = (head_ll[which] + first[which, tail_ids[:, 0]]).double().cpu().numpy()  # (B,)
        for j, r in enumerate(order[start:stop]):
            mine[r] = (np.array([lead[j] + float(sums[j].sum())]),)
        own_task.advance(len(batch), tokens=sum(len(r.tokens) for r in batch))

    widths = [len(heads[rows[r].head]) + len(rows[r].tokens) for r in order]
    mine = run_batches_on(lm.shard, widths, run, mine, max_rows=batch_size, max_tokens=batch_tokens, what="text",
                          task=task, tally=own_task)
    out = [np.empty(len(ids)) for ids in groups]
    for r, (value,) in mine.items():
        out[rows[r].group][rows[r].index] = value[0]
    return out


class _Own(NamedTuple):
    """One list of shared_prefix_logliks: its group, the prefix it shares (an index into the prefixes), its own
    tokens after that prefix, and its index in the group."""

    group: int
    head: int
    tokens: list[int]
    index: int


def _prefix_units(groups: list[list[list[int]]]) -> tuple[list[list[int]], list[_Own]]:
    """Each group's lists by first token (a group without one shared by all is split), each part's longest common
    prefix that leaves every list at least one token of its own: (the prefixes, one _Own per list)."""
    heads: list[list[int]] = []
    rows: list[_Own] = []
    for g, ids in enumerate(groups):
        parts: dict[int, list[int]] = {}
        for k, t in enumerate(ids):
            parts.setdefault(t[0], []).append(k)
        for first in sorted(parts):  # in one order on every process
            members = parts[first]
            shared, shortest = 1, min(len(ids[k]) for k in members)
            while shared < shortest - 1 and all(ids[k][shared] == ids[members[0]][shared] for k in members):
                shared += 1
            heads.append(ids[members[0]][:shared])
            rows.extend(_Own(g, len(heads) - 1, ids[k][shared:], k) for k in members)
    return heads, rows


def _score_batch(lm: CausalLM, ids: list[list[int]], batch: list[_Row], stats: bool) -> list[tuple]:
    """One right-padded forward pass; (logprobs, mu, var) arrays for each row's scored targets."""
    input_ids, mask = right_padded([ids[r.text][r.start:r.end] for r in batch], lm.device)  # (B, W) each
    width = input_ids.shape[1]
    logits = lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    # Logits at row position k predict token k + 1. Only the scored, non-padded positions of the whole
    # batch are reduced (flat indices into the (rows * width, V) view), so there are no per-row calls.
    where = torch.cat([j * width + torch.arange(r.score_from - r.start - 1, r.end - r.start - 1)
                       for j, r in enumerate(batch)]).to(lm.device)
    moments = _vocab_moments(logits.reshape(-1, logits.shape[-1]), where, input_ids.reshape(-1)[where + 1], stats)
    splits = np.cumsum([r.end - r.score_from for r in batch])[:-1]
    per_moment = [np.split(m, splits) if m is not None else [None] * len(batch) for m in moments]
    return list(zip(*per_moment))


def _assemble(lm, texts, ids, rows, per_row, *, stats, max_length, long_texts) -> ScoreCache:
    """Concatenates per-row results into per-text arrays (rows of one text are in window order)."""
    by_text: dict[int, list[int]] = {}
    for k, r in enumerate(rows):
        by_text.setdefault(r.text, []).append(k)
    tok_parts, lp_parts, mu_parts, var_parts = [], [], [], []
    scored_bytes, zlib_bytes, truncated = [], [], []
    for i, text in enumerate(texts):
        ks = by_text[i]
        end = rows[ks[-1]].end
        tok_parts.append(np.asarray(ids[i][:end], dtype=np.int64))
        lp_parts.append(np.concatenate([per_row[k][0] for k in ks]))
        if stats:
            mu_parts.append(np.concatenate([per_row[k][1] for k in ks]))
            var_parts.append(np.concatenate([per_row[k][2] for k in ks]))
        cut = end < len(ids[i])
        span = lm.decode(ids[i][:end]).encode("utf-8") if cut else text.encode("utf-8")
        scored_bytes.append(len(span))
        zlib_bytes.append(len(zlib.compress(span)))
        truncated.append(cut)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in lp_parts])]).astype(np.int64)
    token_offsets = np.concatenate([[0], np.cumsum([len(p) for p in tok_parts])]).astype(np.int64)
    return ScoreCache(
        text_sha256=[text_sha256(t) for t in texts],
        token_ids_flat=np.concatenate(tok_parts) if tok_parts else np.zeros(0, np.int64),
        token_offsets=token_offsets,
        logprobs_flat=np.concatenate(lp_parts) if lp_parts else np.zeros(0),
        offsets=offsets,
        mu_flat=(np.concatenate(mu_parts) if mu_parts else np.zeros(0)) if stats else None,
        var_flat=(np.concatenate(var_parts) if var_parts else np.zeros(0)) if stats else None,
        scored_bytes=np.asarray(scored_bytes, dtype=np.int64),
        zlib_bytes=np.asarray(zlib_bytes, dtype=np.int64), truncated=np.asarray(truncated, dtype=bool),
        model_name=lm.name, tokenizer_fingerprint=lm.tokenizer_fingerprint, max_length=max_length,
        long_texts=long_texts)
