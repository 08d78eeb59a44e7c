"""`readmission performance`: how each served version really did, and acting on it."""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from typing import Annotated

import typer

from readmission.cli.output import figure, operator


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
        actions = live.act(settings, report, f"{operator()} (performance --act)") if act else []
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
            f"pending {row['pending']:>7}  AUC realized {figure(row['realized_roc_auc'])} "
            f"holdout {figure(row['holdout_roc_auc'])} "
            f"estimated (pending) {figure(row['estimated_roc_auc'])}"
        )
    for pair in report["comparisons"]:
        interval = pair["delta_roc_auc_ci"]
        typer.echo(
            f"  shadow v{pair['shadow']} vs production v{pair['production']} on {pair['n']} "
            f"encounters: AUC difference {figure(pair['delta_roc_auc'])}"
            + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
        )
