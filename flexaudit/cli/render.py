"""Rendering library results as terminal tables (the only place that knows about rich layouts)."""

from __future__ import annotations

from rich.table import Table

from flexaudit.cli._common import out


def _figure(f: dict | None, digits: int = 2) -> str:
    """A measured rate with its upper 95% bound, e.g. '0.61 ≤0.75'."""
    if not f:
        return "-"
    upper = f" ≤{f['upper']:.{digits}f}" if f.get("upper") is not None else ""
    return f"{f['value']:.{digits}f}{upper}"


def _anchor_figure(f: dict | None, digits: int = 2) -> str:
    return f"{f['anchor']:.{digits}f}" if f and f.get("anchor") is not None else "-"


def _rate(r: dict | None) -> str:
    """A rate with its 95% interval, e.g. '0.12 [0.05, 0.24]'."""
    if not r or r.get("value") is None:
        return "-"
    return f"{r['value']:.2f} [{r['ci']['low']:.2f}, {r['ci']['high']:.2f}]"


def extraction_table(tables: dict[str, dict], title: str) -> Table:
    """The extraction table ({owner: report.json's extraction_comparison}) as one terminal table, its attacks in
    the order of the report's table and figure."""
    from flexaudit.report.figures import COMPARED_ATTACKS

    table = Table(title=title)
    for col in ("members of", "model", "sampled (paper)", "discoverable", "personal data", "inferred"):
        table.add_column(col, justify="left" if col in ("members of", "model") else "right")
    for owner, block in tables.items():
        rows = block["rows"]
        for i, row in enumerate(rows):
            rates = row["rates"]
            table.add_row(owner if i == 0 else "", row["label"],
                          *(_rate(rates.get(a)) for a, _, _ in COMPARED_ATTACKS),
                          end_section=i == len(rows) - 1)
    return table


def _print_reasons(gate: dict) -> None:
    from flexaudit.demo import gate_reasons

    for label, message in gate_reasons(gate):
        out.print(f"    {label}: {message}", markup=False)


def print_demo(result) -> None:
    from flexaudit.demo import pool_status

    table = Table(title="Held-out perplexity per domain (lower is better)")
    table.add_column("model")
    for d in result.domains:
        table.add_column(d, justify="right")
    for row, following in zip(result.rows, [*result.rows[1:], None]):
        table.add_row(row.label, *(f"{row.perplexity[d]:.2f}" for d in result.domains),
                      end_section=following is not None and following.kind != row.kind)
    out.print(table)

    checks = Table(title="The method's claims on this run")
    checks.add_column("claim")
    checks.add_column("measured", justify="right")
    checks.add_column("", justify="center")
    for c in result.checks:
        checks.add_row(c["claim"], c["measured"], "[green]yes[/green]" if c["passed"] else "[red]no[/red]")
    out.print(checks)

    p = result.privacy
    if p:
        out.print(f"Differential privacy: {p['expert']} reached epsilon {p['epsilon']:.3f} at delta {p['delta']:g} per "
                  f"{p['unit']} ({p['accountant']}; PLD cross-check "
                  f"{'not computed' if p['cross_check'] is None else format(p['cross_check'], '.3f')}), noise multiplier "
                  f"{p['noise_multiplier']:.3f}, {p['steps']} steps. {p['expert'].removesuffix('-dp')} perplexity: "
                  f"DP expert {p['perplexity']:.2f}, non-DP expert {p['non_dp_perplexity']:.2f}, anchor {p['anchor_perplexity']:.2f}",
                  markup=False)

    if result.audits:
        leak = Table(title="Leakage per expert (value ≤ upper 95% bound; dim rows: the anchor alone)")
        for col in ("expert", "MIA AUC", "TPR@1%", "verbatim", "sampled", "personal", "inferred", "gate", "pool"):
            leak.add_column(col, justify="left" if col in ("expert", "gate", "pool") else "right")
        pool = result.pool
        metrics = ("membership_auc", "tpr_at_1pct_fpr", "discoverable_extraction", "sampled_extraction",
                   "personal_data_leaked", "personal_data_inferred")
        for name, a in result.audits.items():
            f = a["figures"]
            status = pool_status(pool, name) or ""
            colour = {"pass": "green", "fail": "red"}.get(a["gate"]["decision"], "yellow")
            leak.add_row(name, *(_figure(f.get(m)) for m in metrics), f"[{colour}]{a['gate']['decision']}[/{colour}]",
                         status)
            leak.add_row("  anchor", *(_anchor_figure(f.get(m)) for m in metrics), "", "", style="dim")
        out.print(leak)
        for name, why in result.pool.get("refused", {}).items():
            out.print(f"  refused {name} (exit {why['exit_code']}): {why['reason']}", markup=False)
            _print_reasons(result.audits.get(name, {}).get("gate", {}))
        for name, a in result.audits.items():  # an expert its owner did not offer (the DP one) has a decision too
            if pool_status(pool, name) is None and a["gate"]["decision"] != "pass":
                out.print(f"  {name}, not offered to the pool: gate {a['gate']['decision']} (exit {a['gate']['exit_code']})",
                          markup=False)
                _print_reasons(a["gate"])
        if result.pool.get("merged"):
            out.print(f"  merged the pool's admitted experts ({', '.join(result.pool['merged_experts'])}) into "
                      f"{result.pool['merged']}", markup=False)

    if result.extraction:
        out.print(extraction_table({k: v["table"] for k, v in result.extraction.items()},
                                   "Extraction per owner's members, per model (rate [95% CI]; same documents in every row)"))
        tables = [v["table"] for v in result.extraction.values()]
        first, prompts = tables[0], max(t["prompts"] for t in tables)  # owners without personal data have none
        trials = max(t.get("inference_trials", 0) for t in tables)
        cfg = first["settings"]
        out.print(f"  {first['documents']} member documents per owner; sampled: {cfg['prefix_len']}-token prefix, "
                  f"{cfg['window_len']}-token window, {cfg['samples_per_prefix']} samples, similarity >= 0.9; "
                  f"discoverable: {cfg['prefix_len']} -> {cfg['suffix_len']} tokens, greedy, exact; personal data: "
                  f"up to {prompts} prompts, {cfg['pii_new_tokens']} new tokens; inferred: up to {trials} items, the "
                  "true value more likely than every value of the same kind from non-members", markup=False)

    out.print("Artifacts:")
    for what, where in result.artifacts.items():
        out.print(f"  {what:<32} {where}", markup=False)
    s = result.seconds
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in s.items() if k != "total")
    m = result.machine
    out.print(f"Time: {s['total']:.0f} s ({parts})")
    if m:
        from flexaudit.demo import machine_text

        out.print(f"Machine: fp32 matmul peak {machine_text(m)}", markup=False)
