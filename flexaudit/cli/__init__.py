"""The `flexaudit` command line: parses arguments, calls the library, maps results to exit codes.

Each area of the product registers its commands from its own module; no module here holds logic
the library should own. Exit codes are documented in flexaudit.errors.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="flexaudit",
    help="Train, merge and audit anchored mixture-of-experts language models (the FlexOlmo method).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # One module per product area; each adds its commands to `app`.
    from flexaudit.cli import audit, baseline, budget, compliance, core, trace

    for area in (core, budget, audit, baseline, compliance, trace):
        area.register(app)


_register()


def main() -> None:
    import sys

    from flexaudit.cli._common import refuse_other_commands_under_torchrun

    refuse_other_commands_under_torchrun(sys.argv[1:])
    app()
