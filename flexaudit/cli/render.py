"""Rendering library results as terminal tables (the only place that knows about rich layouts)."""

from __future__ import annotations

from rich.table import Table

from flexaudit.cli._common import out


def print_demo(result) -> None:
    table = Table(title="Held-out perplexity per domain (lower is better)")
    table.add_column("model")
    for d in result.domains:
        table.add_column(d, justify="right")
    for row in result.rows:
        table.add_row(row.label, *(f"{row.perplexity[d]:.2f}" for d in result.domains),
                      end_section=row.label in ("anchor",) or row.kind == "pool" or row is result.rows[len(result.domains)])
    out.print(table)
    checks = Table(title="The method's claims on this run")
    checks.add_column("claim")
    checks.add_column("measured", justify="right")
    checks.add_column("", justify="center")
    for c in result.checks:
        checks.add_row(c["claim"], c["measured"], "[green]yes[/green]" if c["passed"] else "[red]no[/red]")
    out.print(checks)
    out.print("Artifacts:")
    for what, where in result.artifacts.items():
        out.print(f"  {what:<22} {where}", markup=False)
    s = result.seconds
    out.print(f"Time: {s['total']:.0f} s (anchor {s['anchor']:.0f} s, experts {s['experts']:.0f} s, "
              f"merge {s['merge']:.0f} s, evaluation {s['evaluation']:.0f} s)")
