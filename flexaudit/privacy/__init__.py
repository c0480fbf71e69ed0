"""Differential-privacy accounting and the privacy-budget ledger.

The facade: epsilon calculators over three accountants (``prv`` default, ``rdp``, ``pld``) with
one fallback chain (``account``: prv -> pld -> rdp, naming the accountant that produced each figure), the
noise search, the independent cross-check, the default-delta rule, and the persisted ledger that
composes every run on the same dataset and refuses a run that would exceed its cap.
"""

from flexaudit.privacy.accountants import (
    DEFAULT_ACCOUNTANT,
    FALLBACK_ORDER,
    MAX_NOISE_MULTIPLIER,
    MAX_TIGHT_EPSILON,
    PRV_EPS_ERROR,
    Accountant,
    AccountantFailure,
    CrossCheck,
    EpsilonReport,
    Segment,
    account,
    account_all,
    available_accountants,
    create_accountant,
    cross_check,
    default_delta,
    epsilon,
    epsilon_of_history,
    fallback_order,
    noise_multiplier_for,
    normalize_history,
    register_accountant,
    segment,
)
from flexaudit.privacy.ledger import (
    NO_FORMAL_GUARANTEE,
    SCHEMA_VERSION,
    BudgetCheck,
    DatasetTotal,
    Ledger,
    RunRecord,
    default_ledger_path,
)

__all__ = [
    "DEFAULT_ACCOUNTANT",
    "FALLBACK_ORDER",
    "MAX_NOISE_MULTIPLIER",
    "MAX_TIGHT_EPSILON",
    "PRV_EPS_ERROR",
    "Accountant",
    "AccountantFailure",
    "CrossCheck",
    "EpsilonReport",
    "Segment",
    "account",
    "account_all",
    "available_accountants",
    "create_accountant",
    "cross_check",
    "default_delta",
    "epsilon",
    "epsilon_of_history",
    "fallback_order",
    "noise_multiplier_for",
    "normalize_history",
    "register_accountant",
    "segment",
    "NO_FORMAL_GUARANTEE",
    "SCHEMA_VERSION",
    "BudgetCheck",
    "DatasetTotal",
    "Ledger",
    "RunRecord",
    "default_ledger_path",
]
