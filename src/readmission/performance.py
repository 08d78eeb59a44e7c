"""Realized performance: how each served model version did on the encounters it actually scored.

The prediction log (readmission.prediction_log) is joined to the outcomes the warehouse holds.
For each served version, and each calendar week of scoring, the labelled encounters give the
realized metrics (only of encounters the model had not seen: when scored, neither trained on by
the lineage nor in the warehouse with their outcome; the others are counted, by reason);
the encounters still waiting for an outcome get a label-free estimate
(confidence-based performance estimation, as NannyML's CBPE: if the model is calibrated, an
encounter scored p is a positive with weight p and a negative with weight 1 - p, and the
expected metrics are the metrics of that weighted data). Once their outcomes arrive, the gap
between what was estimated and what was realized is recorded.

Each computation is stored in `performance_reports`, logged to MLflow (one run per version in
the model's experiment, a metric step per report) and read back by the API for Prometheus.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from sklearn import metrics

from readmission import prediction_log, registry, registry_reader
from readmission.calibration import calibration_intercept, calibration_slope
from readmission.config import Settings
from readmission.database import engine_for, transaction
from readmission.json_numbers import finite
from readmission.schema import POSITIVE_LABEL
from readmission.tables import (
    batches,
    clean_encounters,
    performance_reports,
    trainings,
)
from readmission.tables import prediction_log_table as log_table
from readmission.uncertainty import cluster_bootstrap_auc, paired_bootstrap_auc_difference

log = logging.getLogger(__name__)
RUN_KIND_TAG = "readmission.kind"
RUN_KIND = "realized_performance"
CHECKED_REPORTS = 10  # earlier estimates compared with the outcomes that arrived since
RECENT_OUTCOMES = 1000  # the realized alert's window: each version's latest counted outcomes
METRICS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "calibration_intercept",
    "calibration_slope",
    "observed_rate",
    "mean_predicted",
    "ppv",
    "sensitivity",
)

Report = dict[str, Any]


def realized_metrics(
    y: np.ndarray,
    probability: np.ndarray,
    predicted: np.ndarray,
    weight: np.ndarray | None = None,
) -> dict[str, float | None]:
    """The metrics of probabilities against outcomes (weighted: expected values), None where a
    metric is undefined (no encounter; one class only for the ranking and calibration ones)."""
    if len(y) == 0:
        return dict.fromkeys(METRICS)
    w = np.ones(len(y)) if weight is None else weight
    both = len(np.unique(y[w > 0])) == 2
    flagged = predicted.astype(bool)
    true_positive = float(np.sum(w * y * flagged))
    intercept, slope = calibration(y, probability) if both and weight is None else (None, None)
    found: dict[str, float | None] = {
        "roc_auc": metrics.roc_auc_score(y, probability, sample_weight=w) if both else None,
        "pr_auc": metrics.average_precision_score(y, probability, sample_weight=w)
        if both
        else None,
        "log_loss": metrics.log_loss(y, probability, sample_weight=w, labels=[0, 1]),
        "brier": metrics.brier_score_loss(y, probability, sample_weight=w),
        "calibration_intercept": intercept,
        "calibration_slope": slope,
        "observed_rate": float(np.average(y, weights=w)),
        "mean_predicted": float(np.average(probability, weights=w)),
        "ppv": true_positive / float(np.sum(w * flagged)) if flagged.any() else None,
        "sensitivity": true_positive / float(np.sum(w * y)) if np.sum(w * y) else None,
    }
    return {k: finite(v) for k, v in found.items()}


def calibration(y: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    """Calibration intercept (in the large) and slope, fitted as the model card and the
    promotion gate fit them (readmission.calibration); 0 and 1 when perfectly calibrated."""
    return calibration_intercept(y, probability), calibration_slope(y, probability)


def estimate(probability: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """Expected metrics of encounters without outcomes, from their probabilities alone (CBPE):
    valid as far as the model is calibrated, which the realized calibration shows."""
    n = len(probability)
    y = np.r_[np.ones(n), np.zeros(n)]
    weight = np.r_[probability, 1 - probability]
    twice = np.r_[probability, probability]
    expected = realized_metrics(y, twice, np.r_[predicted, predicted], weight)
    return {k: v for k, v in expected.items() if not k.startswith("calibration")}


# Why an outcome is left out of the realized figures (an honest one is of an encounter the model
# had never seen: not already in the warehouse when scored, not trained on since by the lineage).
KNOWN_AT_SCORING = "known_at_scoring"  # its row was ingested before it was scored
TRAINED_ON = "trained_on"  # the lineage had trained on its batch before it was scored
EXCLUSIONS = (KNOWN_AT_SCORING, TRAINED_ON)
# A version trained later does not taint an earlier prediction: the logged probability was fixed
# when scored, by a version that (warm-started from its ancestors) had not seen the encounter.


def predictions(url: str, model_name: str) -> pd.DataFrame:
    """The logged predictions of `model_name`, each (version, encounter) once: the latest; with
    `excluded`, why a labelled one does not count (None: it counts)."""
    clean = clean_encounters
    columns = [
        log_table.c.id,
        log_table.c.encounter_id,
        log_table.c.patient_nbr,
        log_table.c.model_version,
        log_table.c.probability,
        log_table.c.threshold,
        log_table.c.predicted_label,
        log_table.c.scored_at,
        log_table.c.outcome,
        log_table.c.labelled_at,
        log_table.c.shadow_version,
        log_table.c.shadow_probability,
        log_table.c.shadow_threshold,
        batches.c.ingested_at.label("arrived_at"),
        trainings.c.trained_at,
    ]
    joined = (
        log_table.outerjoin(clean, clean.c.encounter_id == log_table.c.encounter_id)
        .outerjoin(batches, batches.c.batch_id == clean.c.batch_id)
        .outerjoin(
            trainings,
            sa.and_(trainings.c.model_name == model_name, trainings.c.batch_id == clean.c.batch_id),
        )
    )
    query = (
        sa.select(*columns)
        .select_from(joined)
        .where(log_table.c.model_name == model_name)
        .order_by(log_table.c.id)
    )
    with engine_for(url).connect() as conn:
        frame = _with_shadows(pd.read_sql(query, conn))
    for column in ("scored_at", "labelled_at", "arrived_at", "trained_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)  # SQLite: naive UTC; PG: aware
    labelled = frame["outcome"].notna()
    trained = labelled & (frame["trained_at"] <= frame["scored_at"])
    frame["excluded"] = None
    frame.loc[trained, "excluded"] = TRAINED_ON
    frame.loc[labelled & ~trained & (frame["arrived_at"] <= frame["scored_at"]), "excluded"] = (
        KNOWN_AT_SCORING
    )
    identified = frame[frame["encounter_id"].notna()]
    latest = identified.drop_duplicates(["model_version", "encounter_id"], keep="last")
    return pd.concat([latest, frame[frame["encounter_id"].isna()]]).sort_values("id")


def _with_shadows(logged: pd.DataFrame) -> pd.DataFrame:
    """One row per score: each logged row as production's (the answer), and its shadow's
    score, if one was scored, as a row of the shadow version (role SHADOW, same id)."""
    shadow_columns = ["shadow_version", "shadow_probability", "shadow_threshold"]
    shadowed = logged[logged["shadow_version"].notna()].copy()
    if shadowed.empty:
        return logged.drop(columns=shadow_columns).assign(role=prediction_log.PRODUCTION)
    shadowed["model_version"] = shadowed["shadow_version"]
    shadowed["probability"] = shadowed["shadow_probability"]
    shadowed["threshold"] = shadowed["shadow_threshold"]
    shadowed["predicted_label"] = shadowed["probability"] >= shadowed["threshold"]
    both = pd.concat(
        [
            logged.assign(role=prediction_log.PRODUCTION),
            shadowed.assign(role=prediction_log.SHADOW),
        ],
        ignore_index=True,
    )
    return both.drop(columns=shadow_columns).sort_values("id", kind="stable")


def summarise(rows: pd.DataFrame) -> Report:
    """Counts, realized metrics on the labelled rows and the estimate for the pending ones."""
    identified = rows["encounter_id"].notna()
    labelled = rows[rows["outcome"].notna() & rows["excluded"].isna()]
    pending = rows[identified & rows["outcome"].isna()]
    y = (labelled["outcome"] == POSITIVE_LABEL).to_numpy(dtype=int)
    return {
        "scored": len(rows),
        "n": len(labelled),
        "pending": len(pending),
        "unidentified": int((~identified).sum()),
        "excluded": {reason: int((rows["excluded"] == reason).sum()) for reason in EXCLUSIONS},
        **realized_metrics(
            y,
            labelled["probability"].to_numpy(),
            labelled["predicted_label"].to_numpy(dtype=bool),
        ),
        "estimate": {
            "n": len(pending),
            **estimate(
                pending["probability"].to_numpy(), pending["predicted_label"].to_numpy(dtype=bool)
            ),
        },
    }


def _patients(rows: pd.DataFrame) -> np.ndarray:
    """The bootstrap's clusters: without a patient number, an encounter is its own patient."""
    return (
        rows["patient_nbr"]
        .astype("string")
        .fillna("encounter " + rows["encounter_id"].astype("Int64").astype("string"))
        .to_numpy()
    )


