"""Errors raised by the attack library.

They are the `flexaudit.errors` classes (each carries the exit code the command line maps it to), so
`flexaudit audit` can report any of them as one clear line; `flexaudit.errors` is plain infrastructure
with no training code behind it, which keeps the dependency direction `attacks -> (nothing from training)`.
"""

from __future__ import annotations

from flexaudit.errors import InputError, IntegrityError


class MissingAttackInput(InputError):
    """An attack needs an input that was not supplied (a reference model, shadow models, population texts).

    Raised instead of silently substituting something else: a number in a report is only ever a
    measured one.
    """


__all__ = ["InputError", "IntegrityError", "MissingAttackInput"]
