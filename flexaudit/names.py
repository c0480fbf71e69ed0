"""The one pattern every name and identifier must match: expert names, owner names, waiver ids.

    1 to 64 characters: ASCII letters, digits, '.', '_' and '-', starting with a letter or a digit.

Names travel: into directory names, SQLite rows, HTML and Markdown reports, SARIF, terminal output. A name that
could be a path (`../../x`), markup (`<script>`), a control character or nothing at all is refused where it
enters: with InputError (exit 2) when a user typed it, and with IntegrityError (exit 3) when it was read from a
file another party wrote (a package manifest, an imported config, a pool, a policy, a report, a waiver), since
flexaudit never writes such a name itself.
"""

from __future__ import annotations

import re

from flexaudit.errors import InputError, IntegrityError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
RESERVED_EXPERT_NAMES = {"public", "anchor"}  # slot 0 of every merged model is "public"


def _shown(value: object) -> str:
    """The rejected value, safe to print: escaped, and cut short."""
    text = ascii(value)
    return text if len(text) <= 48 else text[:45] + "..."


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_PATTERN.match(value) is not None


def check_name(value: object, *, what: str = "name") -> str:
    """A name the user typed; InputError (exit 2) if it does not match the pattern."""
    if not is_name(value):
        raise InputError(f"invalid {what} {_shown(value)}: use {NAME_RULE}")
    return value


def check_expert_name(value: object) -> str:
    """An expert name the user typed: the pattern, and not a reserved slot name."""
    check_name(value, what="expert name")
    if value.lower() in RESERVED_EXPERT_NAMES:
        raise InputError(f"invalid expert name {value!r}: 'public' and 'anchor' are reserved")
    return value


def check_read_name(value: object, *, what: str, where: object) -> str:
    """A name read from a file another party wrote; IntegrityError (exit 3) if it does not match the pattern."""
    if not is_name(value):
        raise IntegrityError(f"{where}: {what} {_shown(value)} is not a valid name ({NAME_RULE}); the file was "
                             "edited or written by another tool: obtain it again from its source")
    return value
