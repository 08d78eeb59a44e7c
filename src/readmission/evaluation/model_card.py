"""The model card of a version: what it is for, what it learned from, how well it does and for
whom, and where it falls short. Written by the training step into the version's MLflow run as
`model_card.json` (for programs: the API, the promotion gate) and `model_card.md` (for people).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import mlflow

from readmission import change_control
from readmission.config import Settings
from readmission.data.inventory import Batch
from readmission.evaluation import tripod_ai
from readmission.evaluation.holdout_evaluation import (
    BOOTSTRAP_SEED,
    HoldoutEvaluation,
)
from readmission.json_numbers import finite

JSON_PATH = "model_card.json"
MARKDOWN_PATH = "model_card.md"
CALIBRATION_PLOT = "plots/calibration.png"
ROC_PLOT = "plots/roc.png"
SCHEMA_VERSION = 2  # 2: the change_control and reporting sections
PUBLISHED_ROC_AUC = (0.64, 0.674)
log = logging.getLogger(__name__)

INTENDED_USE = {
    "purpose": (
        "Estimate, at discharge, the probability that an adult inpatient with diabetes is "
        "readmitted within 30 days, to prioritise follow-up care (calls, early clinic visits)."
    ),
    "users": (
        "Care-management and discharge-planning teams, as one input beside clinical judgement; "
        "model-risk reviewers and the platform's operators."
    ),
    "out_of_scope": (
        "Decisions to deny or ration care; patients outside US hospitals like those of the "
        "1999-2008 source data; any use without a person reviewing the flag."
    ),
}
STATIC_LIMITATIONS = (
    "Trained on encounters from 130 US hospitals, 1999-2008: practice, coding and populations "
    "have changed since; check calibration on local data before use.",
    "The label counts readmissions to the same hospital network only; readmissions elsewhere "
    "are missed, so the true rate is under-counted.",
    "Subgroups are compared by race, gender and age band as recorded; 'Unknown' race is "
    "missing data, not a group, and intersections are not evaluated.",
    "The threshold is chosen on the same holdout its precision, recall and selection rate are "
    "reported on; with one parameter fitted on thousands of rows the optimism is small.",
)


def build(
    settings: Settings,
    evaluation: HoldoutEvaluation,
    *,
    version: str | None,  # None until registered: the card is written before (training)
    run_id: str,
    parent_version: str | None,
    batches: Sequence[Batch],
    parameters: dict[str, Any],
    samples_seen: int,
    decisions: Sequence[change_control.Decision] | None = None,
) -> dict[str, Any]:
    """The card as JSON-ready data. `decisions`: the change control plan's decisions on this
    version so far; by default the one every trained version has, its warm start."""
    plan = change_control.current(settings)
    if decisions is None:
        decisions = [change_control.warm_start(plan, version)]
    holdout = {
        "n": evaluation.n,
        "positives": evaluation.positives,
        "prevalence": evaluation.positives / evaluation.n,
        "patients": evaluation.patients,
        "roc_auc": evaluation.roc_auc.roc_auc,
        "roc_auc_ci": evaluation.roc_auc.as_list(),
        "ci_level": evaluation.roc_auc.level,
        "bootstrap": {
            "unit": "patient (patient_nbr): all encounters of a drawn patient together",
            "resamples": settings.bootstrap_resamples,
            "valid_resamples": evaluation.roc_auc.resamples,
            "seed": BOOTSTRAP_SEED,
            "interval": "percentile",
        },
        **{k: evaluation.scores[k] for k in ("pr_auc", "log_loss", "brier")},
        "at_threshold": {
            **{k: evaluation.scores[k] for k in ("precision", "recall", "f1", "accuracy")},
            "selection_rate": evaluation.selection_rate,
        },
    }
    card: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": settings.model_name,
            "version": version,
            "run_id": run_id,
            "parent_version": parent_version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kind": "logistic regression (SGD, warm-started batch by batch) on a fixed "
            "feature space: one-hot categories, ICD-9 groups, scaled counts",
        },
        "intended_use": INTENDED_USE,
        "data": {
            "source": settings.data_source,
            "batches": [
                {
                    "batch_id": b.batch_id,
                    "first_encounter_id": b.first_encounter_id,
                    "last_encounter_id": b.last_encounter_id,
                    "rows": b.accepted,
                }
                for b in batches
            ],
            "encounter_range": [batches[0].first_encounter_id, batches[-1].last_encounter_id]
            if batches
            else None,
            "training_rows": samples_seen,
            "holdout": "patients never trained on, fixed for every version of the lineage",
        },
        "parameters": parameters,
        "holdout": holdout,
        "calibration": {**evaluation.calibration.as_dict(), "plot": CALIBRATION_PLOT},
        "threshold": {
            **evaluation.threshold.as_dict(),
            "description": evaluation.threshold.describe(),
        },
        "subgroups": {
            "min_events": evaluation.min_events,
            **{
                attribute: [row.as_dict() for row in rows]
                for attribute, rows in evaluation.subgroups.items()
            },
        },
        "published_range": {
            "roc_auc": list(PUBLISHED_ROC_AUC),
            "note": "ROC-AUC reported for 30-day readmission on this data set in published "
            "studies; a version far outside it deserves a second look.",
        },
    }
    card["limitations"] = limitations(settings, card)
    card["change_control"] = change_control.card_section(plan, decisions)
    card["reporting"] = tripod_ai.section()
    return finite(card)


def limitations(settings: Settings, card: dict[str, Any]) -> list[str]:
    """The fixed caveats, and those this version's numbers raise."""
    found = list(STATIC_LIMITATIONS)
    slope = card["calibration"]["slope"]
    if not settings.gate_calibration_slope_min <= slope <= settings.gate_calibration_slope_max:
        found.append(
            f"Calibration slope {slope:.2f} is outside [{settings.gate_calibration_slope_min}, "
            f"{settings.gate_calibration_slope_max}]: probabilities should not be read as risks."
        )
    auc, (low, high) = card["holdout"]["roc_auc"], PUBLISHED_ROC_AUC
    if auc < low:
        found.append(f"Holdout ROC-AUC {auc:.3f} is below the published range {low}-{high}.")
    for attribute in ("race", "gender", "age"):
        small = [row["group"] for row in card["subgroups"][attribute] if not row["reliable"]]
        if small:
            found.append(
                f"Too few events to estimate performance for {attribute} group(s) "
                f"{', '.join(small)}: the model is unchecked there."
            )
    return found


