"""FA-MIA-REF: reference-model calibration (Carlini et al. 2021; Mireshghallah et al. 2022,
"Quantifying Privacy Risks of Masked Language Models Using Membership Inference Attacks").

Score = log-likelihood under the target minus log-likelihood under a reference model that did not
see the audit texts. For an expert, the frozen public anchor is exactly that model (same tokenizer,
same architecture, before the owner's data), which removes how "easy" a text is in general and leaves
what the owner's data added. Per-token means with one tokenizer, per-byte otherwise
(`comparable_logprob`). MIMIR's `ref` is the negation (lower = member).
"""

from __future__ import annotations

import numpy as np

from ..registry import register_attack
from .context import MembershipContext, comparable_logprob


@register_attack("FA-MIA-REF", name="Reference (target - anchor)", needs=("reference",),
                 citation="Carlini et al. 2021, arXiv:2012.07805; Mireshghallah et al. 2022, arXiv:2203.03929")
def reference_score(ctx: MembershipContext) -> np.ndarray:
    """Target log-likelihood minus reference-model log-likelihood."""
    reference = ctx.require_reference("FA-MIA-REF")
    target, ref = comparable_logprob(ctx.target, reference)
    return target - ref
