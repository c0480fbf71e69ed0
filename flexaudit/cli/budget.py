"""`flexaudit budget ...`: the epsilon calculator, the noise search and the privacy-budget ledger.

Parses, calls flexaudit.privacy, prints (a small table, or --json only) and maps errors to exit
codes through `guarded()`: 0 success, 1 a budget cap refuses, 2 an invalid or impossible request.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from flexaudit.cli._common import err, guarded, out, print_json


class AccountantChoice(str, enum.Enum):
    prv = "prv"
    rdp = "rdp"
    pld = "pld"


_ACCOUNTANT_HELP = (
    "prv (Opacus PRV, tight upper bound; default), rdp (Opacus RDP, looser) or pld (Google dp-accounting). "
    "If it fails numerically, the next of prv -> pld -> rdp produces the figure and the output names it."
)


def _fmt(x: Optional[float], digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _accountant_line(desc: dict) -> str:
    return f"{desc['name']} ({desc['library']} {desc['version']}): {desc['method']}"


class _KeyValues:
    """A two-column key/value table whose cells are plain text (no markup, no emoji codes)."""

    def __init__(self) -> None:
        self.table = Table(show_header=False, box=None, pad_edge=False)
        self.table.add_column(style="bold")
        self.table.add_column()

    def add_row(self, key: str, value: str) -> None:
        self.table.add_row(Text(key), Text(value))

    def __rich__(self) -> Table:
        return self.table


def _table() -> _KeyValues:
    return _KeyValues()


def _say(text: str) -> None:
    out.print(text, markup=False, emoji=False)


def _cross_check_rows(table: _KeyValues, cc: Any) -> None:
    ref = cc.to_dict()["reference"]
    table.add_row("cross-check", f"{_fmt(cc.reference_epsilon)}  by {_accountant_line(ref)}")
    if cc.agree is None:
        table.add_row("agreement", f"not checked: {cc.note}")
        return
    lo = "-inf" if cc.lower is None else _fmt(cc.lower)
    hi = "+inf" if cc.upper is None else _fmt(cc.upper)
    verdict = "agree" if cc.agree else "DISAGREE"
    table.add_row("agreement", f"{verdict}: {cc.note}; {cc.accountant} must lie in [{lo}, {hi}]")


def _warn_disagreement(cc: Any) -> None:
    if cc.agree is False:
        err.print(
            f"warning: {cc.accountant} ({cc.epsilon:.4f}) and {cc.reference} ({cc.reference_epsilon:.4f}) disagree beyond "
            "the stated tolerance: do not rely on this figure before investigating",
            markup=False,
            emoji=False,
        )


def _fallback_rows(table: _KeyValues, report: Any) -> None:
    if report.fell_back:
        table.add_row("requested", report.requested)
        table.add_row("fallback", report.statement)


def register(app: typer.Typer) -> None:
    budget = typer.Typer(
        name="budget",
        help="Privacy budget: epsilon for DP-SGD settings, the noise for a target epsilon, and the ledger.",
        no_args_is_help=True,
    )
    app.add_typer(budget, name="budget")

    @budget.command("epsilon")
    def epsilon_cmd(
        sample_rate: float = typer.Option(..., "--sample-rate", help="Poisson sampling rate q = expected batch size / privacy units."),
        noise_multiplier: float = typer.Option(..., "--noise-multiplier", help="Noise std / clipping norm (sigma)."),
        steps: int = typer.Option(..., "--steps", help="Number of DP-SGD steps."),
        delta: float = typer.Option(..., "--delta", help="Target delta, well below 1/N (see `budget delta`)."),
        accountant: AccountantChoice = typer.Option(AccountantChoice.prv, "--accountant", help=_ACCOUNTANT_HELP),
        allow_rdp_fallback: bool = typer.Option(
            False,
            "--allow-rdp-fallback",
            hidden=True,
            help="Accepted for compatibility and ignored: the fallback (prv -> pld -> rdp) is now always on.",
        ),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    ) -> None:
        """Epsilon spent by DP-SGD with Poisson sampling, with an independent cross-check."""

        def run() -> None:
            from flexaudit.privacy import account, segment

            seg = segment(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
            report = account([seg], delta=delta, accountant=accountant.value)
            cc = report.cross_check([seg])
            d = report.to_dict()
            if json_out:
                print_json(
                    {
                        **d,
                        "sample_rate": seg.sample_rate,
                        "noise_multiplier": seg.noise_multiplier,
                        "steps": seg.steps,
                        "sampling": "poisson",
                        "cross_check": cc.to_dict(),
                    }
                )
            else:
                table = _table()
                table.add_row("epsilon", f"{report.epsilon:.4f}")
                table.add_row("delta", f"{report.delta:g}")
                table.add_row("accountant", _accountant_line(d["accountant"]))
                _fallback_rows(table, report)
                _cross_check_rows(table, cc)
                table.add_row(
                    "settings", f"sample rate {seg.sample_rate:g}, noise multiplier {seg.noise_multiplier:g}, {seg.steps} steps, Poisson sampling"
                )
                out.print(table)
            _warn_disagreement(cc)

        guarded(run)

    @budget.command("noise")
    def noise_cmd(
        sample_rate: float = typer.Option(..., "--sample-rate", help="Poisson sampling rate q."),
        steps: int = typer.Option(..., "--steps", help="Planned number of DP-SGD steps."),
        delta: float = typer.Option(..., "--delta", help="Target delta."),
        target_epsilon: float = typer.Option(..., "--target-epsilon", help="Epsilon not to exceed."),
        accountant: AccountantChoice = typer.Option(AccountantChoice.prv, "--accountant", help=_ACCOUNTANT_HELP),
        tolerance: float = typer.Option(0.01, "--tolerance", help="Return sigma whose epsilon is within this of the target (below it)."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    ) -> None:
        """The smallest noise multiplier whose epsilon stays at or below a target."""

        def run() -> None:
            from flexaudit.privacy import account, noise_multiplier_for, segment

            sigma = noise_multiplier_for(
                target_epsilon=target_epsilon,
                sample_rate=sample_rate,
                steps=steps,
                delta=delta,
                accountant=accountant.value,
                tolerance=tolerance,
            )
            seg = segment(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)
            report = account([seg], delta=delta, accountant=accountant.value)
            cc = report.cross_check([seg])
            d = report.to_dict()
            if json_out:
                print_json(
                    {
                        **d,
                        "noise_multiplier": sigma,
                        "target_epsilon": target_epsilon,
                        "tolerance": tolerance,
                        "sample_rate": seg.sample_rate,
                        "steps": seg.steps,
                        "sampling": "poisson",
                        "cross_check": cc.to_dict(),
                    }
                )
            else:
                table = _table()
                table.add_row("noise multiplier", f"{sigma:.6g}")
                table.add_row("epsilon", f"{report.epsilon:.4f} (target {target_epsilon:g})")
                table.add_row("delta", f"{report.delta:g}")
                table.add_row("accountant", _accountant_line(d["accountant"]))
                _fallback_rows(table, report)
                _cross_check_rows(table, cc)
                table.add_row("settings", f"sample rate {seg.sample_rate:g}, {seg.steps} steps, Poisson sampling")
                out.print(table)
            _warn_disagreement(cc)

        guarded(run)

    @budget.command("delta")
    def delta_cmd(
        units: int = typer.Option(..., "--units", help="Number of privacy units N (documents or data subjects)."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    ) -> None:
        """The default delta for N privacy units (largest power of ten <= 1/(10 N), at most 1e-5)."""

        def run() -> None:
            from flexaudit.privacy import default_delta

            value = default_delta(units)
            rule = "largest power of ten <= 1/(10*N), at most 1e-5"
            if json_out:
                print_json({"units": units, "delta": value, "rule": rule})
            else:
                _say(f"delta {value:g} for N = {units} privacy units ({rule})")

        guarded(run)

    @budget.command("ledger")
    def ledger_cmd(
        owner: Optional[str] = typer.Option(None, "--owner", help="Show only this data owner."),
        dataset: Optional[str] = typer.Option(None, "--dataset", help="Show only this dataset fingerprint."),
        runs: bool = typer.Option(False, "--runs", help="Also list every run."),
        db: Optional[Path] = typer.Option(None, "--db", help="Ledger file (default: $FLEXAUDIT_HOME/ledger.db)."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    ) -> None:
        """What each dataset has spent: all released runs composed, against its cap."""

        def run() -> None:
            from flexaudit.privacy import Ledger, default_ledger_path

            path = db if db is not None else default_ledger_path()
            if not Ledger.exists(path):
                if json_out:
                    print_json({"ledger": str(path), "exists": False, "datasets": [], "runs": []})
                else:
                    _say(f"no ledger at {path}: nothing has been recorded yet")
                return
            with Ledger(path, create=False) as ledger:
                totals = [t for t in ledger.datasets(owner=owner) if dataset is None or t.dataset == dataset]
                records = ledger.runs(owner=owner, dataset=dataset) if (runs or json_out) else []
                version = ledger.schema_version()
            if json_out:
                print_json(
                    {
                        "ledger": str(path),
                        "exists": True,
                        "schema_version": version,
                        "datasets": [t.to_dict() for t in totals],
                        "runs": [r.to_dict() for r in records],
                    }
                )
                return
            if not totals:
                _say(f"ledger {path}: no runs or caps" + (f" for owner {owner!r}" if owner else ""))
                return
            _say(f"privacy budget ledger {path}")
            for t in totals:
                block = _table()
                if t.guarantee == "dp":
                    acc = t.to_dict()["accountant"]
                    spent = f"{_fmt(t.epsilon)} at delta {t.delta:g} per {t.unit} ({acc['name']}, {acc['library']} {acc['version']})"
                else:
                    spent = t.statement
                block.add_row("spent", spent)
                block.add_row("runs", f"{t.released_runs} released ({t.non_dp_runs} without DP), {t.planned_runs} planned")
                if t.cap_epsilon is None:
                    block.add_row("cap", "none set")
                else:
                    left = "none (no formal guarantee)" if t.epsilon is None else _fmt(t.cap_epsilon - t.epsilon)
                    block.add_row("cap", f"{t.cap_epsilon:g} at delta {t.cap_delta:g}; remaining {left}")
                if t.note:
                    block.add_row("note", t.note)
                _say(f"\nowner {t.owner}  dataset {t.dataset}")
                out.print(block)
            if runs:
                _say("\nruns")
                for r in records:
                    hist = r.history if r.status == "released" else r.planned
                    steps = "" if hist is None else f"  {sum(s.steps for s in hist)} steps"
                    delta_txt = "" if r.delta is None else f"  delta {r.delta:g}"
                    when = f"  released {r.released_at}" if r.released_at else ""
                    _say(
                        f"  {r.run_id}  owner {r.owner}  expert {r.expert}  {r.status}  {r.guarantee}  per {r.unit}"
                        f"{delta_txt}{steps}{when}"
                    )

        guarded(run)

    @budget.command("cap")
    def cap_cmd(
        owner: str = typer.Option(..., "--owner", help="The data owner."),
        dataset: str = typer.Option(..., "--dataset", help="The dataset fingerprint (hmac-sha256:...)."),
        epsilon: float = typer.Option(..., "--epsilon", help="Total epsilon this dataset may spend over all released runs."),
        delta: float = typer.Option(..., "--delta", help="The delta the cap is stated at."),
        accountant: AccountantChoice = typer.Option(AccountantChoice.prv, "--accountant", help=_ACCOUNTANT_HELP),
        db: Optional[Path] = typer.Option(None, "--db", help="Ledger file (default: $FLEXAUDIT_HOME/ledger.db)."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    ) -> None:
        """Set the cap of one owner's dataset; runs that would exceed it are refused before training."""

        def run() -> None:
            from flexaudit.privacy import Ledger

            with Ledger(db) as ledger:
                result = ledger.set_cap(owner=owner, dataset=dataset, epsilon=epsilon, delta=delta, accountant=accountant.value)
            if json_out:
                print_json(result)
                return
            total = result["total"]
            _say(f"cap set: owner {owner!r}, dataset {dataset}: epsilon {epsilon:g} at delta {delta:g} ({accountant.value})")
            _say(f"spent so far: {total['statement']}")
            if total["epsilon"] is None or total["epsilon"] > epsilon:
                _say("the dataset is already over this cap: every further run will be refused")

        guarded(run)
