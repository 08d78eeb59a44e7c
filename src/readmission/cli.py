"""`readmission`: the platform's command line. The DAGs and the demo call the same functions."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from typing import Annotated

import typer

import readmission
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


@app.command()
def ingest(
    batches: Annotated[int | None, typer.Option(help="Ingest at most N new batches.")] = None,
    source: Annotated[str | None, typer.Option(help="Overrides DATA_SOURCE.")] = None,
) -> None:
    """Store what an extract adds to the warehouse (any later extract, overlap or replay)."""
    from readmission import extracts, warehouse
    from readmission.config import get_settings
    from readmission.data.dataset import DatasetError

    try:
        ingested = extracts.ingest(get_settings(), max_batches=batches, source=source)
    except (DatasetError, warehouse.ExtractRefused) as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    for b in ingested.report.new_batches:
        typer.echo(
            f"batch {b.batch_id} ({b.kind}): {b.rows} rows, {b.accepted} accepted, "
            f"{b.quarantined} quarantined"
        )
    typer.echo(ingested.describe())


@app.command()
def train(
    batches: Annotated[int | None, typer.Option(help="Train at most N batches.")] = None,
) -> None:
    """Warm-start the model on every ingested, untrained batch, one registered version each."""
    import mlflow

    from readmission import training, warehouse
    from readmission.config import get_settings

    settings = get_settings()

    def announce(number: int, total: int, batch_id: int) -> None:
        typer.echo(f"[{number}/{total}] training batch {batch_id} ...")

    # Under `mlflow run` (MLFLOW_RUN_ID set) every batch's run becomes a child of the project run.
    with mlflow.start_run() if os.environ.get("MLFLOW_RUN_ID") else nullcontext():
        try:
            results = training.train_pending(settings, batches, on_step=announce)
        except warehouse.LeaseBusy as busy:
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


# `readmission evaluate`'s exit code when promotion was asked for and the change control plan
# reserves the change for a person: distinct from 1 (a failure) and 2 (bad input or state).
EXIT_NEEDS_PERSON = 3


def _operator() -> str:
    """Who runs the command, for the promotion ledger."""
    return f"cli ({getpass.getuser()})"


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Model version to promote.")],
    reason: Annotated[str, typer.Option(help="Why, for the promotion ledger.")] = "",
    by: Annotated[
        str | None,
        typer.Option(help="Who decides, for the promotion ledger (default: the OS user)."),
    ] = None,
) -> None:
    """Make VERSION the production model (alias MODEL_ALIAS and legacy stage Production): a
    person's decision, recorded as theirs with the reason as their comment, whatever the
    change control plan reserves for a person."""
    from readmission import change_control
    from readmission.config import get_settings
    from readmission.release import ledger, production_changes

    settings = get_settings()
    try:
        change = production_changes.change_production(
            settings,
            version,
            by or getpass.getuser(),
            reason or "promoted by hand",
            ledger.MANUAL,
            authority=ledger.Authority(change_control.file_sha256(settings), None, reason or None),
        )
    except production_changes.PromotionError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    if change is None:
        typer.echo(f"{settings.model_name} version {version} is already in production")
        return
    typer.echo(
        f"{settings.model_name} version {version} is now '{settings.model_alias}' "
        f"(was {change.from_version or 'none'})"
    )


@app.command()
def shadow(
    version: Annotated[str | None, typer.Argument(help="Model version to score in shadow.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Score no version in shadow.")] = False,
) -> None:
    """Score VERSION beside production on every request (alias SHADOW_ALIAS): its probability
    is logged beside production's answer for the live comparison, never answered."""
    from mlflow.exceptions import MlflowException

    from readmission import registry
    from readmission.config import get_settings

    settings = get_settings()
    if (version is None) == (not clear):
        typer.secho("error: give VERSION or --clear (not both)", fg="red", err=True)
        raise typer.Exit(2)
    try:
        registry.set_shadow(settings, None if clear else version)
    except MlflowException as error:
        typer.secho(f"error: {error.message}", fg="red", err=True)
        raise typer.Exit(2) from error
    if clear:
        typer.echo(f"{settings.model_name}: no version in shadow")
        return
    typer.echo(f"{settings.model_name} version {version} is now '{settings.shadow_alias}'")