def comparisons(rows: pd.DataFrame, resamples: int) -> list[Report]:
    """Each shadow version against the production version it was scored beside, on the same
    encounters: those whose two logged scores both count (honest outcomes, as in `summarise`).
    `delta_roc_auc` is shadow minus production, its interval a paired patient-level bootstrap
    (the gate's, readmission.uncertainty); null with one class only among the pairs."""
    counted = rows[rows["outcome"].notna() & rows["excluded"].isna()]
    shadow = counted[counted["role"] == prediction_log.SHADOW]
    production = counted[counted["role"] == prediction_log.PRODUCTION]
    pairs = shadow.merge(
        production[["encounter_id", "model_version", "probability"]],
        on="encounter_id",
        suffixes=("_shadow", "_production"),
    )
    found = []
    for (served, shadowed), paired in pairs.groupby(
        ["model_version_production", "model_version_shadow"]
    ):
        y = (paired["outcome"] == POSITIVE_LABEL).to_numpy(dtype=int)
        comparison: Report = {
            "production": str(served),
            "shadow": str(shadowed),
            "n": len(paired),
            "delta_roc_auc": None,
            "delta_roc_auc_ci": None,
        }
        if len(np.unique(y)) == 2:
            difference = paired_bootstrap_auc_difference(
                y,
                paired["probability_shadow"].to_numpy(),
                paired["probability_production"].to_numpy(),
                _patients(paired),
                resamples,
            )
            comparison.update(delta_roc_auc=difference.delta, delta_roc_auc_ci=difference.as_list())
        found.append(comparison)
    return sorted(found, key=lambda c: (_order(c["production"]), _order(c["shadow"])))


