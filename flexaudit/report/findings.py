"""The one result type of the gate (after bandit's `Issue`): every formatter serialises `Finding.as_dict()`.

A Finding is the outcome of one control of the policy for one expert: pass, fail, waived, inconclusive,
integrity (the package no longer matches the audit) or skipped. Rule IDs are stable forever; the
fingerprint (rule ID + expert name) is what baselines match on, so the same control on a retrained
version of the same expert is "unchanged" rather than new.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

STATUSES = ("pass", "fail", "waived", "inconclusive", "integrity", "skipped")
SEVERITIES = ("critical", "high", "medium", "low", "info")
#: GitHub code scanning reads this as CVSS-like severity (compliance.md §3.2)
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}
#: status -> exit code contribution (the decision takes the most severe)
EXIT_CODE = {"pass": 0, "skipped": 0, "waived": 0, "inconclusive": 2, "fail": 1, "integrity": 3}


def fingerprint(rule_id: str, expert: str) -> str:
    return hashlib.sha256(f"{rule_id}|{expert}".encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Finding:
    rule_id: str
    title: str
    status: str
    severity: str
    message: str                          # one line: what was measured against what
    metric: str | None = None
    unit: str | None = None
    attack_id: str | None = None          # the attack whose figure decided (worst case)
    observed: float | None = None         # point value
    upper_bound: float | None = None      # upper confidence bound (None: no interval)
    lower_bound: float | None = None
    anchor: float | None = None           # the anchor's figure (or chance level, see anchor_source)
    anchor_source: str | None = None
    increase: float | None = None         # tested bound - anchor
    threshold: dict[str, Any] = field(default_factory=dict)
    samples: int | None = None
    min_samples: int | None = None
    waiver: dict[str, Any] | None = None  # the waiver that applied (or expired)
    baseline_state: str | None = None     # "new" or "unchanged" with --baseline
    fingerprint: str = ""
    location: str | None = None           # file the finding points at (report.json or a package file)
    maps_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown finding status {self.status!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if "\n" in self.message:
            raise ValueError("a finding's message is one line")

    @property
    def problem(self) -> bool:
        """Anything a CI run should show (not a pass or a skip)."""
        return self.status in ("fail", "waived", "inconclusive", "integrity")

    @property
    def exit_code(self) -> int:
        return EXIT_CODE[self.status]

    def with_(self, **changes: Any) -> "Finding":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["threshold"] = dict(self.threshold)
        d["maps_to"] = list(self.maps_to)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})
