"""`readmission train` and `tune`: warm-starting the model on new batches, and its
hyperparameters."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Annotated

import typer


def train(
    batches: Annotated[int | None, typer.Option(help="Train at most N batches.")] = None,
) -> None:
    """Warm-start the model on every ingested, untrained batch, one registered version each."""
    import mlflow

    from readmission import training
    from readmission.config import get_settings
    from readmission.data import lineage

    settings = get_settings()

    def announce(number: int, total: int, batch_id: int) -> None:
        typer.echo(f"[{number}/{total}] training batch {batch_id} ...")

    # Under `mlflow run` (MLFLOW_RUN_ID set) every batch's run becomes a child of the project run.
    with mlflow.start_run() if os.environ.get("MLFLOW_RUN_ID") else nullcontext():
        try:
            results = training.train_pending(settings, batches, on_step=announce)
        except lineage.LeaseBusy as busy:
            typer.echo(
                f"not training: {busy} (waited TRAINING_LEASE_WAIT={settings.training_lease_wait:g}"
                " s); it trains every pending batch"
            )
            return
        except training.LineageError as error:
            typer.secho(f"error: {error}", fg="red", err=True)
            raise typer.Exit(2) from error
    if not results:
        typer.echo("nothing to train: every ingested batch is trained (readmission ingest adds)")
    for result in results:
        typer.echo(
            f"  batch {result.batch_id} -> version {result.version} "
            f"(parent {result.parent_version or 'none'}): "
            + (
                "registered before its bookkeeping, adopted"
                if result.recovered
                else f"holdout AUC {result.holdout['roc_auc']:.4f}, "
                f"log-loss {result.holdout['log_loss']:.4f}"
            )
        )


def tune(
    source: Annotated[str | None, typer.Option(help="Overrides DATA_SOURCE.")] = None,
    validation_fraction: Annotated[
        float, typer.Option(help="Latest training rows held out.")
    ] = 0.2,
) -> None:
    """Choose SGD hyperparameters on a validation slice of the training rows (MLflow-logged)."""
    from readmission import tuning
    from readmission.config import get_settings
    from readmission.data.dataset import DatasetError

    settings = get_settings()
    try:
        train_rows = tuning.training_rows(settings, source)
    except DatasetError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"tuning on {len(train_rows)} training rows (holdout excluded) ...")
    with _progress_bar("tuning") as progress:
        winner = tuning.tune(settings, train_rows, validation_fraction, progress=progress)
    typer.echo(f"best: {winner.params.as_dict()}")
    typer.echo(
        f"validation AUC by batch: {[round(a, 4) for a in winner.aucs]}, "
        f"log-loss {winner.log_loss:.4f}"
    )
    typer.echo("set SGD_ALPHA, SGD_ETA0 and SGD_EPOCHS to use them for a new model lineage")


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A `progress(done, total)` that draws a bar on a terminal's stderr (log lines scroll
    above it), or None elsewhere: in CI and in files the log lines alone tell the progress."""
    if not sys.stderr.isatty():
        yield None
        return
    # rich comes with typer (its help and error rendering)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = (f"{label} ", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
