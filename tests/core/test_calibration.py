"""Logistic recalibration, ECE and Brier on outcomes drawn from known probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from readmission.evaluation import calibration
from readmission.monitoring import realized_metrics


def outcomes(intercept: float, slope: float, rows: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    """Predictions p, and outcomes whose true log-odds are intercept + slope * logit(p)."""
    rng = np.random.default_rng(2)
    predicted = 1 / (1 + np.exp(-rng.normal(-2.0, 1.0, rows)))
    true_logit = intercept + slope * calibration.logit(predicted)
    return (rng.random(rows) < 1 / (1 + np.exp(-true_logit))).astype(int), predicted


def test_a_calibrated_model_has_slope_one_intercept_zero_and_a_small_ece() -> None:
    y, p = outcomes(intercept=0.0, slope=1.0)
    found = calibration.assess(y, p)

    assert found.slope == pytest.approx(1.0, abs=0.05)
    assert found.intercept == pytest.approx(0.0, abs=0.04)
    assert found.ece < 0.01
    assert found.brier == pytest.approx(np.mean((p - y) ** 2))


def test_over_confident_predictions_show_as_a_slope_below_one() -> None:
    y, p = outcomes(intercept=0.0, slope=0.6)
    assert calibration.calibration_slope(y, p) == pytest.approx(0.6, abs=0.05)


def test_systematic_under_prediction_shows_as_a_positive_intercept() -> None:
    y, p = outcomes(intercept=0.5, slope=1.0)
    found = calibration.assess(y, p)

    assert found.intercept == pytest.approx(0.5, abs=0.05)
    assert found.observed_rate > found.mean_predicted
    assert found.ece > 0.02


def test_the_curve_has_equal_count_bins_covering_every_row() -> None:
    y, p = outcomes(0.0, 1.0, rows=1003)
    curve = calibration.assess(y, p).curve

    assert len(curve) == calibration.CURVE_BINS
    assert sum(point.n for point in curve) == 1003
    assert [point.mean_predicted for point in curve] == sorted(
        point.mean_predicted for point in curve
    )


def test_realized_performance_fits_calibration_with_the_same_implementation() -> None:
    """One fit for the card, the gate and the realized performance: the same numbers on the
    same input, including the extreme one where two fits once disagreed (.533 vs .497)."""
    rng = np.random.default_rng(4)
    predicted = np.clip(rng.beta(0.5, 2.0, 20_000), 1e-9, 1 - 1e-9)
    y = (rng.random(len(predicted)) < 1 / (1 + np.exp(-0.5 * calibration.logit(predicted)))).astype(
        float
    )

    card = calibration.assess(y, predicted)
    assert realized_metrics.calibration(y, predicted) == (card.intercept, card.slope)
    assert card.slope == pytest.approx(0.5, abs=0.05)