def recent(rows: pd.DataFrame) -> Report:
    """The ROC AUC of a version's latest RECENT_OUTCOMES counted outcomes (by time of scoring),
    with a patient-level bootstrap interval: what the realized alert reads, so that an old
    version's fixed figure and a handful of outcomes page nobody."""
    counted = rows[rows["outcome"].notna() & rows["excluded"].isna()]
    window = counted.sort_values("scored_at", kind="stable").tail(RECENT_OUTCOMES)
    y = (window["outcome"] == POSITIVE_LABEL).to_numpy(dtype=int)
    found: Report = {"n": len(window), "roc_auc": None, "roc_auc_ci": None}
    if len(window):
        found["first_scored_at"] = window["scored_at"].min().isoformat()
    if len(np.unique(y)) == 2:
        interval = cluster_bootstrap_auc(y, window["probability"].to_numpy(), _patients(window))
        found.update(roc_auc=interval.roc_auc, roc_auc_ci=interval.as_list())
    return found


def compute(settings: Settings) -> Report:
    """Join the outcomes that arrived, compute the realized performance, store it, log it to
    MLflow; return the report (its `versions` oldest first)."""
    url = settings.warehouse_url
    joined = prediction_log.join_outcomes(url)
    rows = predictions(url, settings.model_name)
    earlier = stored_reports(url, settings.model_name, CHECKED_REPORTS)
    holdout = _holdout_aucs(settings) if len(rows) else {}
    computed_at = datetime.now(UTC)
    versions = []
    for version, scored in sorted(rows.groupby("model_version"), key=lambda g: _order(g[0])):
        week = scored["scored_at"].dt.tz_convert(None).dt.to_period("W-SUN").dt.start_time
        versions.append(
            {
                "version": str(version),
                # How its latest prediction was served: 'production' (answered) or 'shadow'.
                "role": str(scored["role"].iloc[-1]),
                **summarise(scored),
                "threshold": float(scored["threshold"].iloc[-1]),
                "holdout_roc_auc": holdout.get(str(version)),
                "first_scored_at": scored["scored_at"].min().isoformat(),
                "last_scored_at": scored["scored_at"].max().isoformat(),
                "estimate_checks": _estimate_checks(str(version), scored, earlier),
                "recent": recent(scored),
                "weeks": [
                    {"week": start.date().isoformat(), **summarise(in_week)}
                    for start, in_week in scored.groupby(week)
                ],
            }
        )
    report: Report = {
        "model_name": settings.model_name,
        "computed_at": computed_at.isoformat(),
        "outcomes_joined": joined,
        "versions": versions,
        "comparisons": comparisons(rows, settings.bootstrap_resamples) if len(rows) else [],
    }
    report["last_prediction_id"] = int(rows["id"].max()) if len(rows) else 0
    with transaction(url) as conn:
        report["report_id"] = conn.execute(
            performance_reports.insert()
            .values(
                model_name=settings.model_name,
                computed_at=computed_at,
                last_prediction_id=report["last_prediction_id"],
                report=json.dumps(report),
            )
            .returning(performance_reports.c.id)
        ).scalar_one()
    if versions:
        log_to_mlflow(settings, report)
    return report


