"""Versions of report.json, their JSON Schemas, validation and migration.

Every report carries `schema_version` (semantic versioning). The schema of each version ships as
package data in `reports/schema/v<version>/report.schema.json` (JSON Schema 2020-12) and its `$id`
names that version. A report is validated when it is written and when it is read; an older report
is migrated one step at a time through `MIGRATIONS` and validated again as the current version.

How to bump the version (the model-card-toolkit pattern, with the version check made a test):
  1. copy reports/schema/v<old>/ to reports/schema/v<new>/ and edit it ($id included);
  2. set SCHEMA_VERSION = "<new>" and add "<new>" to KNOWN_VERSIONS;
  3. register `MIGRATIONS["<old>"] = ("<new>", _migrate_<old>_to_<new>)`, a pure function from an
     old document to a new one (never dropping evidence);
  4. keep a fixture of an old report in the tests and assert it reads back as the new version.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any, Callable

from flexaudit.errors import InputError

SCHEMA_VERSION = "1.0.0"
KNOWN_VERSIONS: tuple[str, ...] = ("1.0.0",)
REPORT_SCHEMA = "report.schema.json"
GATE_SCHEMA = "gate-result.schema.json"

Migration = Callable[[dict], dict]
#: from-version -> (to-version, function). Empty while 1.0.0 is the only version.
MIGRATIONS: dict[str, tuple[str, Migration]] = {}


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        raise InputError(f"schema_version {version!r} is not a version like 1.0.0") from None


@functools.lru_cache(maxsize=None)
def load_schema(version: str = SCHEMA_VERSION, name: str = REPORT_SCHEMA) -> dict:
    """The JSON Schema `name` of `version`, read from the installed package data."""
    from flexaudit.report import resources

    node = resources.schema(f"v{version}", name)
    if not node.is_file():
        raise InputError(f"no {name} for schema version {version} is installed: reinstall flexaudit")
    return json.loads(node.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _validator(version: str, name: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    resources = []
    for other in (REPORT_SCHEMA, GATE_SCHEMA):
        try:
            doc = load_schema(version, other)
        except InputError:
            continue
        resources.append((doc["$id"], Resource.from_contents(doc)))
    registry = Registry().with_resources(resources)
    return Draft202012Validator(load_schema(version, name), registry=registry)


def _path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return "/".join(parts) if parts else "(top level)"


def schema_errors(doc: Any, *, version: str = SCHEMA_VERSION, name: str = REPORT_SCHEMA) -> list[str]:
    """Every violation of the schema, one line each ("path: message"), most specific first."""
    from jsonschema.exceptions import relevance

    errors = sorted(_validator(version, name).iter_errors(doc), key=relevance)
    out = []
    for e in errors:
        leaf = e
        while leaf.context:  # anyOf/oneOf: report the best sub-error
            leaf = sorted(leaf.context, key=relevance)[0]
        message = leaf.message
        if leaf.validator == "not" and isinstance(leaf.instance, dict) and "examples" in leaf.instance:
            message = "holds raw text examples although document.reveal is false"
        message = message if len(message) <= 160 else message[:157] + "..."
        out.append(f"{_path(leaf)}: {message}")
    return out


def validate(doc: Any, *, version: str = SCHEMA_VERSION, name: str = REPORT_SCHEMA, what: str = "report") -> None:
    """Raise InputError (one line: the first violation and how many more) unless `doc` is valid."""
    errors = schema_errors(doc, version=version, name=name)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{what} does not match schema {version}: {errors[0]}{more}")
    if name == REPORT_SCHEMA:
        check_redaction(doc)


def check_redaction(doc: dict) -> None:
    """A report without `document.reveal` holds no raw text: no `examples` anywhere (defence in depth
    beside the schema's own rule, which only covers the extraction section)."""
    if doc.get("document", {}).get("reveal"):
        return

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "examples" and v is not None:
                    raise InputError(
                        f"report holds raw examples at {path}/{k} but was not generated with --reveal: refusing it"
                    )
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(doc, "")


def migrate(doc: dict) -> dict:
    """Bring a report of any known older version up to SCHEMA_VERSION (a new dict; input untouched)."""
    if not isinstance(doc, dict):
        raise InputError("report.json must hold a JSON object")
    version = doc.get("schema_version")
    if not isinstance(version, str):
        raise InputError("report.json has no schema_version: it was not written by flexaudit")
    if _version_key(version) > _version_key(SCHEMA_VERSION):
        raise InputError(
            f"report schema_version {version} is newer than this flexaudit understands ({SCHEMA_VERSION}): upgrade flexaudit"
        )
    doc = copy.deepcopy(doc)
    seen = set()
    while doc["schema_version"] != SCHEMA_VERSION:
        version = doc["schema_version"]
        if version in seen or version not in MIGRATIONS:
            raise InputError(f"report schema_version {version} is not supported and cannot be migrated to {SCHEMA_VERSION}")
        seen.add(version)
        if version in KNOWN_VERSIONS:  # a shipped old schema: the document must be valid as that version first
            validate(doc, version=version)
        target, step = MIGRATIONS[version]
        doc = step(doc)
        doc["schema_version"] = target
    return doc
