"""`readmission evaluate`, `promote`, `shadow`, `rollback`, `promotions`, `plan` and
`webhook ensure`: judging versions and changing production, under the change control plan."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer

from readmission.cli.output import operator

# `readmission evaluate`'s exit code when promotion was asked for and the change control plan
# reserves the change for a person: distinct from 1 (a failure) and 2 (bad input or state).
EXIT_NEEDS_PERSON = 3


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
        change = production_changes.rollback(settings, operator(), reason or None, to)
    except production_changes.PromotionError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error
    typer.echo(
        f"{settings.model_name} rolled back: version {change.to_version} is production "
        f"(was {change.from_version}, now marked rolled back)"
    )


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
        verdict = promotion.evaluate_and_promote(settings, auto_promote, by=operator())
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


def promotions(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list instead of one line per change.")
    ] = False,
) -> None:
    """Every change of the production version, oldest first: when, from, to, by whom, why."""
    from readmission.config import get_settings
    from readmission.release import ledger, production_changes

    settings = get_settings()
    production_changes.notice_outside_changes(settings, noticed_by=operator())
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