def _estimate_checks(version: str, rows: pd.DataFrame, earlier: list[Report]) -> list[Report]:
    """Each earlier estimate of this version against the outcomes its window has received since:
    the window is what was scored before that report and had no outcome then."""
    checks = []
    for past in earlier:
        estimated = next((v["estimate"] for v in past["versions"] if v["version"] == version), None)
        if not estimated or not estimated["n"]:
            continue
        at = pd.Timestamp(past["computed_at"])
        window = rows[
            (rows["id"] <= past["last_prediction_id"])
            & rows["encounter_id"].notna()
            & (rows["labelled_at"].isna() | (rows["labelled_at"] > at))
        ]
        arrived = window[window["outcome"].notna() & window["excluded"].isna()]
        if arrived.empty:
            continue
        y = (arrived["outcome"] == POSITIVE_LABEL).to_numpy(dtype=int)
        realized = realized_metrics(
            y, arrived["probability"].to_numpy(), arrived["predicted_label"].to_numpy(dtype=bool)
        )
        checks.append(
            {
                "estimated_at": past["computed_at"],
                "window": len(window),
                "labelled": len(arrived),
                "estimated_roc_auc": estimated["roc_auc"],
                "realized_roc_auc": realized["roc_auc"],
                "roc_auc_gap": _difference(realized["roc_auc"], estimated["roc_auc"]),
                "estimated_observed_rate": estimated["observed_rate"],
                "realized_observed_rate": realized["observed_rate"],
            }
        )
    return checks


