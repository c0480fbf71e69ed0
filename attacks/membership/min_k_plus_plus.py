"""FA-MIA-MINKPP: Min-K%++ (Zhang et al. 2025, "Min-K%++: Improved Baseline for Detecting
Pre-Training Data from Large Language Models", ICLR; arXiv:2404.02936).

Each token log-probability is standardised against the model's own next-token distribution:
    z_t = (log p(x_t | x_<t) - mu_t) / sigma_t,
    mu_t = E_{v~p(.|x_<t)}[log p(v | x_<t)],  sigma_t^2 = Var_{v~p(.|x_<t)}[log p(v | x_<t)],
and the score is the mean of the lowest k fraction of z_t (default k = 0.2). Training makes x_t a
local maximum of the distribution, which z_t measures independently of how peaked p is.
mu_t and sigma_t come from the scoring pass (`score_texts(..., stats=True)`).
"""

from __future__ import annotations

import numpy as np

from ..registry import register_attack
from .context import MembershipContext, lowest_k_mean

# sigma_t = 0 only for a one-hot next-token distribution, where log p(x_t) = mu_t = 0 too; the floor
# keeps z_t finite there (0 / tiny = 0) instead of NaN.
_MIN_SIGMA = 1e-12


@register_attack("FA-MIA-MINKPP", name="Min-K%++", needs=("stats",),
                 citation="Zhang et al. 2025 (ICLR), arXiv:2404.02936", defaults={"k": 0.2})
def min_k_plus_plus_score(ctx: MembershipContext, k: float = 0.2) -> np.ndarray:
    """Mean of the lowest k fraction of standardised token log-probabilities."""
    cache = ctx.target
    cache._require_stats()
    z = (cache.logprobs_flat - cache.mu_flat) / np.maximum(np.sqrt(np.maximum(cache.var_flat, 0.0)), _MIN_SIGMA)
    return lowest_k_mean(z, cache.offsets, k)
