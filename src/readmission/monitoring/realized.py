"""Realized performance: how each served model version did on the encounters it actually scored.

The prediction log (readmission.monitoring.prediction_log) is joined to the outcomes the warehouse
holds. For each served version, and each calendar week of scoring, the labelled encounters give the
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

import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from readmission import registry, registry_reader
from readmission.config import Settings
from readmission.data.database import engine_for, transaction
from readmission.data.tables import performance_reports
from readmission.json_numbers import finite
from readmission.monitoring import prediction_log
from readmission.monitoring.realized_metrics import (
    METRICS,
    Report,
    comparisons,
    predictions,
    realized_metrics,
    recent,
    summarise,
    version_order,
)
from readmission.schema import POSITIVE_LABEL

log = logging.getLogger(__name__)
RUN_KIND_TAG = "readmission.kind"
RUN_KIND = "realized_performance"
CHECKED_REPORTS = 10  # earlier estimates compared with the outcomes that arrived since


# A version trained later does not taint an earlier prediction: the logged probability was fixed
# when scored, by a version that (warm-started from its ancestors) had not seen the encounter.


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
    for version, scored in sorted(rows.groupby("model_version"), key=lambda g: version_order(g[0])):
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
