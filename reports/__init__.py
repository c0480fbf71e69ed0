"""Package data of flexaudit's compliance documents: Jinja2 templates and versioned JSON Schemas.

Layout (shipped in the wheel as package data; code finds it with importlib.resources through
`flexaudit.report.resources`, never by a path relative to the source tree):

    reports/templates/html/    the self-contained HTML report (its macros in _macros.html.jinja)
    reports/templates/md/      the Markdown report for pull-request comments and step summaries
    reports/templates/common/  macros shared by every format
    reports/schema/vX.Y.Z/     report.schema.json and gate-result.schema.json of each report version
    reports/schema/policy/v1/  policy.schema.json and the default privacy-policy.toml
"""