def markdown(card: dict[str, Any]) -> str:
    """The card for people: the same content as the JSON, as a document."""
    model, holdout, cal = card["model"], card["holdout"], card["calibration"]
    threshold, data = card["threshold"], card["data"]
    low, high = holdout["roc_auc_ci"]
    at = holdout["at_threshold"]
    lines = [
        f"# Model card: {model['name']} version {model['version'] or '(being registered)'}",
        "",
        f"Run `{model['run_id']}`, created {model['created_at']}; parent version "
        f"{model['parent_version'] or 'none (first of its lineage)'}. Model: {model['kind']}.",
        "",
        "## Intended use",
        "",
        f"- **Purpose**: {card['intended_use']['purpose']}",
        f"- **Users**: {card['intended_use']['users']}",
        f"- **Out of scope**: {card['intended_use']['out_of_scope']}",
        "",
        "## Data",
        "",
        f"Source `{data['source']}`; {data['training_rows']:,} training rows in "
        f"{len(data['batches'])} batch(es), encounters "
        f"{' to '.join(data['encounter_range'] or ['-', '-'])}.",
        "",
        "| batch | first encounter | last encounter | rows |",
        "| --- | --- | --- | --- |",
        *(
            f"| {b['batch_id']} | {b['first_encounter_id']} | {b['last_encounter_id']} "
            f"| {b['rows']:,} |"
            for b in data["batches"]
        ),
        "",
        f"Holdout: {holdout['n']:,} encounters of {holdout['patients']:,} patients, "
        f"{holdout['positives']:,} readmitted within 30 days ({holdout['prevalence']:.1%}); "
        f"{data['holdout']}.",
        "",
        "## Parameters",
        "",
        ", ".join(f"`{k}={v}`" for k, v in card["parameters"].items()),
        "",
        "## Performance on the holdout",
        "",
        f"- **ROC-AUC {holdout['roc_auc']:.3f}** (95% CI {low:.3f}-{high:.3f}, patient-level "
        f"bootstrap, {holdout['bootstrap']['resamples']} resamples); published range for this "
        f"data set {card['published_range']['roc_auc'][0]}-{card['published_range']['roc_auc'][1]}",
        f"- PR-AUC {holdout['pr_auc']:.3f}, log-loss {holdout['log_loss']:.4f}, "
        f"Brier {holdout['brier']:.4f}",
        f"- At the threshold: precision (PPV) {at['precision']:.3f}, recall (sensitivity) "
        f"{at['recall']:.3f}, F1 {at['f1']:.3f}, {at['selection_rate']:.1%} of encounters flagged",
        "",
        "## Threshold",
        "",
        f"{threshold['value']:.4f}: policy `{threshold['policy']}` ({threshold['description']}), "
        f"chosen on the {threshold['chosen_on']} ({threshold['n']:,} rows), not on training rows.",
        "",
        "## Calibration",
        "",
        f"Calibration intercept (in the large) {cal['intercept']:+.3f}, slope {cal['slope']:.3f}, "
        f"expected calibration error {cal['ece']:.4f}, Brier {cal['brier']:.4f}; mean predicted "
        f"{cal['mean_predicted']:.3f} against observed {cal['observed_rate']:.3f}.",
        "",
        f"![Calibration]({cal['plot']})",
        "",
        "| bin | mean predicted | observed | n |",
        "| --- | --- | --- | --- |",
        *(
            f"| {i} | {p['mean_predicted']:.3f} | {p['observed_rate']:.3f} | {p['n']:,} |"
            for i, p in enumerate(cal["curve"], 1)
        ),
        "",
        "## Subgroups",
        "",
        f"Groups with fewer than {card['subgroups']['min_events']} readmissions (or "
        "non-readmissions) get no AUC: too few for a stable estimate. Each table's n adds up to "
        "the holdout's.",
    ]
    for attribute in ("race", "gender", "age"):
        lines += [
            "",
            f"### {attribute.capitalize()}",
            "",
            "| group | n | prevalence | ROC-AUC (95% CI) | calibration-in-the-large | "
            "flagged | PPV | sensitivity |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *(_group_line(row) for row in card["subgroups"][attribute]),
        ]
    lines += ["", "## Known limitations", "", *(f"- {item}" for item in card["limitations"])]
    plan, reporting = card["change_control"], card["reporting"]
    lines += [
        "",
        "## Change control",
        "",
        f"Under change control plan `{plan['plan_hash']}` ({plan['plan_file']}, sha256 "
        f"`{plan['plan_sha256']}`); the rules that applied to this version:",
        "",
        "| change | rule | decision | why |",
        "| --- | --- | --- | --- |",
        *(
            f"| {d['facts']['kind']} | {d['rule'] or 'none'} | {d['outcome']} | {d['reason']} |"
            for d in plan["rules_applied"]
        ),
        "",
        "## Reporting: TRIPOD+AI",
        "",
        f"What this card reports of each item of the {reporting['checklist']} checklist, and "
        "what it does not.",
        "",
        "| item | topic | reported | where | note |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {i['item']} | {i['topic']} | {i['status']} | {', '.join(i['where']) or '-'} "
            f"| {i['note']} |"
            for i in reporting["items"]
        ),
        "",
    ]
    return "\n".join(lines)


