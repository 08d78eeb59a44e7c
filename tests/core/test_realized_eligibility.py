"""Honest realized performance: an outcome counts only for an encounter the model could not have
seen when it scored it, neither trained on by the lineage nor in the warehouse with its outcome;
the report says how many were left out, and why. Real PostgreSQL, MLflow server and training."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from readmission import extracts, training
from readmission.config import Settings
from readmission.data import database, tables, warehouse
from readmission.monitoring import realized, realized_metrics
from readmission.monitoring.prediction_log import LoggedPrediction, PredictionLogWriter
from readmission.schema import POSITIVE_LABEL, TARGET

pytestmark = pytest.mark.slow


def log_now(settings: Settings, rows: pd.DataFrame, version: str) -> np.ndarray:
    """A prediction of `version` for each row, scored now, informative about its outcome."""
    y = (rows[TARGET] == POSITIVE_LABEL).to_numpy()
    rng = np.random.default_rng(int(version))
    probability = np.clip(0.1 + 0.25 * y + rng.normal(0, 0.15, len(rows)), 0.01, 0.99)
    writer = PredictionLogWriter(settings.warehouse_url, capacity=len(rows))
    now = datetime.now(UTC)
    writer.enqueue(
        LoggedPrediction(
            int(e), int(p), settings.model_name, version, float(q), 0.3, q >= 0.3, "low", now
        )
        for e, p, q in zip(rows["encounter_id"], rows["patient_nbr"], probability, strict=True)
    )
    writer.stop()
    asyncio.run(writer.run())
    return probability


def test_outcomes_known_at_scoring_or_trained_on_are_left_out_and_counted(
    platform: Settings, sample: pd.DataFrame, tmp_path: Path
) -> None:
    extract = sample.sort_values("encounter_id", key=lambda ids: ids.astype(int)).iloc[:1200]
    extract = extract.assign(encounter_id=extract["encounter_id"].astype(int))
    path = tmp_path / "extract.csv"
    extract.to_csv(path, index=False)
    unseen = log_now(platform, extract, "1")  # scored before the extract arrives
    extracts.ingest(platform, source=str(path))
    (trained,) = training.train_pending(platform, max_batches=1)  # the lineage learns batch 1
    trained_ids = set(warehouse.clean_rows(platform.warehouse_url, 1)["encounter_id"].astype(int))
    rescored = extract.iloc[:300]
    log_now(platform, rescored, "2")  # scored again once the outcomes are in the warehouse

    report = realized.compute(platform)

    first, second = report["versions"]
    clean = tables.clean_encounters
    with database.engine_for(platform.warehouse_url).connect() as conn:
        stored = set(pd.read_sql(clean.select(), conn)["encounter_id"].astype(int))
    # Version 1 scored them before their outcomes arrived, and before batch 1 was trained on:
    # a version trained since does not taint a prediction made before it.
    counted = extract["encounter_id"].isin(stored).to_numpy()
    assert 0 < len(trained_ids) < counted.sum()
    assert first["excluded"] == {"known_at_scoring": 0, "trained_on": 0}
    assert first["n"] == counted.sum()
    y = extract[TARGET] == POSITIVE_LABEL
    assert first["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(y[counted], unseen[counted]), abs=1e-12
    )
    # Re-scored once in the warehouse: trained on (batch 1) or known with their outcome (the rest).
    ids = set(rescored["encounter_id"])
    assert second["excluded"] == {
        "known_at_scoring": len((ids & stored) - trained_ids),
        "trained_on": len(ids & trained_ids),
    }
    assert len(ids & trained_ids) > 0 and len((ids & stored) - trained_ids) > 0
    assert second["n"] == 0 and second["roc_auc"] is None
    assert sum(w["excluded"]["trained_on"] for w in second["weeks"]) == len(ids & trained_ids)
    # The alert's window: the latest 1,000 counted outcomes (all scored at once: the last
    # logged), with a patient-level interval.
    assert counted.all() and realized_metrics.RECENT_OUTCOMES == 1000
    assert first["recent"]["n"] == 1000
    latest = first["recent"]["roc_auc"]
    assert latest == pytest.approx(metrics.roc_auc_score(y[200:], unseen[200:]), abs=1e-12)
    low, high = first["recent"]["roc_auc_ci"]
    assert low < latest < high
    assert second["recent"] == {"n": 0, "roc_auc": None, "roc_auc_ci": None}
    assert trained.version == "1"