def stored_reports(url: str, model_name: str, limit: int) -> list[Report]:
    """The latest `limit` stored reports of `model_name`, newest first."""
    query = (
        sa.select(performance_reports.c.id, performance_reports.c.report)
        .where(performance_reports.c.model_name == model_name)
        .order_by(performance_reports.c.id.desc())
        .limit(limit)
    )
    with engine_for(url).connect() as conn:
        found = conn.execute(query).all()
    return [{**json.loads(report), "report_id": id_} for id_, report in found]


def latest(url: str, model_name: str) -> Report | None:
    """The last stored report of `model_name`, or None before the first computation."""
    found = stored_reports(url, model_name, 1)
    return found[0] if found else None


def log_to_mlflow(settings: Settings, report: Report) -> None:
    """One run per version (tagged, found again next time), a metric step per report; the
    version in the registry gets its latest realized figures as tags."""
    client = registry.connect(settings)
    experiment = registry.experiment_id(settings)
    timestamp = int(datetime.fromisoformat(report["computed_at"]).timestamp() * 1000)
    step = int(report["report_id"])
    for version in report["versions"]:
        run_id = _run_for(client, settings, experiment, version["version"])
        figures = {
            "labelled": version["n"],
            "pending": version["pending"],
            "scored": version["scored"],
            **{f"realized_{k}": version[k] for k in METRICS},
            **{f"estimated_{k}": v for k, v in version["estimate"].items() if k != "n"},
        }
        if version["estimate_checks"]:
            figures["estimate_roc_auc_gap"] = version["estimate_checks"][0]["roc_auc_gap"]
        client.log_batch(
            run_id,
            metrics=[
                Metric(key, float(value), timestamp, step)
                for key, value in figures.items()
                if value is not None
            ],
        )
        try:
            for key in ("n", "roc_auc"):
                client.set_model_version_tag(
                    settings.model_name,
                    version["version"],
                    f"realized_{key}",
                    "none" if version[key] is None else f"{version[key]:.6g}",
                )
        except MlflowException as error:  # a version deleted since it served: report anyway
            log.warning("version %s: realized figures not tagged: %s", version["version"], error)


def _run_for(client: MlflowClient, settings: Settings, experiment: str, version: str) -> str:
    found = client.search_runs(
        [experiment],
        f"tags.`{RUN_KIND_TAG}` = '{RUN_KIND}' and tags.model_name = '{settings.model_name}' "
        f"and tags.model_version = '{version}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment,
        run_name=f"realized-performance-v{version}",
        tags={RUN_KIND_TAG: RUN_KIND, "model_name": settings.model_name, "model_version": version},
    )
    client.set_terminated(run.info.run_id)  # a record, not a job: metrics are added to it later
    return run.info.run_id


def _holdout_aucs(settings: Settings) -> dict[str, float | None]:
    return {
        str(v.version): finite(v.metrics.get("holdout_roc_auc"))
        for v in registry_reader.version_summaries(settings)
    }


def _order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (10**9, version)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def as_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per version: what the CLI table and the UI show."""
    return [
        {
            "version": v["version"],
            "role": v.get("role", prediction_log.PRODUCTION),  # reports before roles: production
            "scored": v["scored"],
            "labelled": v["n"],
            "pending": v["pending"],
            "realized_roc_auc": v["roc_auc"],
            "holdout_roc_auc": v["holdout_roc_auc"],
            "estimated_roc_auc": v["estimate"]["roc_auc"],
            "calibration_slope": v["calibration_slope"],
            "observed_rate": v["observed_rate"],
            "mean_predicted": v["mean_predicted"],
            "ppv": v["ppv"],
            "sensitivity": v["sensitivity"],
        }
        for v in report["versions"]
    ]
