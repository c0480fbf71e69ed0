"""Compliance commands: report, report-sign, report-verify, gate, policy, keys, pool.

Each parses, calls flexaudit.report / flexaudit.gate / flexaudit.pool / flexaudit.signing, prints, and
maps the outcome to the exit-code contract: 0 pass, 1 policy violation, 2 bad input or inconclusive,
3 integrity failure. Bad input is one line on stderr (through `guarded`), never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from flexaudit.cli._common import err, file_system_error, guarded, out, print_json

policy_app = typer.Typer(help="Write and check privacy policies for the gate.", no_args_is_help=True)
pool_app = typer.Typer(help="The expert pool: admit audited experts, revoke them, verify the log (`merge --pool` builds a model from it).",
                       no_args_is_help=True)
keys_app = typer.Typer(help="ed25519 keys for signing reports and the pool's log head.", no_args_is_help=True)


def _say(text: str) -> None:
    out.print(text, markup=False, emoji=False, highlight=False)


def _write(path: Path, text: str) -> None:
    from flexaudit.errors import InputError
    from flexaudit.fsutil import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        found = file_system_error(exc, path=path)
        raise InputError(f"cannot write {found}" if found else f"cannot write {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------- report
def report_cmd(
    audit_dir: Annotated[Path, typer.Argument(help="Audit directory holding report.json (from `flexaudit audit`).")],
    fmt: Annotated[str, typer.Option("--format", help="Comma-separated: html, md, pdf (pdf needs flexaudit[pdf]).")] = "html,md",
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Where to write the documents (default: the audit dir).")] = None,
) -> None:
    """Render report.json into a self-contained HTML report, Markdown (for PR comments) and PDF."""
    from flexaudit.report.render import render_report

    written = guarded(lambda: render_report(audit_dir, fmt, out_dir=out_dir))
    for kind, path in written.items():
        _say(f"{kind}: {path}")


def report_sign_cmd(
    audit_dir: Annotated[Path, typer.Argument(help="Audit directory holding report.json.")],
    key: Annotated[Path, typer.Option(help="ed25519 private key (flexaudit keys generate).")],
) -> None:
    """Sign report.json (in-toto statement in a DSSE envelope): writes report.sig.json beside it."""
    from flexaudit.report.signature import sign_report

    path, kid = guarded(lambda: sign_report(audit_dir, key))
    _say(f"signed by {kid}: {path}")


def report_verify_cmd(
    audit_dir: Annotated[Path, typer.Argument(help="Audit directory holding report.json and report.sig.json.")],
    public_key: Annotated[Optional[Path], typer.Option(help="The signer's public key you trust.")] = None,
    package: Annotated[Optional[Path], typer.Option(help="Also re-hash this package against the report.")] = None,
) -> None:
    """Validate report.json, check its signature and (with --package) that the package is the audited one."""
    from flexaudit.errors import IntegrityError
    from flexaudit.gate.engine import check_package
    from flexaudit.report.io import read_report, report_digest
    from flexaudit.report.signature import verify_report_signature
    from flexaudit.report.verdict import expert_of

    def run():
        report = read_report(audit_dir)
        info = verify_report_signature(audit_dir, public_key)
        if package is not None:
            findings, detail = check_package(report, package, expert=expert_of(report)[0])
            bad = [f for f in findings if f.status != "pass"]
            if bad:
                raise IntegrityError(f"{bad[0].rule_id}: {bad[0].message}")
            info["package"] = detail
        return report, info

    report, info = guarded(run)
    _say(f"report {report['document']['id']} valid (schema {report['schema_version']}, digest {report_digest(report)})")
    who = "trusted key" if info["trusted"] else "the key named in the signature (not checked against a trusted key: pass --public-key)"
    _say(f"signature: valid, by {info['key_id']} ({who})")
    if "package" in info:
        _say(f"package: {info['package']}")


# ---------------------------------------------------------------------------------------------- gate
def gate_cmd(
    audit_dir: Annotated[Path, typer.Argument(help="Audit directory holding report.json.")],
    policy: Annotated[Optional[Path], typer.Option(help="Privacy policy TOML (default: the built-in default policy).")] = None,
    package: Annotated[Optional[Path], typer.Option(help="The expert package to re-verify (default: the path in the report).")] = None,
    sarif: Annotated[Optional[Path], typer.Option(help="Write SARIF 2.1.0 here.")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Write JUnit XML here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the gate result JSON here (a later --baseline).")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write a Markdown summary here.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="A previous gate result JSON (or report.json): mark findings new/unchanged/resolved.")] = None,
    github: Annotated[bool, typer.Option(help="Print GitHub Actions annotations; append the summary to $GITHUB_STEP_SUMMARY.")] = False,
    quiet: Annotated[bool, typer.Option(help="Print nothing but errors (the exit code still says it all).")] = False,
) -> None:
    """Judge an audit against a policy. Exit 0 pass, 1 violation, 2 inconclusive or bad input, 3 integrity."""
    from flexaudit.gate import load_policy, run_gate, to_github, to_junit, to_markdown, to_sarif, to_summary

    def run():
        result = run_gate(audit_dir, load_policy(policy), package_dir=package, baseline=baseline)
        if sarif is not None:
            _write(sarif, json.dumps(to_sarif(result), indent=2, sort_keys=False) + "\n")
        if junit is not None:
            _write(junit, to_junit(result))
        if json_out is not None:
            _write(json_out, json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
        if markdown is not None:
            _write(markdown, to_markdown(result))
        if github and os.environ.get("GITHUB_STEP_SUMMARY"):
            with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
                fh.write(to_markdown(result) + "\n")
        return result

    result = guarded(run)
    if github:
        import sys

        sys.stdout.write(to_github(result))
    if not quiet:
        _say(to_summary(result).rstrip("\n"))
    raise typer.Exit(result.exit_code)


# ---------------------------------------------------------------------------------------------- policy
@policy_app.command("init")
def policy_init(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the policy.")] = Path("privacy-policy.toml"),
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write the default privacy policy (commented) to edit."""
    from flexaudit.errors import InputError
    from flexaudit.report.policy import default_policy_text

    def run():
        if out_path.exists() and not force:
            raise InputError(f"{out_path} already exists: choose another --out or pass --force")
        _write(out_path, default_policy_text())

    guarded(run)
    _say(f"policy: {out_path}  (check it with `flexaudit policy check {out_path}`)")


