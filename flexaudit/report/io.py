"""report.json on disk: canonical bytes, validated on write and on read, migrated when older.

The report digest (what signatures, gate results and the pool log bind to) is the SHA-256 of the
compact canonical JSON of the report (sorted keys, no whitespace, UTF-8), so it does not depend on
how the file is indented.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flexaudit.errors import InputError
from flexaudit.fsutil import atomic_write_text, canonical_json
from flexaudit.names import check_read_name
from flexaudit.report.schema import migrate, validate

REPORT_FILE = "report.json"


def compact_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def report_digest(report: dict) -> str:
    return "sha256:" + hashlib.sha256(compact_json(report)).hexdigest()


def report_path(audit: str | Path) -> Path:
    """The report.json of an audit directory (or the file itself); InputError if there is none."""
    audit = Path(audit)
    if audit.is_dir():
        path = audit / REPORT_FILE
        if not path.is_file():
            raise InputError(f"{audit} holds no {REPORT_FILE}: is it an audit directory? (run `flexaudit audit` first)")
        return path
    if audit.is_file():
        return audit
    raise InputError(f"audit directory not found: {audit} (run `flexaudit audit EXPERT_DIR --anchor DIR --out {audit}`)")


def read_report(audit: str | Path) -> dict:
    """Read, migrate to the current schema version and validate a report; InputError if malformed."""
    path = report_path(audit)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 JSON: restore it from the audit") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): restore it from the audit") from None
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    doc = migrate(doc)
    validate(doc, what=str(path))
    check_read_name(doc["subject"]["expert"]["name"], what="the expert name", where=path)
    target = ((doc.get("empirical") or {}).get("audit") or {}).get("target") or {}
    for name in target.get("excluded") or []:
        check_read_name(name, what="an excluded expert's name", where=path)
    return doc


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (reports never hold NaN or infinity)")


def write_report(audit_dir: str | Path, report: dict, *, figures: bool = False) -> Path:
    """Validate `report` and write AUDIT_DIR/report.json atomically (canonical form); returns its path.

    With figures=True also writes AUDIT_DIR/figures/*.svg (log-log ROC, score histograms, extraction
    rates, privacy budget), the same figures the HTML report embeds."""
    validate(report)
    try:
        text = canonical_json(report)
        json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InputError(f"report holds a value JSON cannot represent ({exc})") from None
    audit_dir = Path(audit_dir)
    path = audit_dir / REPORT_FILE
    atomic_write_text(path, text)
    if figures:
        from flexaudit.report.figures import write_figures

        write_figures(audit_dir, report)
    return path
