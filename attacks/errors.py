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


class NothingUsable(InputError):
    """Every item of a batch (texts, prompts, canaries) was unusable, so there is nothing to measure.

    Raised only then: a batch with some usable items is attacked on those, and the result counts the rest
    (`n_skipped`, `skipped`). `skipped` maps each reason to how many items had it; `n_items` is the batch size.
    """

    def __init__(self, message: str, *, skipped: dict[str, int], n_items: int):
        super().__init__(message)
        self.skipped = dict(skipped)
        self.n_items = n_items

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


__all__ = ["InputError", "IntegrityError", "MissingAttackInput", "NothingUsable"]
