"""The `baseline` commands: comparisons an owner trains for its own audit, never shared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flexaudit.cli._common import DeviceOption, DtypeChoice, DtypeOption, RichProgress, guarded, out, placement_of

baseline_app = typer.Typer(help="Owner-side comparison models for the extraction table (never shared).",
                           no_args_is_help=True)


@baseline_app.command("dense")
def dense_cmd(
    expert_dir: Annotated[Path, typer.Argument(help="The expert package whose members and schedule to repeat.")],
    anchor: Annotated[Path, typer.Option(help="The anchor the expert was trained on.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Where to write it (default: EXPERT.local/dense-baseline, among the owner's private files).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing baseline in --out.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = DtypeChoice.float32,
) -> None:
    """Fine-tune every parameter of the anchor on the expert's member documents with the expert's own schedule:
    the dense model the method's paper compares against (flexaudit audit --dense-baseline)."""
    from flexaudit.moe.dense import train_dense_baseline

    def run():
        placement = placement_of(device, dtype)
        with RichProgress() as progress:
            return train_dense_baseline(expert_dir, anchor_dir=anchor, out=out_dir, resume=resume, overwrite=force,
                                        placement=placement, progress=progress)

    baseline = guarded(run)
    t = baseline.info["training"]
    out.print(f"dense baseline of {baseline.info['expert']['name']!r}: {baseline.directory}", markup=False)
    out.print(f"  every parameter trained, {t['steps']} steps on {t['documents']:,} member documents "
              f"({t['epochs']} epochs), final loss {t['final_loss']:.3f}", markup=False)
    out.print("  private: it is fine-tuned on your documents; compare with it (flexaudit audit --dense-baseline), "
              "never share it", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
