"""The audit: every attack against one expert, and against the anchor alone as the baseline.

    from flexaudit.audit import AuditOptions, run_attacks
    run = run_attacks(expert_dir, anchor_dir=anchor_dir)   # -> AuditRun: results, counts, timings

`run` drives the model-agnostic `attacks` library on models flexaudit builds; `personal_data` finds the
personal-data items the leakage attack looks for. report.json is built from an AuditRun by flexaudit.report;
`flexaudit.workflows.run_audit` runs the whole audit and writes the report.
"""

from flexaudit.audit.run import (
                                 EXTRACTION_ATTACKS,
                                 MEMBERSHIP_ATTACKS,
                                 AuditOptions,
                                 AuditRun,
                                 ExtractionTracer,
                                 run_attacks,
)

__all__ = ["AuditOptions", "AuditRun", "ExtractionTracer", "run_attacks", "MEMBERSHIP_ATTACKS", "EXTRACTION_ATTACKS"]
