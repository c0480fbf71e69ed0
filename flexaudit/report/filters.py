"""Text helpers shared by the templates and the gate's formatters: number formatting and Markdown escaping.

Markdown has no autoescape: every value from a report (expert names, warnings, reasons, training-derived
text with --reveal) goes through `md_escape`, which neutralises HTML (as entities, which Markdown
renders literally), Markdown emphasis/links/code/tables and line breaks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]|~])")
_MD_LEADING = re.compile(r"^(\s*)(\d*)([#+\-=.)])(?=\s|$)")


def md_escape(value: object) -> str:
    s = "" if value is None else str(value)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = re.sub(r"[\r\n\t]+", " ", s)
    # block syntax only counts at the start of a line: "# h", "- item", "1. item", "1) item"
    return _MD_LEADING.sub(lambda m: m.group(1) + m.group(2) + "\\" + m.group(3), s)


def num(x: object, digits: int = 3) -> str:
    """A number for people: 3 significant digits, thousands separators for big ones, n/a for missing."""
    if x is None or isinstance(x, bool):
        return "n/a" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "n/a"
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) < 1e-3:
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def pct(x: object, digits: int = 1) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return "n/a"
    return f"{100 * float(x):.{digits}f}%"


def interval(ci: dict | None, *, percent: bool = False) -> str:
    if not ci:
        return "n/a"
    f = pct if percent else num
    return f"[{f(ci.get('low'))}, {f(ci.get('high'))}]"


def short_digest(d: str | None, n: int = 19) -> str:
    return "n/a" if not d else (d if len(d) <= n else d[:n] + "…")


def skipped(result: object, noun: str = "items") -> str:
    """'2 texts skipped as unusable (1 fewer than 2 tokens, 1 not a string)' for an attack result's
    `n_skipped`/`skipped` (what the attack library counts); '' when nothing was skipped or not recorded."""
    if not isinstance(result, Mapping):
        return ""
    counts = result.get("skipped") or {}
    n = result.get("n_skipped") or sum(counts.values())
    if not n:
        return ""
    detail = ", ".join(f"{c} {reason}" for reason, c in counts.items())
    return f"{n} {noun} skipped as unusable" + (f" ({detail})" if detail else "")
