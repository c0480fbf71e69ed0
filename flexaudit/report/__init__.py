"""Compliance reports: the canonical report.json of an audit, and the documents rendered from it.

    from flexaudit.report import build_report, write_report, read_report, render_report
    report = build_report(package_dir, anchor_digest=..., membership=..., extraction=..., hygiene=...)
    write_report(audit_dir, report, figures=True)     # validated, canonical, atomic
    render_report(audit_dir, formats=("html", "md"))   # Jinja2 templates from reports/templates

See flexaudit.report.build for the exact shapes of the attack sections, flexaudit.report.schema for
versioning and migration, and flexaudit.gate for judging a report against a policy.
"""

from flexaudit.report.build import build_report
from flexaudit.report.io import REPORT_FILE, read_report, report_digest, report_path, write_report
from flexaudit.report.schema import MIGRATIONS, SCHEMA_VERSION, migrate, validate

__all__ = ["build_report", "write_report", "read_report", "report_digest", "report_path", "REPORT_FILE",
           "SCHEMA_VERSION", "MIGRATIONS", "migrate", "validate", "render_report"]


def render_report(*args, **kwargs):
    """See flexaudit.report.render.render_report (imported lazily: it needs jinja2 and matplotlib)."""
    from flexaudit.report.render import render_report as _render

    return _render(*args, **kwargs)