@policy_app.command("check")
def policy_check(path: Annotated[Path, typer.Argument(help="Policy TOML to validate.")],
                 as_json: Annotated[bool, typer.Option("--json", help="Print the parsed policy as JSON.")] = False) -> None:
    """Validate a policy file; prints its digest and controls (exit 2 with one line if malformed)."""
    from flexaudit.report.policy import load_policy

    p = guarded(lambda: load_policy(path))
    if as_json:
        print_json({**p.identity(), "controls": {k: {**c.threshold(), "enabled": c.enabled, "min_samples": c.min_samples,
                                                     "severity": c.severity, "on_missing": c.on_missing,
                                                     "outcome": c.outcome} for k, c in p.controls.items()},
                    "waivers": [w.as_dict() for w in p.waivers]})
        return
    _say(f"policy {p.name!r} is valid: {p.digest}")
    for c in p.controls.values():
        _say(f"  {c.rule_id:<17} {'on ' if c.enabled else 'off'} {c.threshold()}")
    for w in p.waivers:
        _say(f"  waiver {w.id}: {w.rule} for {w.package_root_digest[:19]}... until {w.expires} ({w.approver})")


# ---------------------------------------------------------------------------------------------- keys
@keys_app.command("generate")
def keys_generate(out_prefix: Annotated[Path, typer.Option("--out", help="Writes OUT.key (private) and OUT.pub.")],
                  force: Annotated[bool, typer.Option(help="Replace existing key files.")] = False) -> None:
    """Make an ed25519 key pair."""
    from flexaudit.signing import generate_keypair

    key, pub = guarded(lambda: generate_keypair(out_prefix, overwrite=force))
    _say(f"private key: {key} (keep it secret)\npublic key: {pub}")


# ---------------------------------------------------------------------------------------------- pool
@pool_app.command("init")
def pool_init(pool_dir: Annotated[Path, typer.Argument(help="Pool directory to create.")],
              policy: Annotated[Optional[Path], typer.Option(help="Admission policy (default: the built-in one).")] = None,
              anchor: Annotated[Optional[Path], typer.Option(help="Bind the pool to this anchor (experts of other anchors are refused).")] = None,
              actor: Annotated[Optional[str], typer.Option(help="Who creates the pool (recorded in the log).")] = None) -> None:
    """Create a pool: registry, hash-chained log and its fixed admission policy."""
    from flexaudit.pool import init_pool

    info = guarded(lambda: init_pool(pool_dir, policy_path=policy, anchor_dir=anchor, actor=actor))
    _say(f"pool {info['pool_id']} at {pool_dir}; policy {info['policy']['name']} ({info['policy']['digest']})")


