"""FA-EXT-PROB: probabilistic (n, p)-discoverable extraction (Hayes et al. 2024, "Measuring
memorization in language models via probabilistic extraction", arXiv:2410.19482).

Greedy yes/no extraction ignores how models are actually sampled. Instead, for each document's
(prefix, suffix) window compute the probability that the *deployed* decoding scheme emits the suffix:
    p_z = prod_t p_decode(s_t | prefix, s_<t),
with p_decode the temperature/top-k/top-p-filtered, renormalised distribution (`decoding_logprobs`,
the same function the sampler uses; a suffix token outside the top-k/top-p set makes p_z = 0). This
is one teacher-forced forward pass per document, no sampling. Then
    P(extracted within n queries) = 1 - (1 - p_z)^n,
and a document is (n, p)-extractable when that is >= p. Reported per n: the expected extraction
rate (mean of P over documents) and the (n, p)-extractable rate with its interval. Documents without a
(prefix, suffix) window (and items that are no text) are skipped and counted (`n_skipped`, `skipped` by
reason); only a batch with no usable document raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import metrics
from .._progress import Progress, progress_or_null
from .._usable import skip_fields
from ..batching import right_padded
from ..sharding import run_batches_on
from ..errors import InputError
from ..model import CausalLM
from ..registry import register_attack
from ._common import check_fits, document_hash, document_windows
from .decoding import PAPER_SAMPLING, SamplingConfig, decoding_logprobs

DEFAULT_QUERIES = (1, 10, 100, 1000)


def extraction_probability(log_p: np.ndarray, n: int) -> np.ndarray:
    """1 - (1 - p)^n computed from log p without cancellation (-expm1(n log1p(-p)))."""
    p = np.exp(np.asarray(log_p, dtype=np.float64))
    with np.errstate(divide="ignore"):
        return -np.expm1(n * np.log1p(-np.minimum(p, 1.0)))


@dataclass
class ProbabilisticExtractionResult:
    attack_id: str
    params: dict[str, Any]
    n_documents: int
    n_skipped: int
    by_queries: dict[int, dict[str, Any]]  # n -> {"expected_rate", "extractable": Rate}
    per_document: list[dict[str, Any]]     # {"sha256", "offset", "log_p"}
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # why documents were skipped: reason -> count

    def as_dict(self) -> dict:
        return {"attack_id": self.attack_id, "params": dict(self.params), "n_documents": self.n_documents,
                **skip_fields(self.skipped, self.n_skipped),
                "by_queries": {str(n): {"expected_rate": metrics._f(v["expected_rate"]),
                                        "extractable": v["extractable"].as_dict()}
                               for n, v in self.by_queries.items()},
                "per_document": [_doc_json(d) for d in self.per_document],
                "warnings": list(self.warnings)}


def _doc_json(doc: dict) -> dict:
    """JSON has no -inf: a suffix the scheme can never emit gets log_p null and impossible true."""
    lp = doc["log_p"]
    return {**doc, "log_p": metrics._f(lp) if lp is not None else None,
            "impossible": bool(lp is not None and np.isneginf(lp))}


def suffix_logprobs(lm: CausalLM, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]], *,
                    sampling: SamplingConfig, batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
    """log p_decode(suffix | prefix) per pair, teacher-forced, batched with right padding."""
    order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]) + len(suffixes[i]), reverse=True)
    out = np.zeros(len(prefixes))
    task = progress_or_null(progress).task(f"scoring {len(prefixes)} suffixes", total=len(prefixes))
    # split over processes (attacks.sharding): the batches count into a tally, which adds every process's counts
    # to the task after each round
    own_task = task if lm.shard is None else lm.shard.tally(task)
    mine: dict[int, tuple] = {}

    def run(first: int, stop: int) -> None:
        rows = order[first:stop]
        seqs = [list(prefixes[i]) + list(suffixes[i]) for i in rows]
        ids, mask = right_padded(seqs, lm.device)  # (B, W) each
        logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for j, i in enumerate(rows):
            start, end = len(prefixes[i]), len(seqs[j])
            logp = decoding_logprobs(logits[j, start - 1:end - 1], sampling)
            target = ids[j, start:end]
            mine[i] = (np.float64(logp.gather(-1, target[:, None]).sum()),)
        own_task.advance(len(rows))

    widths = [len(prefixes[i]) + len(suffixes[i]) for i in order]
    # batches of batch_size pairs, longest first
    mine = run_batches_on(lm.shard, widths, run, mine, max_rows=batch_size, max_tokens=None, what="prefix and suffix",
                          task=task, tally=own_task)
    for i, (value,) in mine.items():
        out[i] = float(value)
    return out


@register_attack("FA-EXT-PROB", name="Probabilistic extraction", kind="extraction",
                 citation="Hayes et al. 2024, arXiv:2410.19482",
                 defaults={"prefix_len": 32, "suffix_len": 32, "p_threshold": 0.5})
def probabilistic_extraction(lm: CausalLM, texts: Sequence[str], *, prefix_len: int = 32, suffix_len: int = 32,
                             sampling: SamplingConfig = PAPER_SAMPLING, n_queries: Sequence[int] = DEFAULT_QUERIES,
                             p_threshold: float = 0.5, offset: str | int = "start", seed: int = 0,
                             batch_size: int = 32, alpha: float = 0.05,
                             progress: Progress | None = None) -> ProbabilisticExtractionResult:
    """Per document p(suffix | prefix) under `sampling`, and P(extracted within n queries).

    Raises:
        NothingUsable: no document has a prefix + suffix window (the message counts them by reason).
    """
    if not 0 < p_threshold <= 1:
        raise InputError("p_threshold must be in (0, 1]")
    if any(n < 1 for n in n_queries):
        raise InputError("every number of queries must be at least 1")
    check_fits(lm, prefix_len + suffix_len)
    texts = list(texts)
    ids, starts, usable = document_windows(lm, texts, prefix_len + suffix_len, offset, seed)
    todo = usable.kept
    prefixes = [ids[i][starts[i]:starts[i] + prefix_len] for i in todo]
    suffixes = [ids[i][starts[i] + prefix_len:starts[i] + prefix_len + suffix_len] for i in todo]
    log_p = suffix_logprobs(lm, prefixes, suffixes, sampling=sampling, batch_size=batch_size, progress=progress)
    per_doc = [{"sha256": document_hash(t), "offset": None, "log_p": None} for t in texts]
    for i, lp in zip(todo, log_p):
        per_doc[i].update(offset=starts[i], log_p=float(lp))
    by_queries = {}
    for n in n_queries:
        prob = extraction_probability(log_p, n)
        by_queries[int(n)] = {"expected_rate": float(prob.mean()),
                              "extractable": metrics.rate(k=int((prob >= p_threshold).sum()), n=len(todo),
                                                           alpha=alpha)}
    return ProbabilisticExtractionResult(
        attack_id="FA-EXT-PROB",
        params={"prefix_len": prefix_len, "suffix_len": suffix_len, "p_threshold": p_threshold,
                "offset": offset, "seed": seed, "decoding": sampling.as_dict(), "n_queries": list(n_queries)},
        n_documents=len(todo), n_skipped=usable.n_skipped, by_queries=by_queries,
        per_document=per_doc, skipped=usable.skipped)