def _group_line(row: dict[str, Any]) -> str:
    def number(value: float | None, fmt: str = ".3f") -> str:
        return "-" if value is None else format(value, fmt)

    if row["roc_auc"] is None:
        auc = f"not estimated: {row['note']}"
    else:
        auc = f"{row['roc_auc']:.3f} ({row['roc_auc_ci'][0]:.3f}-{row['roc_auc_ci'][1]:.3f})"
    return (
        f"| {row['group']} | {row['n']:,} | {row['prevalence']:.1%} | {auc} | "
        f"{number(row['calibration_in_the_large'], '+.3f')} | {row['selection_rate']:.1%} | "
        f"{number(row['ppv'])} | {number(row['sensitivity'])} |"
    )


def numbered(card: dict[str, Any], version: str) -> dict[str, Any]:
    """The card with its version's number, known once registered: in the model section and in
    the facts of the change-control decisions made before it had one."""
    section = card.get("change_control")
    if section is not None:
        rules = [
            {**rule, "facts": {**rule["facts"], "version": rule["facts"]["version"] or version}}
            for rule in section["rules_applied"]
        ]
        card = {**card, "change_control": {**section, "rules_applied": rules}}
    return {**card, "model": {**card["model"], "version": version}}


def write(card: dict[str, Any]) -> None:
    """Write both forms of the card into the active MLflow run."""
    mlflow.log_dict(card, JSON_PATH)
    mlflow.log_text(markdown(card), MARKDOWN_PATH)


def load(run_id: str) -> dict[str, Any] | None:
    """The card of a run (tracking URI already set), or None for a version trained before cards."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{JSON_PATH}")
    # Which error a missing artifact raises depends on the artifact store (local, proxied, S3);
    # a card that cannot be read must never keep a version from being served.
    except Exception as error:
        log.info("run %s has no readable model card: %s", run_id, error)
        return None
