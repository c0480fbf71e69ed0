"""Jobs that cross the layers, for the command line, the demo and Python users alike.

    from flexaudit.workflows import AuditOptions, run_audit
    result = run_audit(expert_dir, anchor_dir=anchor_dir, out=audit_dir)   # attacks -> report.json
    result.report["verdict"]["decision"]

An audit runs the attacks (flexaudit.audit), traces what they extracted to the owner's documents when given
the owner's index (flexaudit.trace), and builds the validated report with its verdict under the policy
(flexaudit.report), written atomically to the audit directory with its figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flexaudit.audit import AuditOptions, run_attacks
from flexaudit.moe import distributed
from flexaudit.moe.device import CPU_FLOAT32, Placement
from flexaudit.progress import NULL_PROGRESS, Progress
from flexaudit.report import build_report, write_report

__all__ = ["AuditOptions", "AuditResult", "run_audit"]


@dataclass
class AuditResult:
    audit_dir: Path
    report: dict
    seconds: dict[str, float] = field(default_factory=dict)


def run_audit(
    expert_dir: Path,
    *,
    anchor_dir: Path,
    out: Path,
    members: Path | None = None,
    nonmembers: Path | None = None,
    options: AuditOptions = AuditOptions(),
    home: Path | None = None,
    placement: Placement = CPU_FLOAT32,
    progress: Progress = NULL_PROGRESS,
    figures: bool = True,
) -> AuditResult:
    """Audit one expert and write AUDIT_DIR/report.json (and, with `figures`, its figures: pass False when
    flexaudit.report.render_report runs next, as it draws them again); see flexaudit.audit.run_attacks for
    what runs (on `placement`; split over the processes under torchrun, where rank 0 alone writes and every
    rank returns the same report). Raises InputError (exit 2) or IntegrityError (exit 3) before anything is
    written."""
    tracer = None
    if options.trace_index is not None:
        from flexaudit.trace import open_index
        from flexaudit.trace.evidence import ExtractionEvidence

        tracer = ExtractionEvidence(open_index(options.trace_index), min_match=options.trace_min_match,
                                    reveal=options.reveal)
    run = run_attacks(expert_dir, anchor_dir=anchor_dir, members=members, nonmembers=nonmembers, options=options,
                      home=home, tracer=tracer, placement=placement, progress=progress)
    report = build_report(
        run.package,
        anchor_digest=run.anchor_digest,
        membership=run.membership,
        extraction=run.extraction,
        hygiene=run.hygiene,
        epsilon_lower_bounds=run.epsilon_lower_bounds,
        extraction_comparison=run.comparison,
        audit=run.record,
        data=run.data,
        policy=options.policy,
        reveal=options.reveal,
        package_path=str(Path(expert_dir).resolve()),
        anchor_path=str(run.anchor_path.resolve()),
    )

    def write() -> None:  # rank 0 alone writes; an error there stops every rank
        write_report(out, report, figures=figures)

    distributed.current().on_main(write)
    return AuditResult(audit_dir=Path(out), report=report, seconds=run.seconds)
