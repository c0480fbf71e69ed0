"""FA-MIA-ZLIB: zlib-entropy calibration (Carlini et al. 2021, "Extracting Training Data from Large
Language Models", USENIX Security).

MIMIR's form is s = L(x) / zlib(x) with lower = member, zlib(x) = len(zlib.compress(utf8(x))); we
return -s = mean log-prob / zlib bytes. (Carlini's code ranks by zlib / L; for L > 0 both orderings
are the same, because -1/u is increasing in u.) Texts that compress well (repetitive, low entropy)
are expected to have low loss anyway; dividing by their compressed size discounts that.
"""

from __future__ import annotations

import numpy as np

from ..registry import register_attack
from .context import MembershipContext


@register_attack("FA-MIA-ZLIB", name="zlib ratio", citation="Carlini et al. 2021 (USENIX Security), arXiv:2012.07805")
def zlib_score(ctx: MembershipContext) -> np.ndarray:
    """Mean token log-likelihood divided by the zlib-compressed size (bytes) of the scored text."""
    return ctx.target.mean_logprob() / ctx.target.zlib_bytes
