"""Membership-inference attacks (one file per attack) and `run_membership`.

Importing this package registers the built-in attacks:
FA-MIA-LOSS, FA-MIA-ZLIB, FA-MIA-MINK, FA-MIA-MINKPP, FA-MIA-REF, FA-MIA-RMIA, FA-MIA-LIRA.
Convention everywhere: higher score = more likely a member.
"""

from . import lira, loss, min_k, min_k_plus_plus, reference, rmia, zlib_ratio  # noqa: F401  (registration)
from .context import MembershipContext, Population, comparable_logprob
from .run import MembershipReport, MembershipResult, run_membership

__all__ = ["MembershipContext", "MembershipReport", "MembershipResult", "Population", "comparable_logprob",
           "run_membership"]
