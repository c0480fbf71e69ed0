"""Privacy policies: a TOML file a compliance officer writes (see the shipped default,
`flexaudit policy init`), parsed with tomllib and validated against policy.schema.json.

A malformed policy is an InputError (exit 2) with one line naming the file and the first problem; an
unknown control or key is an error, not silently ignored (a typo must never disable a control).
The policy digest (SHA-256 of the file's bytes) goes into every report and gate result, so a verdict
can be reproduced with exactly the policy that produced it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexaudit.errors import InputError
from flexaudit.names import check_read_name

POLICY_FORMAT = "flexaudit-policy/1"
DEFAULT_SOURCE = "built-in default policy"


@dataclass(frozen=True)
class Control:
    rule_id: str
    enabled: bool = True
    max: float | None = None
    max_increase_over_anchor: float | None = None
    min_samples: int = 50
    severity: str = "high"
    on_missing: str = "inconclusive"
    bound: str = "upper"
    outcome: str = "fail"
    params: dict[str, Any] = field(default_factory=dict)  # fpr, queries, attacks, require_dp, max_without_dp

    def threshold(self) -> dict[str, Any]:
        t: dict[str, Any] = {"bound": self.bound}
        if self.max is not None:
            t["max"] = self.max
        if self.max_increase_over_anchor is not None:
            t["max_increase_over_anchor"] = self.max_increase_over_anchor
        for k in ("fpr", "queries", "require_dp", "max_without_dp"):
            if k in self.params:
                t[k] = self.params[k]
        return t


@dataclass(frozen=True)
class Waiver:
    id: str
    rule: str
    package_root_digest: str
    reason: str
    approver: str
    expires: dt.date
    created: dt.date | None = None
    ticket: str | None = None

    def active_on(self, day: dt.date) -> bool:
        return day <= self.expires

    def as_dict(self) -> dict:
        return {"id": self.id, "rule": self.rule, "package_root_digest": self.package_root_digest,
                "reason": self.reason, "approver": self.approver, "expires": self.expires.isoformat(),
                "created": self.created.isoformat() if self.created else None, "ticket": self.ticket}


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    digest: str
    source: str
    controls: dict[str, Control]
    waivers: tuple[Waiver, ...] = ()

    def identity(self) -> dict:
        return {"name": self.name, "digest": self.digest, "source": self.source}

    def enabled_controls(self) -> list[Control]:
        return [c for c in self.controls.values() if c.enabled]


def _jsonable(node: Any) -> Any:
    """TOML dates/times -> ISO strings, so the JSON Schema can check them."""
    if isinstance(node, dict):
        return {k: _jsonable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_jsonable(v) for v in node]
    if isinstance(node, (dt.date, dt.datetime, dt.time)):
        return node.isoformat()
    return node


def _schema_errors(doc: dict) -> list[str]:
    import json

    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import relevance

    from flexaudit.report import resources

    schema = json.loads(resources.schema("policy", "v1", "policy.schema.json").read_text(encoding="utf-8"))
    out = []
    for e in sorted(Draft202012Validator(schema).iter_errors(doc), key=relevance):
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        out.append(f"{where}: {e.message}")
    return out


def parse_policy(data: bytes, *, source: str) -> Policy:
    """A Policy from the bytes of a TOML file; InputError (one line) if it is malformed."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"policy {source} is not UTF-8 text: save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"policy {source} is not valid TOML ({exc}): fix the file") from None
    doc = _jsonable(raw)
    errors = _schema_errors(doc)
    if errors:
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise InputError(f"policy {source} is malformed: {errors[0]}{more}")
    defaults = doc.get("defaults", {})
    controls = {}
    for rule_id, cfg in doc["controls"].items():
        params = {k: cfg[k] for k in ("fpr", "queries", "attacks", "require_dp", "max_without_dp") if k in cfg}
        controls[rule_id] = Control(
            rule_id=rule_id, enabled=cfg.get("enabled", True), max=cfg.get("max"),
            max_increase_over_anchor=cfg.get("max_increase_over_anchor"),
            min_samples=int(cfg.get("min_samples", defaults.get("min_samples", 50))),
            severity=cfg.get("severity", defaults.get("severity", "high")),
            on_missing=cfg.get("on_missing", defaults.get("on_missing", "inconclusive")),
            bound=cfg.get("bound", "upper"), outcome=cfg.get("outcome", "fail"), params=params)
    waivers = []
    seen = set()
    for w in doc.get("waivers", []):
        check_read_name(w["id"], what="a waiver id", where=f"policy {source}")
        if w["id"] in seen:
            raise InputError(f"policy {source} is malformed: waiver id {w['id']!r} appears twice")
        seen.add(w["id"])
        try:
            expires = dt.date.fromisoformat(w["expires"])
            created = dt.date.fromisoformat(w["created"]) if w.get("created") else None
        except ValueError as exc:
            raise InputError(f"policy {source} is malformed: waiver {w['id']}: {exc}") from None
        if created and created > expires:
            raise InputError(f"policy {source} is malformed: waiver {w['id']} expires before it was created")
        waivers.append(Waiver(id=w["id"], rule=w["rule"], package_root_digest=w["package_root_digest"],
                              reason=w["reason"], approver=w["approver"], expires=expires, created=created,
                              ticket=w.get("ticket")))
    return Policy(name=doc["name"], description=doc.get("description", ""),
                  digest="sha256:" + hashlib.sha256(data).hexdigest(), source=source, controls=controls,
                  waivers=tuple(waivers))


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy at `path`, or the shipped default policy when path is None."""
    if path is None:
        return default_policy()
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a policy file: give the policy's .toml file")
    if not path.is_file():
        raise InputError(f"policy file not found: {path} (write one with `flexaudit policy init --out {path}`)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read policy {path}: {exc.strerror}") from None
    return parse_policy(data, source=str(path))


def default_policy_text() -> str:
    from flexaudit.report import resources

    return resources.schema("policy", "v1", "privacy-policy.toml").read_text(encoding="utf-8")


def default_policy() -> Policy:
    return parse_policy(default_policy_text().encode("utf-8"), source=DEFAULT_SOURCE)
