"""FA-MIA-RMIA: Robust Membership Inference Attack, offline, one reference model (Zarifzadeh, Liu,
Shokri 2024, "Low-Cost High-Power Membership Inference Attacks", ICML; arXiv:2312.03262).

Pairwise likelihood ratio of x against population samples z (known non-members):
    LR(x, z) = [Pr(x|theta) / Pr(x)] / [Pr(z|theta) / Pr(z)],
    score(x) = Pr_{z ~ population}( LR(x, z) >= gamma ).
Pr(.|theta) for a causal LM is the geometric-mean token probability exp(mean log p), as in ML Privacy
Meter's `get_signals.py`. Offline (only OUT reference models; the anchor is one) the marginal is
    Pr(x) = 1/2 ((1 + a) Pr(x|ref) + (1 - a)),
approximating the unavailable IN models by P_IN ~ a P_OUT + (1 - a). Defaults: gamma = 1 (ML Privacy
Meter's code), a = 0.33 (LeakPro's default; Privacy Meter tunes a on a paired reference model, which
a single frozen anchor does not provide). Computed in log space. When the population is the audit's own
non-members, each text is left out of its own comparison set.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError, MissingAttackInput
from ..registry import register_attack
from .context import MembershipContext, comparable_logprob


def _log_ratio(target_lp: np.ndarray, reference_lp: np.ndarray, a: float) -> np.ndarray:
    """log Pr(x|theta) - log Pr(x), Pr(x) = ((1 + a) Pr(x|ref) + (1 - a)) / 2, in log space."""
    log_one_minus_a = math.log(1 - a) if a < 1 else -np.inf
    log_marginal = np.logaddexp(math.log(1 + a) + reference_lp, log_one_minus_a) - math.log(2)
    return target_lp - log_marginal


@register_attack("FA-MIA-RMIA", name="RMIA (offline, anchor as reference)", needs=("reference", "population"),
                 citation="Zarifzadeh, Liu, Shokri 2024 (ICML), arXiv:2312.03262",
                 defaults={"gamma": 1.0, "a": 0.33})
def rmia_score(ctx: MembershipContext, gamma: float = 1.0, a: float = 0.33) -> np.ndarray:
    """Fraction of population texts z with LR(x, z) >= gamma."""
    if not 0 <= a <= 1 or gamma <= 0:
        raise InputError(f"RMIA needs 0 <= a <= 1 and gamma > 0 (got a={a}, gamma={gamma})")
    reference = ctx.require_reference("FA-MIA-RMIA")
    population = ctx.require_population("FA-MIA-RMIA")
    ratio_x = _log_ratio(*comparable_logprob(ctx.target, reference), a)
    if population.reference is None:
        raise MissingAttackInput("FA-MIA-RMIA needs the population texts scored by the reference model too")
    ratio_z = np.sort(_log_ratio(*comparable_logprob(population.target, population.reference), a))
    # LR(x, z) >= gamma  <=>  ratio_z <= ratio_x - log(gamma)
    counts = np.searchsorted(ratio_z, ratio_x - math.log(gamma), side="right").astype(np.float64)
    loo = population.leave_one_out >= 0
    sizes = np.full(ratio_x.shape, float(ratio_z.size))
    counts[loo] -= float(math.log(gamma) <= 0)  # x compared with itself: LR = 1 >= gamma iff gamma <= 1
    sizes[loo] -= 1
    return np.divide(counts, sizes, out=np.zeros_like(counts), where=sizes > 0)
