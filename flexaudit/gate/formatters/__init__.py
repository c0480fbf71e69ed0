"""Formatters of a GateResult: each is one function returning text (or a JSON-able dict); none prints.

Every formatter serialises the same Finding objects (after bandit's formatters), so SARIF, JUnit,
GitHub annotations, the terminal summary and the Markdown summary always agree.
"""

from flexaudit.gate.formatters.github import to_github
from flexaudit.gate.formatters.junit import to_junit
from flexaudit.gate.formatters.sarif import to_sarif
from flexaudit.gate.formatters.summary import to_markdown, to_summary

__all__ = ["to_sarif", "to_junit", "to_github", "to_summary", "to_markdown"]
