"""What a membership attack sees: score caches, never labels.

An attack gets the target's `ScoreCache`, optionally the reference model's (the frozen public anchor,
which saw none of the owner's data), optional shadow models' caches, and a population of texts known
not to be members (RMIA's z samples). It never sees which audit texts are members, so it cannot
accidentally use the labels it is evaluated on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, MissingAttackInput
from ..scoring import ScoreCache


@dataclass(frozen=True)
class Population:
    """Non-member texts scored by the target and by the reference model (RMIA's z samples).

    `leave_one_out[i]` is the index in the population of audit text i when that text is itself part
    of the population (so it is not compared with itself), else -1.
    """

    target: ScoreCache
    reference: ScoreCache | None
    leave_one_out: np.ndarray


@dataclass(frozen=True)
class MembershipContext:
    target: ScoreCache
    reference: ScoreCache | None = None
    shadows: tuple[ScoreCache, ...] = ()
    population: Population | None = None

    def require_reference(self, attack_id: str) -> ScoreCache:
        if self.reference is None:
            raise MissingAttackInput(f"{attack_id} needs a reference model: score the same texts with the "
                                     "frozen anchor and pass reference=<its ScoreCache>")
        return self.reference

    def require_population(self, attack_id: str) -> Population:
        if self.population is None:
            raise MissingAttackInput(f"{attack_id} needs population (non-member) texts: pass population "
                                     "caches or include non-members in the audit set")
        return self.population


def comparable_logprob(target: ScoreCache, reference: ScoreCache) -> tuple[np.ndarray, np.ndarray]:
    """Sequence log-likelihoods of the same texts under two models, on a common scale.

    With the same tokenizer (our product: expert and anchor share one) the per-token mean is used. With
    different tokenizers per-token means are not comparable (token counts differ), so each model's total
    log-likelihood is divided by the UTF-8 bytes it scored: log-likelihood per byte, a property of the
    text rather than of the tokenisation.
    """
    if target.same_tokenizer(reference):
        return target.mean_logprob(), reference.mean_logprob()
    return target.sum_logprob() / target.scored_bytes, reference.sum_logprob() / reference.scored_bytes


def lowest_k_mean(values: np.ndarray, offsets: np.ndarray, k: float) -> np.ndarray:
    """Per text, the mean of its floor(k * n) smallest values (at least one): the Min-K% reduction."""
    if not 0 < k <= 1:
        raise InputError(f"Min-K% needs k in (0, 1], not {k}")
    out = np.empty(len(offsets) - 1)
    for i in range(len(offsets) - 1):
        v = values[offsets[i]:offsets[i + 1]]
        n = max(1, int(np.floor(k * v.size)))
        out[i] = np.partition(v, n - 1)[:n].mean()
    return out
