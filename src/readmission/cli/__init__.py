"""`readmission`: the platform's command line. The DAGs and the demo call the same functions.

The commands live by stage (data_commands, model_commands, release_commands,
monitoring_commands) and are registered here, in the order `--help` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

import readmission
from readmission.cli import data_commands, model_commands, monitoring_commands, release_commands
from readmission.logging_setup import configure_logging

# Only typer and the light modules above load with the CLI: `--help`, `--version` and each
# command must not wait for MLflow, pandas and scikit-learn (seconds to import) unless the command
# uses them, so every command imports the domain modules it calls (tests/core/test_cli_imports.py).

app = typer.Typer(
    help="Diabetes readmission platform: ingest, train, promote, inspect.",
    no_args_is_help=True,
    add_completion=False,
    # click's plain help: no `<bool>` beside flags, and no rich to import to print it.
    rich_markup_mode=None,
)


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(f"readmission {readmission.__version__}")
        raise typer.Exit()


@app.callback()
def _setup(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at DEBUG level (default INFO).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    configure_logging(verbose)


webhook_app = typer.Typer(
    help="The MLflow registry webhook that tells the API of promotions at once.",
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook")
webhook_app.command("ensure")(release_commands.webhook_ensure)

for command, name in (
    (data_commands.ingest, None),
    (model_commands.train, None),
    (release_commands.promote, None),
    (release_commands.shadow, None),
    (release_commands.rollback, None),
    (release_commands.evaluate, None),
    (release_commands.promotions, None),
    (release_commands.change_control_plan, "plan"),
    (data_commands.init_warehouse, "init-warehouse"),
    (data_commands.status, None),
    (monitoring_commands.realized_performance, "performance"),
    (model_commands.tune, None),
    (data_commands.sample, None),
):
    app.command(name)(command)
