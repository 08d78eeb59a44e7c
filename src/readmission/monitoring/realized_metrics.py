"""The realized figures of served versions, from the prediction log: which logged predictions
count (each (version, encounter) once; an encounter the model could have seen when it scored it
is left out, by reason), the realized metrics of those whose outcome arrived, a label-free
estimate for those still pending, shadow-against-production comparisons on the same encounters,
and each version's recent window. readmission.monitoring.realized stores and publishes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn import metrics

from readmission.data.database import engine_for
from readmission.data.tables import batches, clean_encounters, trainings
from readmission.data.tables import prediction_log_table as log_table
from readmission.evaluation.calibration import (
    calibration_intercept,
    calibration_slope,
)
from readmission.evaluation.uncertainty import (
    cluster_bootstrap_auc,
    paired_bootstrap_auc_difference,
)
from readmission.json_numbers import finite
from readmission.monitoring import prediction_log
from readmission.schema import POSITIVE_LABEL

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
    promotion gate fit them (readmission.evaluation.calibration); 0 and 1 when perfectly
    calibrated."""
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
    (the gate's, readmission.evaluation.uncertainty); null with one class only among the pairs."""
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
    return sorted(found, key=lambda c: (version_order(c["production"]), version_order(c["shadow"])))


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


def version_order(version: str) -> tuple[int, str]:
    """Sort key of version numbers: numerically, any other name after them."""
    return (int(version), "") if version.isdigit() else (10**9, version)