@pool_app.command("admit")
def pool_admit(pool_dir: Annotated[Path, typer.Argument(help="The pool.")],
               package: Annotated[Path, typer.Argument(help="The expert package to admit.")],
               audit: Annotated[Path, typer.Option(help="Its audit directory (report.json).")],
               actor: Annotated[Optional[str], typer.Option(help="Who admits it (recorded in the log).")] = None,
               sign_key: Annotated[Optional[Path], typer.Option(help="Sign the new log head with this ed25519 key.")] = None) -> None:
    """Re-run the gate with the pool's policy and admit the expert only if it passes (exit codes as gate)."""
    from flexaudit.pool import admit

    a = guarded(lambda: admit(pool_dir, package, audit, actor=actor, sign_key=sign_key))
    if a.already:
        _say(f"{a.name!r} ({a.root_digest}) was already admitted (log entry {a.seq})")
    else:
        _say(f"admitted {a.name!r} ({a.root_digest}) as log entry {a.seq}: {a.gate.summary}")


@pool_app.command("revoke")
def pool_revoke(pool_dir: Annotated[Path, typer.Argument(help="The pool.")],
                name: Annotated[str, typer.Argument(help="Name of the admitted expert.")],
                reason: Annotated[str, typer.Option(help="Why (licence expired, owner opted out...): recorded in the log.")],
                opt_out: Annotated[bool, typer.Option(help="Record it as the owner's opt-out.")] = False,
                actor: Annotated[Optional[str], typer.Option(help="Who revokes it.")] = None) -> None:
    """Remove an expert from the pool; the next `merge --pool` leaves it out."""
    from flexaudit.pool import revoke

    r = guarded(lambda: revoke(pool_dir, name, reason=reason, opt_out=opt_out, actor=actor))
    _say(f"{r['event'].replace('_', '-')} {name!r} ({r['root_digest']}) as log entry {r['seq']}")


@pool_app.command("list")
def pool_list(pool_dir: Annotated[Path, typer.Argument(help="The pool.")],
              all_: Annotated[bool, typer.Option("--all", help="Include revoked and opted-out experts.")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """The pool's experts."""
    from flexaudit.pool import list_members

    members = guarded(lambda: list_members(pool_dir, include_removed=all_))
    if as_json:
        print_json(members)
        return
    if not members:
        _say("no experts")
    for m in members:
        removed = f"  ({m['status']} {m['removed_at']}: {m['removal_reason']})" if m["status"] != "admitted" else ""
        _say(f"{m['name']:<24} {m['status']:<9} {m['root_digest']}  admitted {m['admitted_at']}{removed}")


@pool_app.command("log")
def pool_log(pool_dir: Annotated[Path, typer.Argument(help="The pool.")],
             as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """The pool's hash-chained log."""
    from flexaudit.pool import read_log

    entries = guarded(lambda: read_log(pool_dir))
    if as_json:
        print_json(entries)
        return
    for e in entries:
        _say(f"{e['seq']:>4} {e['time']} {e['event']:<8} {e.get('expert') or '':<20} {e['hash'][:23]}…  {e.get('reason') or ''}")


@pool_app.command("verify")
def pool_verify(pool_dir: Annotated[Path, typer.Argument(help="The pool.")],
                public_key: Annotated[Optional[Path], typer.Option(help="Check the signed log head with this key.")] = None,
                as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Recompute the log's hash chain and check registry, copies and head. Exit 3 on any tampering."""
    from flexaudit.pool import verify_pool

    v = guarded(lambda: verify_pool(pool_dir, public_key=public_key))
    if as_json:
        print_json(v.as_dict())
    elif v.ok:
        sig = f"; signed head verified (entry {v.signature['seq']}, {v.signature['key_id']})" if v.signature and v.signature.get("valid") else ""
        _say(f"pool intact: {v.entries} log entries, head {v.head}{sig}")
    if not v.ok:
        where = f" (first broken entry: {v.first_broken_at})" if v.first_broken_at else ""
        err.print(f"error: pool {pool_dir} failed verification{where}: {v.problems[0]}"
                  + (f" (and {len(v.problems) - 1} more problems)" if len(v.problems) > 1 else ""), markup=False)
        raise typer.Exit(3)


@pool_app.command("sign-head")
def pool_sign_head(pool_dir: Annotated[Path, typer.Argument(help="The pool.")],
                   key: Annotated[Path, typer.Option(help="ed25519 private key.")]) -> None:
    """Sign the log's current head, so that a rewritten or truncated log is detected."""
    from flexaudit.pool import sign_head

    s = guarded(lambda: sign_head(pool_dir, key))
    _say(f"signed head entry {s['seq']} ({s['hash']}) with {s['key_id']}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
    app.command("report-sign")(report_sign_cmd)
    app.command("report-verify")(report_verify_cmd)
    app.command("gate")(gate_cmd)
    app.add_typer(policy_app, name="policy")
    app.add_typer(pool_app, name="pool")
    app.add_typer(keys_app, name="keys")
