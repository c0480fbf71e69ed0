"""The errors the library raises, each carrying the exit code the command line maps it to.

Exit-code contract (DESIGN.md), identical for every command:
    0  success / gate passed
    1  policy violation (the gate failed, a privacy budget would be exceeded)
    2  usage, input or tool error (fail closed)
    3  integrity failure (digest or signature mismatch, disallowed file format, anchor mismatch)

Every message is one line that says what is wrong and what to do about it.
"""

from __future__ import annotations


class FlexauditError(Exception):
    """Base class: a failure the user can act on. Never raised for programming errors."""

    exit_code = 2

    def __init__(self, message: str):
        if "\n" in message:
            raise ValueError("error messages are a single line")
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class InputError(FlexauditError):
    """A missing, unreadable or malformed input file, or an argument that cannot work."""

    exit_code = 2


class NotImplementedMethod(FlexauditError):
    """A method that exists in the interface but is not implemented yet."""

    exit_code = 2


class IntegrityError(FlexauditError):
    """Digest mismatch, disallowed file format (pickle), wrong shapes, non-finite weights, anchor mismatch."""

    exit_code = 3


class PolicyViolation(FlexauditError):
    """A policy says no: a gate failed or a privacy budget would be exceeded."""

    exit_code = 1


def require_at_least(options: object, bounds: dict[str, int], *, flags: tuple[str, ...]) -> None:
    """Raise InputError for the first field of `options` under its bound in `bounds`, naming it as its command-line
    flag (`--max-documents`) where it is one of `flags`, else as Class.field (a setting of the library alone)."""
    for name, low in bounds.items():
        value = getattr(options, name)
        if value < low:
            what = f"--{name.replace('_', '-')}" if name in flags else f"{type(options).__name__}.{name}"
            raise InputError(f"{what} must be at least {low}, got {value}")
