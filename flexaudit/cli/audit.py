"""The `audit` command: every attack against one expert, with the anchor beside it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flexaudit.cli._common import (DeviceOption, DtypeChoice, DtypeOption, RichProgress, guarded, out, placement_of,
                                   processes)


def _figure(m) -> str:
    if not m.measured:
        return f"not run: {m.reason or ''}"[:60]
    interval = f" [{m.lower:.3f}, {m.upper:.3f}]" if m.lower is not None and m.upper is not None else ""
    samples = f" (n={m.samples})" if m.samples else ""
    return f"{m.value:.3f}{interval}{samples}"


class LongTexts(str, Enum):
    window = "window"
    truncate = "truncate"


def summary_rows(report: dict) -> list[tuple[str, str, str]]:
    """(what, anchor + expert figure with its interval, anchor figure) for the terminal table."""
    from flexaudit.report import metrics

    rows = []
    measurements = metrics.membership_auc(report) + metrics.membership_tpr(report, fpr=0.01)
    for attack_id in ("FA-EXT-DISC", "FA-EXT-SAMPLED", "FA-EXT-PII", "FA-EXT-PII-INF"):
        m = metrics.extraction_rate(report, attack_id)
        if m is not None:
            measurements.append(m)
    for m in [metrics.canary_exposure(report), metrics.blind_baseline(report), *metrics.empirical_epsilon_bounds(report)]:
        if m is not None:
            measurements.append(m)
    for m in measurements:
        anchor = "" if m.anchor is None else f"{m.anchor:.3f}" + (" (chance)" if m.anchor_source == "chance level" else "")
        rows.append((f"{m.attack_id} {m.metric}", _figure(m), anchor))
    return rows


def _pool_experts(registry: Path | None) -> tuple[Path, ...] | None:
    if registry is None:
        return None
    from flexaudit.pool import pool_members

    return tuple(pool_members(registry))


def audit_cmd(
    expert_dir: Annotated[Path, typer.Argument(help="The expert package to audit.")],
    anchor: Annotated[Path, typer.Option(help="The anchor the expert was trained on.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Audit directory (report.json, figures).")],
    members: Annotated[Optional[Path], typer.Option(help="Member texts (default: the expert's training split).")] = None,
    nonmembers: Annotated[Optional[Path], typer.Option(help="Non-member texts (default: the expert's holdout split).")] = None,
    attacks: Annotated[Optional[str], typer.Option(help="Comma-separated attack IDs (default: every attack that can run).")] = None,
    max_documents: Annotated[int, typer.Option(help="Members (and as many non-members) to score.")] = 400,
    extraction_documents: Annotated[int, typer.Option(help="Members each extraction attack targets.")] = 100,
    canary_references: Annotated[int, typer.Option(help="Sampled secrets each planted canary is ranked against; exposure is measured up to log2(N + 1) bits.")] = 1000,
    long_texts: Annotated[LongTexts, typer.Option(help="Texts longer than the context: score every token in sliding windows, or only the beginning.")] = LongTexts.window,
    policy: Annotated[Optional[Path], typer.Option(help="Policy for the report's verdict (default: the shipped one).")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Opt-out verification: attack this merged pool (built on --anchor) instead of anchor + expert, with the expert's own members and non-members.")] = None,
    exclude: Annotated[list[str], typer.Option("--exclude", help="With --model: switch this expert off (repeatable).")] = [],
    trace_index: Annotated[Optional[Path], typer.Option(help="Your trace index (flexaudit trace index): extracted samples are traced to your documents.")] = None,
    dense_baseline: Annotated[Optional[Path], typer.Option(help="The extraction table: your dense fine-tune of the anchor on the same members (flexaudit baseline dense).")] = None,
    pool_registry: Annotated[Optional[Path], typer.Option(help="The extraction table: the pool this expert joins; its admitted experts with and without this one are attacked too.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling and decoding.")] = 0,
    reveal: Annotated[bool, typer.Option(help="Keep raw training text and extracted values in the report.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing report in --out.")] = False,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass, at most (halved on out-of-memory).")] = 16_384,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
) -> None:
    """Run membership inference and extraction attacks on anchor + expert and on the anchor alone. Under
    `torchrun --nproc-per-node N` scoring and decoding are split over N processes and rank 0 writes the report,
    which equals a single-process one."""
    from flexaudit.errors import InputError
    from flexaudit.workflows import AuditOptions, run_audit

    def run():
        if (out_dir / "report.json").exists() and not force:
            raise InputError(f"{out_dir} already holds a report: choose another --out or pass --force to replace it")
        options = AuditOptions(
            max_documents=max_documents, extraction_documents=extraction_documents, long_texts=long_texts.value,
            canary_references=canary_references,
            model=model, exclude=tuple(exclude),
            seed=seed, reveal=reveal, batch_tokens=batch_tokens,
            policy=policy, attacks=tuple(a.strip() for a in attacks.split(",")) if attacks else None, trace_index=trace_index,
            dense_baseline=dense_baseline, pool_experts=_pool_experts(pool_registry),
        )
        placement = placement_of(device, dtype)
        with processes(placement), RichProgress() as progress:
            return run_audit(expert_dir, anchor_dir=anchor, out=out_dir, members=members, nonmembers=nonmembers,
                             options=options, placement=placement, progress=progress)

    result = guarded(run)
    report = result.report
    attacked = report["empirical"]["audit"].get("target", {}).get("model", "anchor + expert")
    table = Table(title=f"Audit of {report['subject']['expert']['name']!r}: {attacked} vs anchor alone")
    table.add_column("attack")
    table.add_column(f"{attacked} [95% CI]", justify="right")
    table.add_column("anchor alone", justify="right")
    for row in summary_rows(report):
        table.add_row(*row)
    out.print(table)
    compared = report["empirical"].get("extraction_comparison")
    if compared:
        from flexaudit.cli.render import extraction_table

        name = report["subject"]["expert"]["name"]
        out.print(extraction_table({name: compared}, f"Extraction of {name}'s members, per model (rate [95% CI])"))
    verdict = report.get("verdict", {})
    out.print(f"verdict under the policy: {verdict.get('decision', 'unknown')} ({verdict.get('summary', '')})", markup=False)
    if reveal:
        out.print("[bold red]--reveal: this report contains raw training text; do not share it[/bold red]")
    out.print(f"report: {result.audit_dir / 'report.json'}  (render it with: flexaudit report {result.audit_dir})")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