@app.command()
def rollback(
    to: Annotated[
        str | None,
        typer.Option(help="Version to return to; default: the last one before, not rolled back."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the promotion ledger.")] = "",
) -> None:
    """Take the production version out (the gate never promotes it again) and return to an
    earlier one."""
    from readmission.config import get_settings
    from readmission.release import production_changes

    settings = get_settings()
    try:
        change = production_changes.rollback(settings, _operator(), reason or None, to)
    except production_changes.PromotionError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    typer.echo(
        f"{settings.model_name} rolled back: version {change.to_version} is production "
        f"(was {change.from_version}, now marked rolled back)"
    )


@app.command()
def evaluate(
    auto_promote: Annotated[
        bool | None,
        typer.Option(
            "--auto-promote/--no-auto-promote",
            help="Promote a passing challenger now (default AUTO_PROMOTE).",
        ),
    ] = None,
) -> None:
    """Judge the lineage head against the production version on the holdout, as DAG 03 does
    (PROMOTION_POLICY, NON_INFERIORITY_MARGIN and the quality floors), record the verdict and
    the change control plan's decision. Exit 3: promotion was asked for, but the plan reserves
    this change for a person (`readmission promote VERSION --reason ...` is theirs to run)."""
    from readmission import change_control
    from readmission.config import get_settings
    from readmission.release import production_changes, promotion

    settings = get_settings()
    try:
        verdict = promotion.evaluate_and_promote(settings, auto_promote, by=_operator())
    except (production_changes.PromotionError, change_control.PlanError) as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    if verdict is None:
        typer.echo(f"{settings.model_name} has no trained version yet: readmission train first")
        return
    status = (
        "not judged"
        if not verdict.judged
        else "promoted"
        if verdict.promoted
        else "waits for a person"
        if verdict.needs_person
        else "passed, not promoted"
        if verdict.passed
        else "rejected"
    )
    typer.echo(
        f"challenger v{verdict.challenger_version} against champion "
        f"v{verdict.champion_version or '-'}: {status}: {verdict.reason}"
    )
    if verdict.decision is not None:
        decision = verdict.decision
        typer.echo(
            f"change control plan {decision.plan_sha256[: change_control.SHORT_HASH]}, rule "
            f"{decision.rule_id or '(none)'}: {decision.ruling.value}: {decision.reason}"
        )
    if verdict.needs_person and (settings.auto_promote if auto_promote is None else auto_promote):
        typer.secho(
            f"not promoted: the change control plan reserves this change for a person; "
            f"theirs to run: readmission promote {verdict.challenger_version} --reason ...",
            fg="yellow",
            err=True,
        )
        raise typer.Exit(EXIT_NEEDS_PERSON)


@app.command()
def promotions(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list instead of one line per change.")
    ] = False,
) -> None:
    """Every change of the production version, oldest first: when, from, to, by whom, why."""
    from readmission.config import get_settings
    from readmission.release import ledger, production_changes

    settings = get_settings()
    production_changes.notice_outside_changes(settings, noticed_by=_operator())
    entries = ledger.entries(settings.warehouse_url, settings.model_name)
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"no production change of {settings.model_name} recorded yet")
    for e in entries:
        authority = e.authority
        under = (
            f" [plan {authority.plan_sha256[:12]}"
            f"{f', rule {authority.rule}' if authority.rule else ''}]"
            if authority.plan_sha256
            else ""
        )
        said = f' "{authority.comment}"' if authority.comment else ""
        typer.echo(
            f"{e.time:%Y-%m-%d %H:%M:%S} v{e.from_version or '-'} -> v{e.to_version or '-'} "
            f"by {e.by}{said}: {e.reason}{under}"
        )


@app.command("plan")
def change_control_plan(
    check: Annotated[
        bool, typer.Option("--check", help="Only validate: one line, non-zero exit if invalid.")
    ] = False,
    file: Annotated[
        str | None,
        typer.Argument(help="A plan file to read instead of CHANGE_CONTROL_PLAN's (a draft)."),
    ] = None,
) -> None:
    """The change control plan: its version (hash) and which changes the platform may make on
    its own, on what criteria, and which need a person (docs/change_control.md)."""
    # Imported here: the plan's YAML and schema are not needed by the other commands.
    from pathlib import Path

    from readmission import change_control
    from readmission.config import get_settings

    path = Path(file) if file else change_control.plan_path(get_settings())
    try:
        plan = change_control.load(path)
    except change_control.PlanError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    if check:
        typer.echo(f"{path}: valid, plan {plan.short_hash} ({len(plan.rules)} rules)")
        return
    typer.echo(f"plan {plan.short_hash} (sha256 {plan.sha256})")
    typer.echo(f"file {path}")
    typer.echo("first matching rule decides; a change no rule names needs a person")

    def shown(values: dict[str, object]) -> str:
        return ", ".join(
            f"{k}=[{', '.join(map(str, v))}]" if isinstance(v, tuple) else f"{k}={v}"
            for k, v in values.items()
        )

    for number, rule in enumerate(plan.rules, 1):
        typer.echo(f"{number:>2}. {rule.id} [{rule.change.value}] -> {rule.decision}")
        typer.echo(f"    {rule.description}")
        when = rule.when.model_dump(exclude_none=True)
        if when:
            typer.echo(f"    when: {shown(when)}")
        criteria = rule.criteria.model_dump(exclude_none=True, exclude_defaults=True)
        if criteria:
            typer.echo(f"    criteria: {shown(criteria)}")


@app.command("init-warehouse")
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


