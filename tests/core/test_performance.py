"""Realized performance from the prediction log, on a real PostgreSQL warehouse and MLflow server:
outcomes join as extracts arrive, the figures are scikit-learn's on the joined rows, the estimate
for the pending encounters is recorded and later compared with what was realized."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from readmission import extracts, registry
from readmission.config import Settings
from readmission.monitoring import realized, realized_metrics
from readmission.monitoring.prediction_log import LoggedPrediction, PredictionLogWriter
from readmission.schema import POSITIVE_LABEL, TARGET

THRESHOLD = 0.3


def log_predictions(settings: Settings, rows: pd.DataFrame, version: str, seed: int) -> np.ndarray:
    """Log a prediction of `version` for each row, informative about its outcome; the
    probabilities, in row order. Half were scored a week earlier."""
    y = (rows[TARGET] == POSITIVE_LABEL).to_numpy()
    rng = np.random.default_rng(seed)
    probability = np.clip(0.1 + 0.25 * y + rng.normal(0, 0.15, len(rows)), 0.01, 0.99)
    now = datetime.now(UTC)
    writer = PredictionLogWriter(settings.warehouse_url, capacity=len(rows))
    writer.enqueue(
        LoggedPrediction(
            int(encounter),
            int(patient),
            settings.model_name,
            version,
            float(p),
            THRESHOLD,
            bool(p >= THRESHOLD),
            "high" if p >= THRESHOLD else "low",
            now - timedelta(days=7 * (i % 2)),
        )
        for i, (encounter, patient, p) in enumerate(
            zip(rows["encounter_id"], rows["patient_nbr"], probability, strict=True)
        )
    )
    writer.stop()  # run() then writes what is buffered and returns
    asyncio.run(writer.run())
    assert writer.written == len(rows)
    return probability


def expected_auc(rows: pd.DataFrame, probability: np.ndarray) -> float:
    return metrics.roc_auc_score(rows[TARGET] == POSITIVE_LABEL, probability)


@pytest.mark.slow
def test_outcomes_arriving_in_two_extracts_update_the_realized_figures_and_check_the_estimate(
    platform: Settings, sample: pd.DataFrame, tmp_path: Path
) -> None:
    ordered = sample.sort_values("encounter_id", key=lambda ids: ids.astype(int))
    # The first extract holds the oldest and the newest encounters (so the holdout starts above
    # the rest); the encounters in between are scored, and their outcomes come in two extracts.
    parts = [pd.concat([ordered.iloc[:1000], ordered.iloc[1800:]]), ordered.iloc[1000:1400]]
    parts.append(ordered.iloc[1400:1800])
    paths = []
    for number, extract in enumerate(parts):
        paths.append(tmp_path / f"extract-{number}.csv")
        extract.to_csv(paths[-1], index=False)
    extracts.ingest(platform, source=str(paths[0]))
    scored = ordered.iloc[1000:1800]
    probability = log_predictions(platform, scored, "1", seed=1)

    waiting = realized.compute(platform)
    extracts.ingest(platform, source=str(paths[1]))
    half = realized.compute(platform)
    extracts.ingest(platform, source=str(paths[2]))
    full = realized.compute(platform)

    (pending,) = waiting["versions"]
    assert (pending["scored"], pending["n"], pending["pending"]) == (800, 0, 800)
    assert pending["roc_auc"] is None and pending["estimate"]["n"] == 800
    weights = np.r_[probability, 1 - probability]
    labels, doubled = np.r_[np.ones(800), np.zeros(800)], np.r_[probability, probability]
    assert pending["estimate"]["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(labels, doubled, sample_weight=weights)
    )
    assert pending["estimate"]["observed_rate"] == pytest.approx(probability.mean())

    first = scored["encounter_id"].isin(parts[1]["encounter_id"]).to_numpy()
    (partial,) = half["versions"]
    assert (partial["n"], partial["pending"]) == (400, 400)
    assert partial["roc_auc"] == pytest.approx(
        expected_auc(scored[first], probability[first]), abs=1e-12
    )
    (check,) = partial["estimate_checks"]
    assert (check["window"], check["labelled"]) == (800, 400)
    assert check["estimated_roc_auc"] == pending["estimate"]["roc_auc"]
    assert check["roc_auc_gap"] == pytest.approx(partial["roc_auc"] - check["estimated_roc_auc"])

    (complete,) = full["versions"]
    assert (complete["n"], complete["pending"]) == (800, 0)
    assert complete["roc_auc"] == pytest.approx(expected_auc(scored, probability), abs=1e-12)
    y = (scored[TARGET] == POSITIVE_LABEL).to_numpy()
    flagged = probability >= THRESHOLD
    assert complete["ppv"] == pytest.approx(y[flagged].mean())
    assert complete["sensitivity"] == pytest.approx(flagged[y].mean())
    assert complete["brier"] == pytest.approx(metrics.brier_score_loss(y, probability))
    assert [w["n"] for w in complete["weeks"]] == [400, 400]
    assert [c["labelled"] for c in complete["estimate_checks"]] == [400, 800]

    assert realized.latest(platform.warehouse_url, platform.model_name) == full
    client = registry.connect(platform)
    (run,) = client.search_runs(
        [registry.experiment_id(platform)],
        f"tags.`{realized.RUN_KIND_TAG}` = '{realized.RUN_KIND}' "
        f"and tags.model_name = '{platform.model_name}'",
        max_results=5,
    )
    history = client.get_metric_history(run.info.run_id, "realized_roc_auc")
    assert [m.value for m in history] == pytest.approx([partial["roc_auc"], complete["roc_auc"]])


def test_realized_calibration_is_zero_and_one_for_calibrated_probabilities() -> None:
    rng = np.random.default_rng(5)
    probability = rng.uniform(0.02, 0.6, 200_000)
    y = (rng.uniform(size=len(probability)) < probability).astype(int)
    intercept, slope = realized_metrics.calibration(y, probability)
    assert intercept == pytest.approx(0, abs=0.02)
    assert slope == pytest.approx(1, abs=0.03)
    shifted, _ = realized_metrics.calibration(y, probability / 2)  # predicted half the true risk
    assert shifted > 0.5
