"""Errors raised by the attack library: a failure the caller can act on, in one line.

The library is self-contained (it imports nothing of flexaudit), so it has its own classes. Each carries the
exit code a command line should map it to (2 bad input, 3 integrity), the same contract as flexaudit's own
errors; `flexaudit`'s command line reports them exactly like its own.
"""

from __future__ import annotations


class AttackError(Exception):
    """Base class: bad input to an attack, never a programming error."""

    exit_code = 2

    def __init__(self, message: str):
        if "\n" in message:
            raise ValueError("error messages are a single line")
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class InputError(AttackError):
    """A missing, malformed or unusable input (texts, scores, a model directory, a setting)."""

    exit_code = 2


class IntegrityError(AttackError):
    """A model directory that must not be loaded: pickle weights, non-finite or mismatched tensors."""

    exit_code = 3


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


__all__ = ["AttackError", "InputError", "IntegrityError", "MissingAttackInput", "NothingUsable"]
