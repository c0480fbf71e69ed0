"""FA-MIA-LIRA: Likelihood Ratio Attack, offline (Carlini, Chien, Nasr, Song, Terzis, Tramèr 2022,
"Membership Inference Attacks From First Principles", IEEE S&P; arXiv:2112.03570).

Needs shadow models that did NOT train on the audit texts (OUT models), e.g. experts trained the
same way on disjoint data, each scored on the same texts (`shadows=[ScoreCache, ...]`). Without them
the attack raises `MissingAttackInput`: it is listed, never faked with some other model.

Statistic per text and model: the mean over tokens of the logit-scaled token confidence
    phi_t = log p_t - log(1 - p_t),  p_t = p(x_t | x_<t)
(the paper's phi(p) = log(p / (1 - p)), computed stably from log p_t; for sequences we average over
tokens). OUT distribution per text: mu_out = median over shadows; sigma_out = per-text std over
shadows when there are at least `per_example_variance_from` shadows (default 64), else the "fixed
variance" of the reference code (`plot.py`), the std of all OUT values pooled. Offline score: the
one-sided test Pr[Z <= phi_obs], Z ~ N(mu_out, sigma_out^2), returned as its log (norm.logcdf) so
that strong members do not all tie at 1.0.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import InputError, MissingAttackInput
from ..registry import register_attack
from ..scoring import ScoreCache
from .context import MembershipContext


def logit_confidence(cache: ScoreCache) -> np.ndarray:
    """Per text, mean_t [log p_t - log(1 - p_t)] (log1p(-exp(l)) is exact for l close to 0 too)."""
    lp = np.minimum(cache.logprobs_flat, -1e-12)  # p_t = 1 exactly would give +inf
    phi = lp - np.log(-np.expm1(lp))
    return np.add.reduceat(phi, cache.offsets[:-1]) / cache.n_scored


@register_attack("FA-MIA-LIRA", name="LiRA (offline)", needs=("shadows",),
                 citation="Carlini et al. 2022 (IEEE S&P), arXiv:2112.03570",
                 defaults={"per_example_variance_from": 64})
def lira_score(ctx: MembershipContext, per_example_variance_from: int = 64) -> np.ndarray:
    """log Pr[Z <= phi(x)] with Z the Gaussian fitted on OUT shadow models' phi(x)."""
    if not ctx.shadows:
        raise MissingAttackInput("FA-MIA-LIRA needs shadow models: pass shadows=[ScoreCache, ...], each the "
                                 "scores of the same texts under a model trained like the target on data "
                                 "that excludes them (LiRA is not run without them)")
    for s in ctx.shadows:
        ctx.target.check_aligned(s, what="shadow-model")
        if not ctx.target.same_tokenizer(s):
            raise InputError("LiRA shadow models must use the target's tokenizer (the statistic is per token)")
    observed = logit_confidence(ctx.target)
    out = np.stack([logit_confidence(s) for s in ctx.shadows], axis=1)  # (texts, shadows)
    mu = np.median(out, axis=1)
    if out.shape[1] >= max(2, per_example_variance_from):
        sigma = out.std(axis=1)
    else:
        sigma = np.full(mu.shape, out.std())
    return stats.norm.logcdf(observed, loc=mu, scale=np.maximum(sigma, 1e-12))
