"""`readmission ingest`, `init-warehouse`, `status` and `sample`: the data and the warehouse."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from readmission.cli.output import figure


def ingest(
    batches: Annotated[int | None, typer.Option(help="Ingest at most N new batches.")] = None,
    source: Annotated[str | None, typer.Option(help="Overrides DATA_SOURCE.")] = None,
) -> None:
    """Store what an extract adds to the warehouse (any later extract, overlap or replay)."""
    from readmission import extracts
    from readmission.config import get_settings
    from readmission.data import ingest_report
    from readmission.data.dataset import DatasetError

    try:
        ingested = extracts.ingest(get_settings(), max_batches=batches, source=source)
    except (DatasetError, ingest_report.ExtractRefused) as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    for b in ingested.report.new_batches:
        typer.echo(
            f"batch {b.batch_id} ({b.kind}): {b.rows} rows, {b.accepted} accepted, "
            f"{b.quarantined} quarantined"
        )
    typer.echo(ingested.describe())


def init_warehouse() -> None:
    """Create or upgrade the warehouse's schema (readmission.data.migrations) and grant the serving
    API's login what it may do there.

    Run as the warehouse's owner before the API starts (compose: the one-shot warehouse-init):
    the API's login (readmission_api) may not change the schema. Every other command upgrades it
    on first use too. Safe to re-run: it applies what is missing and grants what is lacking.
    """
    from readmission.config import get_settings
    from readmission.data import database
    from readmission.data.tables import API_ROLE

    ready = database.init_warehouse(get_settings().warehouse_url)
    typer.echo(f"warehouse ready: {ready.address}")
    typer.echo(f"schema revision {ready.revision}")
    if ready.api_privileges is None:
        if ready.postgresql:
            typer.echo(
                f"no login {API_ROLE} on this server: the API cannot log in with its own "
                "(postgres_init creates it; docs/deployment.md, an existing volume)"
            )
        return
    for table, privileges in ready.api_privileges.items():
        typer.echo(f"{API_ROLE} may {', '.join(privileges)} on {table}")


def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document instead of the table.")
    ] = False,
) -> None:
    """Batches ingested and trained, model versions, and which one is in production."""
    from readmission import status
    from readmission.config import get_settings
    from readmission.registry_reader import RegistryError

    settings = get_settings()
    try:
        report = status.report(settings)
    except RegistryError as error:  # MLflow down or refusing this login: say so, no traceback
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    typer.echo(f"warehouse: {report['warehouse']}")
    typer.echo(f"MLflow: {settings.tracking_uri}")
    h = report["holdout"]
    typer.echo(
        f"holdout: {h['rows']} encounters of {h['patients']} patients (fingerprint "
        f"{h['fingerprint']}), patients also in training: {h['patients_also_in_training']}"
    )
    typer.echo(f"ingests: {len(report['ingests'])}, corrections recorded: {report['corrections']}")
    for b in report["batches"]:
        trained = f"trained -> v{b['model_version']}" if b["trained"] else "untrained"
        typer.echo(
            f"  batch {b['batch_id']:>3} {b['kind']:<8} {b['rows']:>6} rows "
            f"({b['quarantined']} quarantined) {'' if b['kind'] == 'holdout' else trained}"
        )
    typer.echo(f"model {report['model_name']}: production = {report['production_version']}")
    typer.echo(
        "  AUC now: on today's holdout, where versions compare (scored by readmission evaluate); "
        "at training: on that day's holdout (its fingerprint)"
    )
    for v in report["versions"]:
        # MLflow calls "no stage" "None": show only the labels a version has.
        labels = [*v["aliases"], *([v["stage"]] if v["stage"] not in (None, "None") else [])]
        if v["rolled_back"]:
            labels.append("rolled-back")
        typer.echo(
            f"  v{v['version']:<4} parent {v['parent_version'] or '-':<4} "
            f"AUC now {figure(v['current_holdout_roc_auc'])} "
            f"at training {figure(v['holdout_roc_auc'])} ({v['holdout_fingerprint'] or '-'}) "
            f"log-loss {figure(v['holdout_log_loss'])} {' '.join(labels)}".rstrip()
        )
    if report["promotions"]:
        last = report["promotions"][-1]
        typer.echo(
            f"last production change {last['time']} by {last['by']} "
            f"({len(report['promotions'])} in all: readmission promotions)"
        )


def sample(
    path: Annotated[str, typer.Argument(help="The CSV file to write.")],
    rows: Annotated[int, typer.Option(help="How many encounters.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same rows.")] = 0,
) -> None:
    """Write a synthetic sample with the data set's columns to PATH (.csv)."""
    from readmission.data.dataset import synthetic_sample

    synthetic_sample(rows, seed).to_csv(path, index=False)
    typer.echo(f"wrote {rows} synthetic encounters to {path}")
