"""FA-MIA-LOSS: the loss attack (Yeom, Giacomelli, Fredrikson, Jha 2018, "Privacy Risk in Machine
Learning: Analyzing the Connection to Overfitting", CSF).

Score = mean token log-probability = -L(x), so lower loss means more likely a member. Same statistic
as MIMIR's `loss` attack, with the sign flipped to our higher-is-member convention.
"""

from __future__ import annotations

import numpy as np

from ..registry import register_attack
from .context import MembershipContext


@register_attack("FA-MIA-LOSS", name="LOSS", citation="Yeom et al. 2018 (CSF), arXiv:1709.01604")
def loss_score(ctx: MembershipContext) -> np.ndarray:
    """Mean token log-likelihood under the target (minus the loss)."""
    return ctx.target.mean_logprob()