@app.command()
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
            f"AUC now {_figure(v['current_holdout_roc_auc'])} "
            f"at training {_figure(v['holdout_roc_auc'])} ({v['holdout_fingerprint'] or '-'}) "
            f"log-loss {_figure(v['holdout_log_loss'])} {' '.join(labels)}".rstrip()
        )
    if report["promotions"]:
        last = report["promotions"][-1]
        typer.echo(
            f"last production change {last['time']} by {last['by']} "
            f"({len(report['promotions'])} in all: readmission promotions)"
        )


@app.command("performance")
def realized_performance(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    act: Annotated[
        bool,
        typer.Option(
            "--act",
            help="Then act on the live evidence as DAG 04 does: roll production back below "
            "REALIZED_AUC_FLOOR, promote a shadow shown better (when the plan allows).",
        ),
    ] = False,
) -> None:
    """How each served version really did: realized metrics on the scored encounters whose
    outcome has arrived, per version and per week, and an estimate for those still pending."""
    from readmission.config import get_settings
    from readmission.monitoring import realized
    from readmission.release import live

    settings = get_settings()
    # MLflow prints a run's URL on stdout when it ends one: to stderr, so --json stays JSON.
    with redirect_stdout(sys.stderr):
        report = realized.compute(settings)
        actions = live.act(settings, report, f"{_operator()} (performance --act)") if act else []
    if as_json:
        if act:
            report = {**report, "actions": [a.as_dict() for a in actions]}
        typer.echo(json.dumps(report, indent=2))
        return
    for action in actions:
        done = "made" if action.made else f"NOT made ({action.decision.ruling.value})"
        typer.echo(
            f"{action.kind.value} v{action.from_version} -> v{action.to_version or '?'}: {done}; "
            f"{action.evidence}; plan: {action.decision.reason}"
        )
    if act and not actions:
        typer.echo("live evidence: no change called for")
    if not report["versions"]:
        typer.echo("no prediction logged yet: the API logs every encounter it scores")
        return
    typer.echo(
        f"{report['model_name']}: {report['outcomes_joined']} outcomes joined "
        f"(report {report['report_id']})"
    )
    for row in realized.as_rows(report):
        typer.echo(
            f"  v{row['version']:<4} {row['role']:<10} scored {row['scored']:>7} "
            f"labelled {row['labelled']:>7} "
            f"pending {row['pending']:>7}  AUC realized {_figure(row['realized_roc_auc'])} "
            f"holdout {_figure(row['holdout_roc_auc'])} "
            f"estimated (pending) {_figure(row['estimated_roc_auc'])}"
        )
    for pair in report["comparisons"]:
        interval = pair["delta_roc_auc_ci"]
        typer.echo(
            f"  shadow v{pair['shadow']} vs production v{pair['production']} on {pair['n']} "
            f"encounters: AUC difference {_figure(pair['delta_roc_auc'])}"
            + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
        )


def _figure(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


@app.command()
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


@app.command()
def sample(
    path: Annotated[str, typer.Argument(help="The CSV file to write.")],
    rows: Annotated[int, typer.Option(help="How many encounters.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same rows.")] = 0,
) -> None:
    """Write a synthetic sample with the data set's columns to PATH (.csv)."""
    from readmission.data.dataset import synthetic_sample

    synthetic_sample(rows, seed).to_csv(path, index=False)
    typer.echo(f"wrote {rows} synthetic encounters to {path}")


webhook_app = typer.Typer(
    help="The MLflow registry webhook that tells the API of promotions at once.",
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook")


@webhook_app.command("ensure")
def webhook_ensure(
    url: Annotated[
        str,
        typer.Option(
            help="Where MLflow sends alias changes: the API's /webhooks/mlflow, as the MLflow "
            "server reaches it (compose and k3d: http://api:8000/webhooks/mlflow)."
        ),
    ],
    # None, not webhooks.WEBHOOK_NAME: naming it here would import MLflow with the CLI.
    name: Annotated[
        str | None,
        typer.Option(help="The webhook's name in the registry; default: the platform's own."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Have the MLflow server send a test event, and fail unless the API accepts it."
        ),
    ] = False,
) -> None:
    """Create or update the registry webhook NAME (alias created/deleted, signed with
    MLFLOW_WEBHOOK_SECRET) to send to URL. Safe to re-run."""
    from readmission.config import get_settings
    from readmission.release import webhooks

    settings = get_settings()
    try:
        webhook = webhooks.ensure_webhook(settings, url, name or webhooks.WEBHOOK_NAME)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    events = ", ".join(str(event) for event in webhook.events)
    typer.echo(f"webhook {webhook.name} ({webhook.webhook_id}): {events} -> {webhook.url}")
    if check:
        accepted, said = webhooks.send_test_delivery(settings, webhook)
        typer.echo(f"test delivery {'accepted' if accepted else 'refused'}: {said}")
        if not accepted:
            raise typer.Exit(1)
