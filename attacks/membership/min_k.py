"""FA-MIA-MINK: Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language
Models", ICLR; arXiv:2310.16789).

Score = mean of the floor(k * T) lowest token log-probabilities (at least one token), default k = 0.2.
Members rarely contain tokens the model finds very surprising; averaging only the worst tokens
ignores the easy ones every model gets right. (MIMIR returns minus this, lower = member.)
"""

from __future__ import annotations

import numpy as np

from ..registry import register_attack
from .context import MembershipContext, lowest_k_mean


@register_attack("FA-MIA-MINK", name="Min-K%", citation="Shi et al. 2024 (ICLR), arXiv:2310.16789",
                 defaults={"k": 0.2})
def min_k_score(ctx: MembershipContext, k: float = 0.2) -> np.ndarray:
    """Mean of the lowest k fraction of token log-probabilities."""
    return lowest_k_mean(ctx.target.logprobs_flat, ctx.target.offsets, k)
